//! sip-probe: handles each incoming call by the number called, and logs every
//! call event as `<event> <call> [detail]`, for the SIP tests.
//!
//! - `answer`: answers; a message is sent back as `echo: <text>`, a key
//!   press as `tone: <key>`. The caller hangs up.
//! - `hangup`: answers, and hangs up once connected.
//! - `reject`: rejects with 486 Busy Here.
//! - `ring`: never answers (the caller cancels, or the no-answer limit ends
//!   the call).
//! - `play`: answers, plays the prompt named by the call's `X-Prompt`
//!   header, and hangs up when it has finished.
//! - `spin`: answers, and once connected loops until the compute limit
//!   ends the session.
//! - `stream`: answers, streams the call's audio to the WebSocket URL in
//!   `X-Prompt` (with the parameter `from`: the caller), and hangs up when
//!   the stream ends. Key presses are logged, not echoed.
//! - `bridge`: answers, dials the number in `X-Prompt`, connects the two
//!   calls when it answers, and hangs both up 800 ms later (the bridged
//!   calls of scripts/bench-sip.sh).
//! - `connect`: answers, dials `agent`, connects the two calls when it
//!   answers; when either hangs up, so does the other. Key presses are
//!   logged, not echoed.
//! - Started with custom data `dial <number>`: calls the number, and hangs
//!   up once connected.

use std::collections::{HashMap, HashSet};

use sessionbox_guest::media::StreamId;
use sessionbox_guest::{
    Call, CallAlertingEvent, CallId, Header, Refusal, Scenario, StartedEvent, TimerId, calls,
    export_scenario, log, media, timers,
};

#[derive(Default)]
struct SipProbe {
    calls: HashMap<CallId, Call>,
    /// Calls to hang up as soon as they connect.
    hang_up_when_connected: HashSet<CallId>,
    /// Calls playing a prompt (`play`) or speaking (`say`): hung up when
    /// it has finished.
    prompts: HashMap<CallId, Prompt>,
    spin_when_connected: bool,
    /// Each dialed agent's caller (`bridge`).
    bridged: HashMap<CallId, CallId>,
    /// The bridges to end when each timer fires.
    ending: HashMap<TimerId, (CallId, CallId)>,
}

/// What a call plays (or streams to) once it connects.
enum Prompt {
    Play(String),
    Say(String),
    Stream { url: String, from: String },
    /// Dials `number` and connects it; hangs both up after 800 ms when
    /// `timed`.
    Bridge { number: String, timed: bool },
}

fn report(what: &str, call: CallId, result: Result<(), Refusal>) {
    if let Err(refusal) = result {
        log(&format!("{what} {call} refused: {refusal}"));
    }
}

impl Scenario for SipProbe {
    fn started(&mut self, event: StartedEvent) {
        if let Some(number) = event.custom_data.strip_prefix("dial ") {
            match calls::dial(number) {
                Ok(call) => {
                    log(&format!("dialed {}", call.id()));
                    self.hang_up_when_connected.insert(call.id());
                    self.calls.insert(call.id(), call);
                }
                Err(refusal) => log(&format!("dial refused: {refusal}")),
            }
        }
    }

    fn call_alerting(&mut self, event: CallAlertingEvent) {
        let call = event.call;
        let id = call.id();
        log(&format!(
            "alerting {id} from={} to={} name={}",
            event.caller_id, event.destination, event.display_name
        ));
        for header in &event.headers {
            log(&format!("header {id} {}: {}", header.name, header.value));
        }
        match event.destination.as_str() {
            "answer" => report("answer", id, call.answer()),
            "hangup" => {
                self.hang_up_when_connected.insert(id);
                report("answer", id, call.answer());
            }
            "spin" => {
                self.spin_when_connected = true;
                report("answer", id, call.answer());
            }
            "reject" => report("reject", id, call.reject(486)),
            // The INVITE's X-Prompt: a URL to play, or a text to say.
            "play" | "say" | "stream" | "bridge" | "connect" => {
                let prompt = event
                    .headers
                    .iter()
                    .find(|header| header.name.eq_ignore_ascii_case("x-prompt"))
                    .map(|header| header.value.clone())
                    .unwrap_or_default();
                let prompt = match event.destination.as_str() {
                    "play" => Prompt::Play(prompt),
                    "say" => Prompt::Say(prompt),
                    "bridge" => Prompt::Bridge {
                        number: prompt,
                        timed: true,
                    },
                    "connect" => Prompt::Bridge {
                        number: "agent".into(),
                        timed: false,
                    },
                    _ => Prompt::Stream {
                        url: prompt,
                        from: event.caller_id.clone(),
                    },
                };
                self.prompts.insert(id, prompt);
                report("answer", id, call.answer());
            }
            _ => {} // ring
        }
        self.calls.insert(id, call);
    }

