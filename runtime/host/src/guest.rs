//! The scenario's side of an event: the kinds of event, and each call into
//! the guest's `app-events` as data ([`GuestCall`]). The capabilities decide
//! whether an event reaches the scenario and build its call; the session
//! delivers it. One table ([`GuestCall::invoke`]) maps each to its export.

use wasmtime::AsContextMut;

use crate::bindings::exports::sessionbox::scenario::app_events::Guest;
use crate::bindings::{
    CallAlertingEvent, CallId, Message, SocketId, StartedEvent, TimerId, WebsocketEvent,
    WebsocketFailedEvent,
};

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

    /// The event's name in notices and records (VoxEngine's, where it has
    /// one), and the `app-events` function that handles it.
    pub fn names(self) -> (&'static str, &'static str) {
        match self {
            Self::Started => ("Started", "started"),
            Self::CallAlerting => ("CallAlerting", "call-alerting"),
            Self::HttpRequest => ("HttpRequest", "http-request"),
            Self::WebSocket => ("WebSocket", "websocket"),
            Self::NewWebSocketFailed => ("NewWebSocketFailed", "new-websocket-failed"),
            Self::Terminating => ("Terminating", "terminating"),
            Self::Terminated => ("Terminated", "terminated"),
            Self::TimerFired => ("TimerFired", "timer-fired"),
            Self::CallConnected => ("CallConnected", "call-connected"),
            Self::CallDisconnected => ("CallDisconnected", "call-disconnected"),
            Self::CallFailed => ("CallFailed", "call-failed"),
            Self::CallMessageReceived => ("CallMessageReceived", "call-message-received"),
            Self::CallToneReceived => ("CallToneReceived", "call-tone-received"),
            Self::CallPlaybackFinished => ("CallPlaybackFinished", "call-playback-finished"),
            Self::WebSocketMessage => ("WebSocketMessage", "websocket-message"),
            Self::WebSocketClosed => ("WebSocketClosed", "websocket-closed"),
        }
    }

    /// The event's name in notices and records.
    pub fn name(self) -> &'static str {
        self.names().0
    }

    /// The `app-events` function that handles it.
    pub fn handler(self) -> &'static str {
        self.names().1
    }

    /// Whether delivering it counts as activity against the idle timeout:
    /// everything but the session's own phases and timers.
    pub fn is_activity(self) -> bool {
        !matches!(
            self,
            Self::Started | Self::Terminating | Self::Terminated | Self::TimerFired
        )
    }
}

/// A call into the scenario's `app-events`, with its arguments: every event
/// but HttpRequest (whose handler answers; see the session's core).
pub enum GuestCall {
    Started(StartedEvent),
    CallAlerting {
        call: CallId,
        event: CallAlertingEvent,
    },
    Websocket {
        socket: SocketId,
        event: WebsocketEvent,
    },
    NewWebsocketFailed(WebsocketFailedEvent),
    Terminating {
        why: &'static str,
    },
    Terminated,
    TimerFired(TimerId),
    CallConnected(CallId),
    CallDisconnected(CallId),
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
    CallPlaybackFinished(CallId),
    WebsocketMessage {
        socket: SocketId,
        message: Message,
    },
    WebsocketClosed {
        socket: SocketId,
        code: u16,
        reason: String,
    },
}

impl GuestCall {
    pub fn kind(&self) -> EventKind {
        match self {
            Self::Started(_) => EventKind::Started,
            Self::CallAlerting { .. } => EventKind::CallAlerting,
            Self::Websocket { .. } => EventKind::WebSocket,
            Self::NewWebsocketFailed(_) => EventKind::NewWebSocketFailed,
            Self::Terminating { .. } => EventKind::Terminating,
            Self::Terminated => EventKind::Terminated,
            Self::TimerFired(_) => EventKind::TimerFired,
            Self::CallConnected(_) => EventKind::CallConnected,
            Self::CallDisconnected(_) => EventKind::CallDisconnected,
            Self::CallFailed { .. } => EventKind::CallFailed,
            Self::CallMessageReceived { .. } => EventKind::CallMessageReceived,
            Self::CallToneReceived { .. } => EventKind::CallToneReceived,
            Self::CallPlaybackFinished(_) => EventKind::CallPlaybackFinished,
            Self::WebsocketMessage { .. } => EventKind::WebSocketMessage,
            Self::WebsocketClosed { .. } => EventKind::WebSocketClosed,
        }
    }

    /// What a notice of it says beside its name.
    pub fn detail(&self) -> String {
        match self {
            Self::Started(e) => format!("custom-data={:?}", e.custom_data),
            Self::CallAlerting { call, event } => format!(
                "call={call} from={} to={}",
                event.caller_id, event.destination
            ),
            Self::Websocket { socket, event } => format!("socket={socket} {}", event.path),
            Self::NewWebsocketFailed(e) => e.reason.clone(),
            Self::Terminating { why } => (*why).to_owned(),
            Self::Terminated => String::new(),
            Self::TimerFired(id) => format!("timer={id}"),
            Self::CallConnected(call)
            | Self::CallDisconnected(call)
            | Self::CallPlaybackFinished(call) => format!("call={call}"),
            Self::CallFailed { call, code, reason } => format!("call={call} code={code} {reason}"),
            Self::CallMessageReceived { call, text } => {
                format!("call={call} ({} bytes)", text.len())
            }
            Self::CallToneReceived { call, tone } => format!("call={call} tone={tone}"),
            Self::WebsocketMessage { socket, .. } => format!("socket={socket}"),
            Self::WebsocketClosed { socket, code, .. } => format!("socket={socket} code={code}"),
        }
    }

    /// Calls the guest's handler for it.
    pub async fn invoke<S>(&self, guest: &Guest, store: S) -> wasmtime::Result<()>
    where
        S: AsContextMut,
        S::Data: Send,
    {
        match self {
            Self::Started(e) => guest.call_started(store, e).await,
            Self::CallAlerting { event, .. } => guest.call_call_alerting(store, event).await,
            Self::Websocket { event, .. } => guest.call_websocket(store, event).await,
            Self::NewWebsocketFailed(e) => guest.call_new_websocket_failed(store, e).await,
            Self::Terminating { .. } => guest.call_terminating(store).await,
            Self::Terminated => guest.call_terminated(store).await,
            Self::TimerFired(id) => guest.call_timer_fired(store, *id).await,
            Self::CallConnected(call) => guest.call_call_connected(store, *call).await,
            Self::CallDisconnected(call) => guest.call_call_disconnected(store, *call).await,
            Self::CallFailed { call, code, reason } => {
                guest.call_call_failed(store, *call, *code, reason).await
            }
            Self::CallMessageReceived { call, text } => {
                guest.call_call_message_received(store, *call, text).await
            }
            Self::CallToneReceived { call, tone } => {
                guest.call_call_tone_received(store, *call, tone).await
            }
            Self::CallPlaybackFinished(call) => {
                guest.call_call_playback_finished(store, *call).await
            }
            Self::WebsocketMessage { socket, message } => {
                guest.call_websocket_message(store, *socket, message).await
            }
            Self::WebsocketClosed {
                socket,
                code,
                reason,
            } => {
                guest
                    .call_websocket_closed(store, *socket, *code, reason)
                    .await
            }
        }
    }
}
