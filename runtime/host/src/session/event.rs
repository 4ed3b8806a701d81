//! The events a session receives, and the entries its queue carries.

use tokio::sync::{mpsc, oneshot};

use super::SessionError;
use crate::bindings::{Header, HttpRequestEvent, HttpResponse, Message};
use crate::capabilities::calls::CallId;
use crate::capabilities::websockets::{SocketCommand, SocketId};
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

    /// Whether delivering it counts as activity against the idle timeout:
    /// everything but the session's own phases and timers.
    pub fn is_activity(self) -> bool {
        !matches!(
            self,
            Self::Started | Self::Terminating | Self::Terminated | Self::TimerFired
        )
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
        request: std::sync::Arc<HttpRequestEvent>,
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
