//! One SIP call, incoming or outbound: a task that carries the scenario's
//! actions out as signalling and media, and turns what the far end does into
//! the call's events.

use std::sync::Arc;

use rsipstack::dialog::DialogId;
use rsipstack::dialog::dialog::{
    DialogState, DialogStateReceiver, TerminatedReason, TransactionHandle,
};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invitation::InviteAsyncResult;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{HasHeaders, Header, Request, StatusCode};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::media::{Rtp, RtpSender};
use super::outbound::Rules;
use super::prompt::{self, Samples};
use super::sdp::{self, Codec, MediaDirection, RemoteAudio, TELEPHONE_EVENT};
use super::speech;
use super::stream::MediaStream;
use sessionbox_host::recording::Recorder;
use sessionbox_host::telephony::{CallAction, CallContext, CallLink, MediaPort};

/// The session's side of a SIP call: actions go to the call's task; a
/// bridge reaches its RTP directly.
pub struct SipLink {
    actions: mpsc::UnboundedSender<CallAction>,
    rtp: RtpSender,
}

impl CallLink for SipLink {
    fn act(&self, action: CallAction) {
        // A call whose task has ended takes no more actions.
        let _ = self.actions.send(action);
    }

    fn media_port(&self) -> Option<Arc<dyn MediaPort>> {
        Some(Arc::new(self.rtp.clone()))
    }

    fn relay_to(&self, port: Option<Arc<dyn MediaPort>>) {
        self.rtp.relay_to(port);
    }

    fn record(&self, recorder: Option<Arc<Recorder>>) {
        self.rtp.record(recorder);
    }
}

/// Which way the call goes, and what that leaves to wait for.
pub enum Direction {
    /// The caller's SDP offer, or why it cannot be answered.
    Incoming(Result<RemoteAudio, String>),
    /// An INVITE without SDP (a late offer): our offer goes in the 200, and
    /// the caller's answer comes in its ACK.
    IncomingWithoutOffer,
    /// Our INVITE, until its final response.
    Outbound(JoinHandle<InviteAsyncResult>),
}

/// A call's dialog and media, waiting for the session that takes it.
pub struct SipCall {
    pub dialog: InviteDialog,
    pub layer: Arc<DialogLayer>,
    pub states: DialogStateReceiver,
    pub rtp: Rtp,
    pub direction: Direction,
}

/// What a call plays: a WAV file, or speech.
enum Prompt {
    File(String),
    Speech {
        text: String,
        language: Option<String>,
    },
}

/// Whether the call's task goes on after something happened.
enum Next {
    Continue,
    End,
}

struct Running {
    dialog: InviteDialog,
    layer: Arc<DialogLayer>,
    context: CallContext,
    rtp: Rtp,
    incoming: bool,
    /// Why an incoming call's offer cannot be answered.
    unanswerable: Option<String>,
    /// We sent 200 OK to an incoming call.
    answered: bool,
    connected: bool,
    playback: Option<JoinHandle<()>>,
    /// The call's audio stream, while it runs.
    stream: Option<MediaStream>,
    /// Ids the dialog had (an outbound one changes when answered).
    ids: Vec<DialogId>,
}

impl SipCall {
    /// Starts the call's task, reporting through `context`; the link is the
    /// session's handle on it.
    pub fn start(self, context: CallContext) -> SipLink {
        let (actions, actions_rx) = mpsc::unbounded_channel();
        let rtp = self.rtp.sender();
        tokio::spawn(self.run(context, actions_rx));
        SipLink { actions, rtp }
    }

    async fn run(self, context: CallContext, mut actions: mpsc::UnboundedReceiver<CallAction>) {
        let SipCall {
            dialog,
            layer,
            mut states,
            rtp,
            direction,
        } = self;
        let (incoming, remote, unanswerable, mut invite) = match direction {
            Direction::Incoming(Ok(offer)) => (true, Some(offer), None, None),
            Direction::Incoming(Err(reason)) => (true, None, Some(reason), None),
            Direction::IncomingWithoutOffer => (true, None, None, None),
            Direction::Outbound(invite) => (false, None, None, Some(invite)),
        };
        // Where the far end takes audio, once known, is the sender's to
        // keep (`Running::remote`).
        rtp.sender().set_remote(remote);
        let mut call = Running {
            ids: vec![dialog.id()],
            dialog,
            layer,
            context,
            rtp,
            incoming,
            unanswerable,
            answered: false,
            connected: false,
            playback: None,
            stream: None,
        };
        loop {
            let answered = async {
                match invite.as_mut() {
                    Some(invite) => invite.await,
                    None => std::future::pending().await,
                }
            };
            let next = tokio::select! {
                state = states.recv() => match state {
                    Some(state) => call.on_state(state, invite.is_some()).await,
                    None => Next::End,
                },
                action = actions.recv() => match action {
                    Some(action) => call.on_action(action).await,
                    // The session is gone (ended, or failed): so is its call.
                    None => {
                        call.abandon().await;
                        Next::End
                    }
                },
                outcome = answered => {
                    invite = None;
                    call.on_final_response(outcome)
                }
            };
            if let Next::End = next {
                break;
            }
        }
        call.finish();
    }
}

