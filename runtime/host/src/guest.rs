//! The scenario's side of an event: the kinds of event, and each call into
//! the guest's `app-events` as data ([`GuestCall`]). The capabilities decide
//! whether an event reaches the scenario and build its call; the session
//! delivers it. One table ([`GuestCall::invoke`]) maps each to its export.

use wasmtime::AsContextMut;

use crate::bindings::exports::sessionbox::scenario0_2_0::app_events::Guest;
use crate::bindings::exports::sessionbox::scenario0_3_0::media_events::Guest as MediaGuest;
use crate::bindings::v0_1::ToV0_1;
use crate::bindings::v0_1::exports::sessionbox::scenario::app_events::Guest as GuestV0_1;
use crate::bindings::{
    CallAlertingEvent, CallId, HttpRequestEvent, HttpResponse, Message, SocketId, StartedEvent,
    TimerId, WebsocketEvent, WebsocketFailedEvent,
};
use crate::scenario::Instance;

/// A scenario's `app-events`, in the world version it was built for, and
/// its `media-events` if it was built for 0.3.0.
#[derive(Clone, Copy)]
pub enum AppEvents<'a> {
    Current(&'a Guest, Option<&'a MediaGuest>),
    V0_1(&'a GuestV0_1),
}

impl<'a> AppEvents<'a> {
    pub(crate) fn of(instance: &'a Instance) -> Self {
        match instance {
            Instance::Current {
                app_events,
                media_events,
            } => AppEvents::Current(app_events, media_events.as_ref()),
            Instance::V0_1(scenario) => AppEvents::V0_1(scenario.sessionbox_scenario_app_events()),
        }
    }

    /// Calls `http-request`: the scenario's answer.
    pub async fn http_request<S>(
        self,
        store: S,
        request: &HttpRequestEvent,
    ) -> wasmtime::Result<HttpResponse>
    where
        S: AsContextMut,
        S::Data: Send,
    {
        match self {
            AppEvents::Current(guest, _) => guest.call_http_request(store, request).await,
            AppEvents::V0_1(guest) => {
                let request = request.to_v0_1();
                Ok(guest.call_http_request(store, &request).await?.into())
            }
        }
    }
}

/// An event's record as the current world has it.
macro_rules! as_is {
    ($event:expr) => {
        $event
    };
}

/// An event's record as the 0.1.0 world has it.
macro_rules! to_v0_1 {
    ($event:expr) => {
        &$event.to_v0_1()
    };
}

/// The one table of exports: each event to its handler, its records made
/// by `$record!` for the world version `$guest` was built for.
macro_rules! invoke {
    ($call:expr, $guest:expr, $store:expr, $record:ident) => {{
        let (guest, store) = ($guest, $store);
        match $call {
            GuestCall::Started(e) => guest.call_started(store, $record!(e)).await,
            GuestCall::CallAlerting { event, .. } => {
                guest.call_call_alerting(store, $record!(event)).await
            }
            GuestCall::Websocket { event, .. } => {
                guest.call_websocket(store, $record!(event)).await
            }
            GuestCall::NewWebsocketFailed(e) => {
                guest.call_new_websocket_failed(store, $record!(e)).await
            }
            GuestCall::Terminating { .. } => guest.call_terminating(store).await,
            GuestCall::Terminated => guest.call_terminated(store).await,
            GuestCall::TimerFired(id) => guest.call_timer_fired(store, *id).await,
            GuestCall::CallConnected(call) => guest.call_call_connected(store, *call).await,
            GuestCall::CallDisconnected(call) => guest.call_call_disconnected(store, *call).await,
            GuestCall::CallFailed { call, code, reason } => {
                guest.call_call_failed(store, *call, *code, reason).await
            }
            GuestCall::CallMessageReceived { call, text } => {
                guest.call_call_message_received(store, *call, text).await
            }
            GuestCall::CallToneReceived { call, tone } => {
                guest.call_call_tone_received(store, *call, tone).await
            }
            GuestCall::CallPlaybackFinished(call) => {
                guest.call_call_playback_finished(store, *call).await
            }
            GuestCall::WebsocketMessage { socket, message } => {
                guest
                    .call_websocket_message(store, *socket, $record!(message))
                    .await
            }
            GuestCall::WebsocketClosed {
                socket,
                code,
                reason,
            } => {
                guest
                    .call_websocket_closed(store, *socket, *code, reason)
                    .await
            }
            GuestCall::CallHeld { .. }
            | GuestCall::RecordingFinished { .. }
            | GuestCall::StreamEnded { .. } => unreachable!("a media event, not an app event"),
        }
    }};
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
    CallHeld,
    CallResumed,
    RecordingFinished,
    StreamEnded,
}

