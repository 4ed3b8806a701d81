//! The telephony side: what carries out a scenario's call actions and brings
//! the far end's answers back as call events.
//!
//! Each call has a [`CallLink`], its far end: the session hands it the
//! scenario's actions, and the link reports outcomes through the call's
//! [`CallContext`]. Where calls come from decides the link: SIP calls
//! ([`crate::sip`]) have one that drives real signalling and media; calls
//! from the API or the command line have an [`InProcessLink`], which answers
//! every action at once as a real far end eventually would. Outbound calls
//! are placed by the runtime's [`Dialer`].

use std::sync::Arc;

use crate::bindings::{CallId, Header};
use crate::destination::HostRule;
use crate::limits::Limits;
use crate::log::{LogSource, SessionLog};
use crate::recording::{Recorder, RecordingId};

/// A signalling-level action on a call, as the scenario asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallAction {
    Answer,
    Reject {
        code: u16,
    },
    Hangup,
    Say {
        text: String,
        language: Option<String>,
    },
    Play {
        url: String,
    },
    SendMessage {
        text: String,
    },
    /// Streams the call's audio to a WebSocket server, and plays what it
    /// sends back (Twilio's Media Streams).
    StartStream {
        stream: StreamId,
        url: String,
        /// The `start` message's `customParameters`: names and values.
        parameters: Vec<(String, String)>,
    },
    StopStream,
}

/// Names a call's audio stream within its session (from 1).
pub type StreamId = u32;

/// What the far end of a call reports: each becomes a call event for the
/// scenario, if the call is in a state that expects it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    Connected,
    /// A connected call ended, or an incoming one was given up by its caller.
    Disconnected,
    /// The call ended without connecting; `code` is the SIP status.
    Failed {
        code: u16,
        reason: String,
    },
    Message(String),
    Tone(String),
    PlaybackFinished,
    /// The far end put the call on hold (`true`) or took it off.
    Held(bool),
    /// The call's audio stream ended, for `reason`.
    StreamEnded {
        stream: StreamId,
        reason: String,
    },
    /// A recording of the call ended, and was kept (or, with `error`, not).
    RecordingFinished {
        recording: RecordingId,
        duration: std::time::Duration,
        error: Option<String>,
    },
}

/// Where a call's far end sends its [`CallEvent`]s: the session's queue.
pub trait CallEvents: Send + Sync + 'static {
    fn send(&self, call: CallId, event: CallEvent);
}

/// The far end of one call. Dropping it (the session ended, however it
/// ended) must end the call.
pub trait CallLink: Send + Sync + 'static {
    fn act(&self, action: CallAction);

    /// Where audio for this call's far end goes in: what a bridge relays
    /// the other call's audio to. None for a call without media (one
    /// answered in process), which a bridge then leaves silent.
    fn media_port(&self) -> Option<Arc<dyn MediaPort>> {
        None
    }

    /// Relays what this call's far end sends to `port` from now on (the
    /// other call of a bridge), or, with None, to nothing.
    fn relay_to(&self, _port: Option<Arc<dyn MediaPort>>) {}

    /// Feeds the call's audio, both ways, to `recorder` from now on, or,
    /// with None, to no recorder. A call without media records silence.
    fn record(&self, _recorder: Option<Arc<Recorder>>) {}
}

/// The audio codecs a call may carry: G.711, 8 kHz.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Pcmu,
    Pcma,
}

/// One RTP packet's worth of what a far end sent, as a bridge relays it.
#[derive(Debug, Clone, Copy)]
pub struct MediaFrame<'a> {
    pub kind: FrameKind,
    /// The RTP marker bit (the start of a talkspurt, or of a key press).
    pub marker: bool,
    /// The sender's stream (its RTP SSRC): a new one starts a new timeline.
    pub source: u32,
    /// On the sender's timeline (8 kHz).
    pub timestamp: u32,
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Audio(Codec),
    /// An RFC 4733 telephone event (a key press).
    TelephoneEvent,
}

/// A call's way in for relayed audio: the other side of a bridge.
pub trait MediaPort: Send + Sync + 'static {
    /// Sends `frame` on to the far end, in its codec and on its stream.
    fn relay(&self, frame: &MediaFrame<'_>);
}

/// An incoming call as the telephony side presents it.
#[derive(Debug, Clone, Default)]
pub struct IncomingCall {
    pub caller_id: String,
    pub destination: String,
    pub display_name: String,
    pub headers: Vec<Header>,
}