impl Running {
    async fn on_state(&mut self, state: DialogState, awaiting_answer: bool) -> Next {
        match state {
            DialogState::Confirmed(id, response) => {
                self.ids.push(id);
                if self.remote().is_none() && !self.incoming {
                    self.agree(sdp::parse(response.body()).ok());
                } else if self.remote().is_none() {
                    // A late offer: the caller answered ours in its ACK.
                    let ack = self.dialog.last_remote_ack();
                    match sdp::parse(ack.as_ref().map_or(&[][..], |ack| ack.body())) {
                        Ok(answer) => self.agree(Some(answer)),
                        Err(reason) => {
                            // RFC 3261: a session whose offer went unanswered
                            // is ended with a BYE.
                            self.context.note(&format!(
                                "the caller's ACK answered our offer with no usable SDP ({reason}): \
                                 hanging up"
                            ));
                            let _ = self.dialog.bye().await;
                            self.context.disconnected();
                            return Next::End;
                        }
                    }
                }
                self.connect();
                Next::Continue
            }
            DialogState::Terminated(id, reason) => {
                self.ids.push(id);
                if self.connected {
                    self.context.disconnected();
                } else if self.incoming {
                    match reason {
                        // VoxEngine reports an incoming call its caller
                        // gave up on as disconnected.
                        TerminatedReason::UacCancel | TerminatedReason::UacBye => {
                            self.context.disconnected()
                        }
                        TerminatedReason::Timeout => self
                            .context
                            .failed(408, "the caller did not acknowledge the answer"),
                        _ => {}
                    }
                } else if awaiting_answer {
                    // The INVITE's final response says how it ended.
                    return Next::Continue;
                }
                Next::End
            }
            DialogState::Info(_, request, handle) => {
                self.on_message(&request, handle).await;
                Next::Continue
            }
            DialogState::Message(_, request, handle) => {
                self.on_message(&request, handle).await;
                Next::Continue
            }
            DialogState::Options(_, _, handle) => {
                let _ = handle.reply(StatusCode::OK).await;
                Next::Continue
            }
            DialogState::Updated(_, request, handle) => {
                self.on_reinvite(&request, handle).await;
                Next::Continue
            }
            DialogState::Refer(_, _, handle)
            | DialogState::Notify(_, _, handle)
            | DialogState::Publish(_, _, handle) => {
                let _ = handle.reply(StatusCode::NotImplemented).await;
                Next::Continue
            }
            DialogState::Calling(_)
            | DialogState::Trying(_)
            | DialogState::Early(..)
            | DialogState::WaitAck(..) => Next::Continue,
        }
    }

    /// A re-INVITE: hold (the far end offers `sendonly` or `inactive`),
    /// resume, a codec change between PCMU and PCMA, or a refresh without
    /// an offer (answered with the media as it stands). An offer this
    /// call cannot carry is declined (488), and the media stays as agreed.
    async fn on_reinvite(&mut self, request: &Request, handle: TransactionHandle) {
        let body = request.body();
        let offer = if body.iter().all(u8::is_ascii_whitespace) {
            self.remote()
                .ok_or_else(|| "no media was agreed yet".to_owned())
        } else {
            sdp::parse(body)
        };
        let advertised = self.rtp.advertised();
        let offer = offer.and_then(|offer| {
            if offer.addr.is_ipv6() == advertised.is_ipv6() {
                Ok(offer)
            } else {
                Err(format!("its audio is at {}", offer.addr.ip()))
            }
        });
        let offer = match offer {
            Ok(offer) => offer,
            Err(reason) => {
                self.context
                    .note(&format!("a re-INVITE was declined (488): {reason}"));
                let _ = handle.reply(StatusCode::NotAcceptableHere).await;
                return;
            }
        };
        let held = offer.direction.holds();
        let answer = sdp::describe(
            advertised,
            &[offer.codec],
            TELEPHONE_EVENT,
            offer.direction.answer(),
        );
        self.agree(Some(offer));
        if held != self.rtp.sender().is_held() {
            self.rtp.sender().hold(held);
            self.context.note(if held {
                "the far end put the call on hold"
            } else {
                "the far end took the call off hold"
            });
            self.context.held(held);
        }
        let content_type = Header::ContentType("application/sdp".into());
        let _ = handle
            .respond(StatusCode::OK, Some(vec![content_type]), Some(answer))
            .await;
    }