    fn call_connected(&mut self, id: CallId) {
        log(&format!("connected {id}"));
        if let Some(&caller) = self.bridged.get(&id) {
            if let (Some(a), Some(b)) = (self.calls.get(&caller), self.calls.get(&id)) {
                report("connect", id, media::connect(a, b));
            }
            let timed = matches!(self.prompts.get(&caller), Some(Prompt::Bridge { timed: true, .. }));
            if !timed {
                return;
            }
            match timers::set_timeout(800) {
                Ok(timer) => {
                    self.ending.insert(timer, (caller, id));
                }
                Err(refusal) => log(&format!("timer refused: {refusal}")),
            }
            return;
        }
        if self.spin_when_connected {
            #[allow(clippy::empty_loop)]
            loop {}
        }
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if self.hang_up_when_connected.contains(&id) {
            report("hangup", id, call.hangup());
        } else if let Some(prompt) = self.prompts.get(&id) {
            match prompt {
                Prompt::Play(url) => report("play", id, call.play(url)),
                Prompt::Say(text) => report("say", id, call.say(text, Some("en-US"))),
                Prompt::Bridge { number, .. } => match calls::dial(number) {
                    Ok(agent) => {
                        self.bridged.insert(agent.id(), id);
                        self.calls.insert(agent.id(), agent);
                    }
                    Err(refusal) => log(&format!("dial refused: {refusal}")),
                },
                Prompt::Stream { url, from } => {
                    let parameters = [Header::new("from", from)];
                    match media::start_stream(call, url, &parameters) {
                        Ok(stream) => log(&format!("streaming {id} as {stream}")),
                        Err(refusal) => log(&format!("stream {id} refused: {refusal}")),
                    }
                }
            }
        }
    }

    fn call_disconnected(&mut self, id: CallId) {
        log(&format!("disconnected {id}"));
        self.calls.remove(&id);
        // A bridged call's end ends the other.
        let other = (self.bridged.iter()).find_map(|(&agent, &caller)| match id {
            _ if id == agent => Some(caller),
            _ if id == caller => Some(agent),
            _ => None,
        });
        if let Some(call) = other.and_then(|other| self.calls.get(&other)) {
            report("hangup", call.id(), call.hangup());
        }
    }

    fn stream_ended(&mut self, stream: StreamId, id: CallId, reason: String) {
        log(&format!("stream-ended {stream} {id} {reason}"));
        if let Some(call) = self.calls.get(&id) {
            report("hangup", id, call.hangup());
        }
    }

    fn timer_fired(&mut self, timer: TimerId) {
        if let Some((caller, agent)) = self.ending.remove(&timer) {
            // Forgotten first: their ends are no news to pass on.
            for id in [agent, caller] {
                if let Some(call) = self.calls.remove(&id) {
                    report("hangup", id, call.hangup());
                }
            }
        }
    }

    fn call_held(&mut self, id: CallId) {
        log(&format!("held {id}"));
    }

    fn call_resumed(&mut self, id: CallId) {
        log(&format!("resumed {id}"));
    }

    fn call_failed(&mut self, id: CallId, code: u16, reason: String) {
        log(&format!("failed {id} {code} {reason}"));
        self.calls.remove(&id);
    }

    fn call_message_received(&mut self, id: CallId, text: String) {
        log(&format!("message {id} {text}"));
        if let Some(call) = self.calls.get(&id) {
            report("send-message", id, call.send_message(&format!("echo: {text}")));
        }
    }

    fn call_tone_received(&mut self, id: CallId, tone: String) {
        log(&format!("tone {id} {tone}"));
        // A streamed or connected call's keys are the far side's business.
        if let Some(Prompt::Stream { .. } | Prompt::Bridge { .. }) = self.prompts.get(&id) {
            return;
        }
        if let Some(call) = self.calls.get(&id) {
            report("send-message", id, call.send_message(&format!("tone: {tone}")));
        }
    }

    fn call_playback_finished(&mut self, id: CallId) {
        log(&format!("playback-finished {id}"));
        if let (Some(call), Some(_)) = (self.calls.get(&id), self.prompts.remove(&id)) {
            report("hangup", id, call.hangup());
        }
    }
}

export_scenario!(SipProbe);