impl EventKind {
    /// Every kind, in declaration order (`kind as usize` indexes it).
    pub const ALL: [EventKind; 20] = [
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
        Self::CallHeld,
        Self::CallResumed,
        Self::RecordingFinished,
        Self::StreamEnded,
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
            Self::CallHeld => ("CallHeld", "call-held"),
            Self::CallResumed => ("CallResumed", "call-resumed"),
            Self::RecordingFinished => ("RecordingFinished", "recording-finished"),
            Self::StreamEnded => ("StreamEnded", "stream-ended"),
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
    /// A `media-events` call: `call-held`, or (`held: false`)
    /// `call-resumed`.
    CallHeld {
        call: CallId,
        held: bool,
    },
    /// `media-events`: `stream-ended`.
    StreamEnded {
        stream: u32,
        call: CallId,
        reason: String,
    },
    /// `media-events`: `recording-finished`.
    RecordingFinished {
        recording: u32,
        call: CallId,
        duration_ms: u32,
        error: Option<String>,
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
            Self::CallHeld { held: true, .. } => EventKind::CallHeld,
            Self::CallHeld { held: false, .. } => EventKind::CallResumed,
            Self::RecordingFinished { .. } => EventKind::RecordingFinished,
            Self::StreamEnded { .. } => EventKind::StreamEnded,
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
            | Self::CallPlaybackFinished(call)
            | Self::CallHeld { call, .. } => format!("call={call}"),
            Self::CallFailed { call, code, reason } => format!("call={call} code={code} {reason}"),
            Self::CallMessageReceived { call, text } => {
                format!("call={call} ({} bytes)", text.len())
            }
            Self::CallToneReceived { call, tone } => format!("call={call} tone={tone}"),
            Self::WebsocketMessage { socket, .. } => format!("socket={socket}"),
            Self::WebsocketClosed { socket, code, .. } => format!("socket={socket} code={code}"),
            Self::StreamEnded {
                stream,
                call,
                reason,
            } => format!("stream={stream} call={call} {reason}"),
            Self::RecordingFinished {
                recording,
                call,
                duration_ms,
                error,
            } => match error {
                None => format!("recording={recording} call={call} {duration_ms} ms"),
                Some(error) => format!("recording={recording} call={call} not kept: {error}"),
            },
        }
    }

    /// Calls the guest's handler for it.
    pub async fn invoke<S>(&self, guest: AppEvents<'_>, store: S) -> wasmtime::Result<()>
    where
        S: AsContextMut,
        S::Data: Send,
    {
        match (guest, self) {
            // A scenario built before 0.3.0 does not hear of media.
            (
                AppEvents::Current(_, None) | AppEvents::V0_1(_),
                GuestCall::CallHeld { .. }
                | GuestCall::RecordingFinished { .. }
                | GuestCall::StreamEnded { .. },
            ) => Ok(()),
            (
                AppEvents::Current(_, Some(media)),
                GuestCall::StreamEnded {
                    stream,
                    call,
                    reason,
                },
            ) => media.call_stream_ended(store, *stream, *call, reason).await,
            (
                AppEvents::Current(_, Some(media)),
                GuestCall::RecordingFinished {
                    recording,
                    call,
                    duration_ms,
                    error,
                },
            ) => {
                let error = error.as_deref();
                (media.call_recording_finished(store, *recording, *call, *duration_ms, error)).await
            }
            (AppEvents::Current(_, Some(media)), GuestCall::CallHeld { call, held: true }) => {
                media.call_call_held(store, *call).await
            }
            (AppEvents::Current(_, Some(media)), GuestCall::CallHeld { call, held: false }) => {
                media.call_call_resumed(store, *call).await
            }
            (AppEvents::Current(guest, _), _) => invoke!(self, guest, store, as_is),
            (AppEvents::V0_1(guest), _) => invoke!(self, guest, store, to_v0_1),
        }
    }
}