    /// An in-call INFO or MESSAGE: a key press (DTMF relay) or a message.
    async fn on_message(&self, request: &Request, handle: TransactionHandle) {
        let limit = self.context.limits.call_message_bytes;
        if request.body().len() > limit {
            let _ = handle.reply(StatusCode::RequestEntityTooLarge).await;
            self.context.note(&format!(
                "an incoming message of {} bytes was refused: the limit is {limit}",
                request.body().len()
            ));
            return;
        }
        let _ = handle.reply(StatusCode::OK).await;
        if !self.connected {
            return;
        }
        let body = String::from_utf8_lossy(request.body());
        // A line break closing the body (as tools that write bodies line by
        // line send it) is not part of the message.
        let body = body
            .strip_suffix("\r\n")
            .or_else(|| body.strip_suffix('\n'))
            .unwrap_or(&body)
            .to_owned();
        match content_type(request).as_deref() {
            Some("application/dtmf-relay") => {
                if let Some(tone) = dtmf_relay_signal(&body) {
                    self.context.tone(tone);
                }
            }
            Some("application/dtmf") => self.context.tone(body.trim().to_owned()),
            _ => self.context.message(body),
        }
    }

    fn on_final_response(
        &mut self,
        outcome: Result<InviteAsyncResult, tokio::task::JoinError>,
    ) -> Next {
        let (code, reason) = match outcome {
            Ok(Ok((id, Some(response)))) => {
                let code = response.status_code.code();
                if (200..300).contains(&code) {
                    self.ids.push(id);
                    self.agree(sdp::parse(response.body()).ok());
                    self.connect();
                    return Next::Continue;
                }
                (code, response.status_code.text().to_owned())
            }
            Ok(Ok((_, None))) => (408, "no final response".to_owned()),
            Ok(Err(error)) => (503, error.to_string()),
            Err(error) => (500, error.to_string()),
        };
        if !self.connected {
            self.context.failed(code, reason);
        }
        Next::End
    }

    /// The far end's media as agreed (again): where prompts and relayed
    /// audio go, and in which codec.
    fn agree(&self, remote: Option<RemoteAudio>) {
        self.rtp.sender().set_remote(remote);
    }

    /// Where the far end takes audio, once known.
    fn remote(&self) -> Option<RemoteAudio> {
        self.rtp.sender().remote()
    }

    fn connect(&mut self) {
        if self.connected {
            return;
        }
        self.connected = true;
        let context = self.context.clone();
        self.rtp.listen(move |tone| context.tone(tone.to_string()));
        self.context.connected();
    }

    async fn on_action(&mut self, action: CallAction) -> Next {
        match action {
            CallAction::Answer => self.answer(),
            CallAction::Reject { code } => {
                self.end_unanswered(code).await;
                Next::End
            }
            CallAction::Hangup => {
                self.abandon().await;
                self.context.disconnected();
                Next::End
            }
            CallAction::Say { text, language } => {
                self.play(Prompt::Speech { text, language });
                Next::Continue
            }
            CallAction::Play { url } => {
                self.play(Prompt::File(url));
                Next::Continue
            }
            CallAction::StartStream {
                stream,
                url,
                parameters,
            } => {
                // The host allows one at a time; a new one replaces any.
                if let Some(mut previous) = self.stream.take() {
                    previous.stop("replaced by another stream");
                }
                let sender = self.rtp.sender();
                let context = self.context.clone();
                self.stream = Some(MediaStream::start(stream, url, parameters, sender, context));
                Next::Continue
            }
            CallAction::StopStream => {
                if let Some(stream) = &mut self.stream {
                    stream.stop("stopped by the scenario");
                }
                Next::Continue
            }
            CallAction::SendMessage { text } => {
                let dialog = self.dialog.clone();
                let context = self.context.clone();
                tokio::spawn(async move {
                    let content_type = Header::ContentType("text/plain".into());
                    let sent = dialog
                        .info(Some(vec![content_type]), Some(text.into_bytes()))
                        .await;
                    match sent {
                        Ok(Some(response)) if response.status_code.code() < 300 => {}
                        Ok(Some(response)) => context.note(&format!(
                            "the far end refused a message: {}",
                            response.status_code
                        )),
                        Ok(None) => context.note("a message was not sent: the call has ended"),
                        Err(error) => context.note(&format!("a message was not sent: {error}")),
                    }
                });
                Next::Continue
            }
        }
    }

