//! The events a session's queue carries, and the sink that feeds it.

use tokio::sync::{mpsc, oneshot};

use crate::bindings::{Header, HttpRequestEvent, HttpResponse, Message};
use crate::capabilities::calls::CallId;
use crate::capabilities::websockets::{SocketCommand, SocketId};
use crate::session::SessionError;
use crate::telephony::ConnectCall;

/// An incoming call as the telephony side presents it.
#[derive(Debug, Clone, Default)]
pub struct IncomingCall {
    pub caller_id: String,
    pub destination: String,
    pub display_name: String,
    pub headers: Vec<Header>,
}

/// Why a session is asked to end from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminateCause {
    /// The scenario called `terminate()`.
    Scenario,
    /// No calls and no outside activity for the idle timeout.
    Idle,
    /// The host asked (an operator, or a shutdown).
    Host,
}

/// The kinds of event a scenario receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventKind {
    Started,
    CallAlerting,
    HttpRequest,
    WebSocket,
    NewWebSocketFailed,
    Terminating,
    Terminated,
    TimerFired,
    CallConnected,
    CallDisconnected,
    CallFailed,
    CallMessageReceived,
    CallToneReceived,
    CallPlaybackFinished,
    WebSocketMessage,
    WebSocketClosed,
}

impl EventKind {
    /// Every kind, in declaration order (`kind as usize` indexes it).
    pub const ALL: [EventKind; 16] = [
        Self::Started,
        Self::CallAlerting,
        Self::HttpRequest,
        Self::WebSocket,
        Self::NewWebSocketFailed,
        Self::Terminating,
        Self::Terminated,
        Self::TimerFired,
        Self::CallConnected,
        Self::CallDisconnected,
        Self::CallFailed,
        Self::CallMessageReceived,
        Self::CallToneReceived,
        Self::CallPlaybackFinished,
        Self::WebSocketMessage,
        Self::WebSocketClosed,
    ];

    /// The event's name in notices and records (VoxEngine's, where it has one).
    pub fn name(self) -> &'static str {
        match self {
            Self::Started => "Started",
            Self::CallAlerting => "CallAlerting",
            Self::HttpRequest => "HttpRequest",
            Self::WebSocket => "WebSocket",
            Self::NewWebSocketFailed => "NewWebSocketFailed",
            Self::Terminating => "Terminating",
            Self::Terminated => "Terminated",
            Self::TimerFired => "TimerFired",
            Self::CallConnected => "CallConnected",
            Self::CallDisconnected => "CallDisconnected",
            Self::CallFailed => "CallFailed",
            Self::CallMessageReceived => "CallMessageReceived",
            Self::CallToneReceived => "CallToneReceived",
            Self::CallPlaybackFinished => "CallPlaybackFinished",
            Self::WebSocketMessage => "WebSocketMessage",
            Self::WebSocketClosed => "WebSocketClosed",
        }
    }

    /// The `app-events` function that handles it.
    pub fn handler(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::CallAlerting => "call-alerting",
            Self::HttpRequest => "http-request",
            Self::WebSocket => "websocket",
            Self::NewWebSocketFailed => "new-websocket-failed",
            Self::Terminating => "terminating",
            Self::Terminated => "terminated",
            Self::TimerFired => "timer-fired",
            Self::CallConnected => "call-connected",
            Self::CallDisconnected => "call-disconnected",
            Self::CallFailed => "call-failed",
            Self::CallMessageReceived => "call-message-received",
            Self::CallToneReceived => "call-tone-received",
            Self::CallPlaybackFinished => "call-playback-finished",
            Self::WebSocketMessage => "websocket-message",
            Self::WebSocketClosed => "websocket-closed",
        }
    }
}

/// One entry in a session's queue. Started is not here: it is always first.
pub(crate) enum Event {
    CallAlerting {
        call: CallId,
        incoming: IncomingCall,
        connect: ConnectCall,
    },
    HttpRequest {
        request: HttpRequestEvent,
        respond: oneshot::Sender<Result<HttpResponse, SessionError>>,
    },
    WebsocketOpened {
        socket: SocketId,
        path: String,
        headers: Vec<Header>,
        commands: mpsc::Sender<SocketCommand>,
        accepted: oneshot::Sender<Result<(), SessionError>>,
    },
    WebsocketMessage {
        socket: SocketId,
        message: Message,
    },
    WebsocketClosed {
        socket: SocketId,
        code: u16,
        reason: String,
    },
    CallConnected {
        call: CallId,
    },
    CallDisconnected {
        call: CallId,
    },
    CallFailed {
        call: CallId,
        code: u16,
        reason: String,
    },
    CallMessageReceived {
        call: CallId,
        text: String,
    },
    CallToneReceived {
        call: CallId,
        tone: String,
    },
    CallPlaybackFinished {
        call: CallId,
    },
    Terminate(TerminateCause),
}

impl Event {
    /// Whether this event comes from outside the session and so counts as
    /// activity against the idle timeout.
    pub fn is_activity(&self) -> bool {
        !matches!(self, Event::Terminate(_))
    }
}

/// The sending side of a session's queue.
#[derive(Clone)]
pub struct EventSink(pub(crate) mpsc::Sender<Event>);

impl EventSink {
    /// Queues an event from outside, failing when the queue is full or the
    /// session has finished.
    pub(crate) fn send(&self, event: Event) -> Result<(), SessionError> {
        self.0.try_send(event).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SessionError::Busy,
            mpsc::error::TrySendError::Closed(_) => SessionError::Finished,
        })
    }

    /// Queues an outcome the host itself produced (a call answered, a
    /// playback finished). If the queue is full or gone the session has
    /// bigger problems than this event; it is dropped and traced.
    pub(crate) fn send_from_host(&self, event: Event) {
        // A closed queue means the session is ending and no longer wants
        // call events; a full one is worth a trace.
        if let Err(mpsc::error::TrySendError::Full(_)) = self.0.try_send(event) {
            tracing::warn!("a session's queue is full: dropped a telephony event");
        }
    }
}