/// Connects an incoming call's far end once the session has taken the call
/// and numbered it.
pub type ConnectCall = Box<dyn FnOnce(CallContext) -> Box<dyn CallLink> + Send>;

/// What the telephony side knows of the session a call belongs to: where its
/// events go, its log, the app's rules for fetching prompts, and its speech
/// service.
#[derive(Clone)]
pub struct CallContext {
    pub call: CallId,
    pub(crate) events: Arc<dyn CallEvents>,
    pub(crate) log: SessionLog,
    pub limits: Arc<Limits>,
    pub http_rules: Arc<[HostRule]>,
    /// The app's HTTP speech service for `say`, if it has one.
    pub tts_url: Option<Arc<str>>,
}

impl CallContext {
    fn send(&self, event: CallEvent) {
        self.events.send(self.call, event);
    }

    pub fn connected(&self) {
        self.send(CallEvent::Connected);
    }

    /// A connected call ended, or an incoming one was given up by its caller.
    pub fn disconnected(&self) {
        self.send(CallEvent::Disconnected);
    }

    /// The call ended without connecting; `code` is the SIP status.
    pub fn failed(&self, code: u16, reason: impl Into<String>) {
        let reason = reason.into();
        self.send(CallEvent::Failed { code, reason });
    }

    pub fn message(&self, text: String) {
        self.send(CallEvent::Message(text));
    }

    pub fn tone(&self, tone: String) {
        self.send(CallEvent::Tone(tone));
    }

    pub fn playback_finished(&self) {
        self.send(CallEvent::PlaybackFinished);
    }

    /// The far end put the call on hold (`true`) or took it off.
    pub fn held(&self, held: bool) {
        self.send(CallEvent::Held(held));
    }

    /// The call's audio stream `stream` ended, for `reason`.
    pub fn stream_ended(&self, stream: StreamId, reason: impl Into<String>) {
        let reason = reason.into();
        self.send(CallEvent::StreamEnded { stream, reason });
    }

    /// A line in the session log from the host about this call (e.g. why a
    /// prompt could not be played).
    pub fn note(&self, line: &str) {
        self.log
            .write(LogSource::Host, &format!("call {}: {line}", self.call));
    }
}

/// An outbound call as the scenario asked for it.
#[derive(Debug, Clone, Default)]
pub struct DialRequest {
    /// The number or SIP user to call.
    pub number: String,
    /// Presented as the caller (the trunk's user by default).
    pub caller_id: Option<String>,
    pub display_name: Option<String>,
    /// Custom (X-) headers for the INVITE.
    pub headers: Vec<Header>,
}

/// Places outbound calls.
pub trait Dialer: Send + Sync + 'static {
    /// Starts calling. The outcome (connected, or failed with the SIP code)
    /// is reported through `context`; `Err` refuses at once and says why.
    fn dial(&self, request: DialRequest, context: CallContext)
    -> Result<Box<dyn CallLink>, String>;
}

/// A far end without a network: each action's outcome follows immediately.
pub struct InProcessLink(pub CallContext);

impl CallLink for InProcessLink {
    fn act(&self, action: CallAction) {
        match action {
            CallAction::Answer => self.0.connected(),
            CallAction::Hangup => self.0.disconnected(),
            CallAction::Say { .. } | CallAction::Play { .. } => self.0.playback_finished(),
            CallAction::StartStream { stream, .. } => self.0.stream_ended(
                stream,
                "a call answered in process carries no audio to stream",
            ),
            // The far end takes a rejection or a message without a reply.
            CallAction::Reject { .. } | CallAction::SendMessage { .. } | CallAction::StopStream => {
            }
        }
    }
}

/// Outbound calls without a network: every call is answered at once.
#[derive(Debug, Default, Clone, Copy)]
pub struct InProcessDialer;

impl Dialer for InProcessDialer {
    fn dial(
        &self,
        _request: DialRequest,
        context: CallContext,
    ) -> Result<Box<dyn CallLink>, String> {
        context.connected();
        Ok(Box::new(InProcessLink(context)))
    }
}

/// No outbound calls: what a node with SIP but no trunk does.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoDialer;

impl Dialer for NoDialer {
    fn dial(&self, _: DialRequest, _: CallContext) -> Result<Box<dyn CallLink>, String> {
        Err("this node has no SIP trunk for outbound calls".into())
    }
}