    fn answer(&mut self) -> Next {
        // Our answer to the caller's offer, or, without one, our offer.
        let description = match (&self.remote(), &self.unanswerable) {
            (Some(remote), _) => sdp::describe(
                self.rtp.advertised(),
                &[remote.codec],
                TELEPHONE_EVENT,
                remote.direction.answer(),
            ),
            (None, None) => sdp::describe(
                self.rtp.advertised(),
                &[Codec::Pcmu, Codec::Pcma],
                TELEPHONE_EVENT,
                MediaDirection::SendRecv,
            ),
            (None, Some(reason)) => {
                let reason = reason.clone();
                let _ = self
                    .dialog
                    .reject(Some(StatusCode::NotAcceptableHere), None);
                self.context
                    .failed(488, format!("the call cannot be answered: {reason}"));
                return Next::End;
            }
        };
        let content_type = Header::ContentType("application/sdp".into());
        match self
            .dialog
            .accept(Some(vec![content_type]), Some(description))
        {
            Ok(()) => {
                self.answered = true;
                Next::Continue
            }
            Err(error) => {
                self.context
                    .failed(500, format!("answering failed: {error}"));
                Next::End
            }
        }
    }

    /// Ends a call that is not connected: an incoming one is rejected with
    /// `code`, an outbound one cancelled.
    async fn end_unanswered(&self, code: u16) {
        if self.incoming {
            let _ = self.dialog.reject(Some(StatusCode::from(code)), None);
        } else {
            let _ = self.dialog.cancel().await;
        }
    }

    /// Ends the call whatever its state, as the scenario's hangup does.
    async fn abandon(&self) {
        if self.connected || self.answered {
            let _ = self.dialog.bye().await;
        } else {
            self.end_unanswered(480).await;
        }
    }

    /// Plays a prompt, in place of any still playing; however it goes,
    /// `call-playback-finished` follows, and the log says what failed.
    fn play(&mut self, prompt: Prompt) {
        if let Some(previous) = self.playback.take() {
            previous.abort();
        }
        let context = self.context.clone();
        let sender = self.remote().is_some().then(|| self.rtp.sender());
        self.playback = Some(tokio::spawn(async move {
            let (what, samples) = match &prompt {
                Prompt::File(url) => {
                    let fetched = prompt::fetch(url, &context, Rules::App).await;
                    ("play", fetched.map(Arc::new))
                }
                Prompt::Speech { text, language } => {
                    let spoken = speech::synthesize(text, language.as_deref(), &context).await;
                    ("say", spoken)
                }
            };
            match (samples, sender) {
                (Ok(samples), Some(sender)) => sender.play(Samples::clone(&samples)).await,
                (Ok(_), None) => {
                    context.note(&format!("{what}: the far end gave no address for audio"));
                }
                (Err(error), _) => context.note(&format!("{what}: {error}")),
            }
            context.playback_finished();
        }));
    }

    fn finish(mut self) {
        if let Some(stream) = self.stream.take() {
            // It says goodbye to its server, and the scenario hears of it.
            tokio::spawn(stream.end("the call ended"));
        }
        self.rtp.sender().close();
        if let Some(playback) = self.playback {
            playback.abort();
        }
        for id in &self.ids {
            self.layer.remove_dialog(id);
        }
    }
}

/// The media type of a request's body, lower case, without parameters.
fn content_type(request: &Request) -> Option<String> {
    request.headers().iter().find_map(|header| match header {
        Header::ContentType(_) => {
            let value = header.value().split(';').next().unwrap_or_default();
            Some(value.trim().to_ascii_lowercase())
        }
        _ => None,
    })
}

/// The key in an `application/dtmf-relay` body (`Signal=5`).
fn dtmf_relay_signal(body: &str) -> Option<String> {
    body.lines().find_map(|line| {
        let (name, value) = line.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("signal")
            .then(|| value.trim().to_owned())
            .filter(|tone| !tone.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtmf_relay_bodies_name_their_key() {
        assert_eq!(
            dtmf_relay_signal("Signal=5\r\nDuration=160\r\n").as_deref(),
            Some("5")
        );
        assert_eq!(dtmf_relay_signal("signal = #\n").as_deref(), Some("#"));
        assert_eq!(dtmf_relay_signal("Duration=160\r\n"), None);
    }
}
