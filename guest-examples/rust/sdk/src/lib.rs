//! Write Sessionbox scenarios in Rust.
//!
//! A scenario is a type that implements [`Scenario`]. Every method has a
//! default that does nothing (`http_request` answers 404), so a scenario
//! implements only the events it cares about. [`export_scenario!`] makes the
//! type the component's `sessionbox:scenario/app-events` and `media-events`
//! exports (world 0.3.0); the host creates one instance per session and
//! delivers that session's events one at a time.
//!
//! ```no_run
//! use sessionbox_guest::{HttpRequestEvent, HttpResponse, Scenario, StartedEvent, log};
//!
//! #[derive(Default)]
//! struct Hello;
//!
//! impl Scenario for Hello {
//!     fn started(&mut self, event: StartedEvent) {
//!         log(&format!("hello, session {}", event.session_id));
//!     }
//!     fn http_request(&mut self, req: HttpRequestEvent) -> HttpResponse {
//!         HttpResponse::text(200, format!("you asked for {}", req.path))
//!     }
//! }
//!
//! sessionbox_guest::export_scenario!(Hello);
//! ```
//!
//! Build the crate as a `cdylib` for `wasm32-wasip2`; the result is a
//! component the host runs directly. Host capabilities are the functions in
//! [`session`], [`timers`], [`storage`], [`variables`], [`media`], [`log`]
//! and the [`Call`] and [`Websocket`] resources; outbound HTTP is [`http`]. What is
//! allowed depends on the session's [`Phase`]: a capability that does not
//! apply returns a [`Refusal`] (never a trap).

use core::fmt;

// The generated code names this crate by its absolute path (see the
// `runtime_path`, `default_bindings_module` and `with` options below), so that
// the same paths work here and inside `export_scenario!` in user crates.
extern crate self as sessionbox_guest;

pub mod http;
pub mod storage;

/// The wit-bindgen bindings of the `scenario` world. [`export_scenario!`]
/// uses them; scenarios should not need to.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit",
        world: "scenario",
        pub_export_macro: true,
        // 0.3.0 includes the 0.2.0 interfaces from `wit/deps`.
        generate_all,
        default_bindings_module: "sessionbox_guest::bindings",
        runtime_path: "sessionbox_guest::__private::wit_bindgen::rt",
        // wit-bindgen gives error records a `Display` that prints their
        // `Debug` form; the SDK's own `Refusal` has a readable one.
        with: {
            "sessionbox:scenario/types@0.2.0/refusal": sessionbox_guest::Refusal,
        },
    });
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}

pub use bindings::exports::sessionbox::scenario0_2_0::app_events::{
    CallAlertingEvent, HttpRequestEvent, HttpResponse, StartedEvent, WebsocketEvent,
    WebsocketFailedEvent,
};
pub use bindings::sessionbox::scenario0_2_0::calls::{Call, CallId, CallState};
pub use bindings::sessionbox::scenario0_2_0::types::{Capability, Header, Phase, RefusalKind};
pub use bindings::sessionbox::scenario0_2_0::websockets::{Message, SocketId, Websocket};
pub use timers::TimerId;

/// Appends one line to the session log. Works in every phase.
pub fn log(message: &str) {
    bindings::sessionbox::scenario0_2_0::logger::write(message);
}

/// The session this instance serves: its id, custom data, phase, and ending it.
pub mod session {
    pub use crate::bindings::sessionbox::scenario0_2_0::session::{
        access_url, current_phase, custom_data, id, set_custom_data, terminate,
    };

    /// The phase the session is in now (WIT's `current-phase`, which is named
    /// so only because WIT forbids a function and a type of the same name).
    pub fn phase() -> crate::Phase {
        current_phase()
    }
}

/// One-shot and repeating timers; each firing is a
/// [`Scenario::timer_fired`] event. Only while running.
pub mod timers {
    pub use crate::bindings::sessionbox::scenario0_2_0::timers::{
        TimerId, clear, set_interval, set_timeout,
    };
}

/// The app's variables and secrets, from the node's configuration. A
/// secret's value shows as `[secret]` wherever the scenario writes it to the
/// log. Works while running and terminating.
pub mod variables {
    pub use crate::bindings::sessionbox::scenario0_2_0::variables::get;
}

/// Outbound calls, placed through the node's SIP trunk. The call's
/// [`Scenario::call_connected`] or [`Scenario::call_failed`] tells how it went.
pub mod calls {
    pub use crate::bindings::sessionbox::scenario0_2_0::calls::DialOptions;

    /// Calls `number` as the trunk's user, with no custom headers.
    pub fn dial(number: &str) -> Result<crate::Call, crate::Refusal> {
        let options = DialOptions {
            caller_id: None,
            display_name: None,
            headers: Vec::new(),
        };
        dial_with(number, &options)
    }

    /// Calls `number` with a caller id, display name or X- headers.
    pub fn dial_with(number: &str, options: &DialOptions) -> Result<crate::Call, crate::Refusal> {
        crate::bindings::sessionbox::scenario0_2_0::calls::dial(number, options)
    }
}

/// What a scenario does with its calls' audio: [`media::connect`] bridges
/// two connected calls (audio both ways, key presses relayed) until
/// [`media::disconnect`] or either call ends; [`media::start_recording`]
/// records a call until [`media::stop_recording`], its time is up or the
/// call ends, and [`Scenario::recording_finished`] follows;
/// [`media::start_stream`] streams a call's audio to a WebSocket server in
/// Twilio's Media Streams format (and plays what it sends back) until
/// [`media::stop_stream`] or the call ends, and [`Scenario::stream_ended`]
/// follows.
pub mod media {
    pub use crate::bindings::sessionbox::scenario0_3_0::media::{
        RecordingId, RecordingOptions, StreamId, connect, disconnect, start_recording,
        start_stream, stop_recording, stop_stream,
    };
}

/// Why the host did not do what the scenario asked.
///
/// Displays as `{capability} refused in {phase}: {reason}`, e.g.
/// `timers refused in terminating: timers are cancelled when a session ends`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The capability that refused.
    pub capability: Capability,
    /// The session's phase when it refused.
    pub phase: Phase,
    /// Which kind of rule refused: whether retrying later may help.
    pub kind: RefusalKind,
    /// A sentence for a human: which rule or limit applied.
    pub reason: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} refused in {}: {}",
            self.capability, self.phase, self.reason
        )
    }
}

impl std::error::Error for Refusal {}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Running => "running",
            Phase::Terminating => "terminating",
            Phase::Terminated => "terminated",
        })
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Capability::Logger => "logger",
            Capability::Session => "session",
            Capability::Timers => "timers",
            Capability::Calls => "calls",
            Capability::Websockets => "websockets",
            Capability::Http => "http",
            Capability::Storage => "storage",
            Capability::Variables => "variables",
        })
    }
}

/// The WIT spelling: `phase`, `rule`, `quota`, `unknown`, `full`,
/// `unavailable`.
impl fmt::Display for RefusalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RefusalKind::Phase => "phase",
            RefusalKind::Rule => "rule",
            RefusalKind::Quota => "quota",
            RefusalKind::Unknown => "unknown",
            RefusalKind::Full => "full",
            RefusalKind::Unavailable => "unavailable",
        })
    }
}

impl Header {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }
}

impl HttpResponse {
    /// A response with no headers and an empty body.
    pub fn empty(status: u16) -> Self {
        HttpResponse {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self::empty(status)
            .with_header("content-type", "text/plain")
            .with_body(body.into())
    }

    /// An `application/json` response; `body` is already-serialized JSON.
    pub fn json(status: u16, body: impl Into<String>) -> Self {
        Self::empty(status)
            .with_header("content-type", "application/json")
            .with_body(body.into())
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push(Header::new(name, value));
        self
    }

    /// Replaces the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

/// A session's event handlers. Each defaults to doing nothing, except
/// `http_request`, which answers 404 with an empty body.
///
/// The host creates the instance (with `Default`) for the session's first
/// event and calls one method per event, each running to completion, in
/// arrival order.
#[allow(unused_variables)]
pub trait Scenario: Default + 'static {
    /// The first event of every session, exactly once.
    fn started(&mut self, event: StartedEvent) {}
    /// An incoming call reached the session. Keep `event.call` to act on it
    /// later; dropping it does not end the call.
    fn call_alerting(&mut self, event: CallAlertingEvent) {}
    /// A request to the session's access URL.
    fn http_request(&mut self, request: HttpRequestEvent) -> HttpResponse {
        HttpResponse::empty(404)
    }
    /// A client opened a WebSocket on the access URL. Keep `event.socket` to
    /// send and close.
    fn websocket(&mut self, event: WebsocketEvent) {}
    /// A WebSocket connection was refused.
    fn new_websocket_failed(&mut self, event: WebsocketFailedEvent) {}
    /// The session is ending: no timers, one outbound HTTP request.
    fn terminating(&mut self) {}
    /// The last event: only the logger works.
    fn terminated(&mut self) {}
    /// A timer set with [`timers`] fired.
    fn timer_fired(&mut self, id: TimerId) {}
    /// A call was answered.
    fn call_connected(&mut self, call: CallId) {}
    /// A connected call ended (either side hung up).
    fn call_disconnected(&mut self, call: CallId) {}
    /// A call ended without connecting; `code` is the SIP status.
    fn call_failed(&mut self, call: CallId, code: u16, reason: String) {}
    /// The other side sent an in-call message.
    fn call_message_received(&mut self, call: CallId, text: String) {}
    /// The other side pressed a key (DTMF: 0-9, *, #, A-D).
    fn call_tone_received(&mut self, call: CallId, tone: String) {}
    /// A `say` or `play` finished.
    fn call_playback_finished(&mut self, call: CallId) {}
    /// A client sent a message on a WebSocket.
    fn websocket_message(&mut self, socket: SocketId, message: Message) {}
    /// A WebSocket closed (by the client or the scenario).
    fn websocket_closed(&mut self, socket: SocketId, code: u16, reason: String) {}
    /// The far end put the call on hold: it hears nothing until
    /// `call_resumed`.
    fn call_held(&mut self, call: CallId) {}
    /// The far end took the call off hold.
    fn call_resumed(&mut self, call: CallId) {}
    /// A recording ended: kept, `duration_ms` long, unless `error` says why
    /// not. Fetch it from `/v1/sessions/{id}/recordings/{recording}`.
    fn recording_finished(
        &mut self,
        recording: media::RecordingId,
        call: CallId,
        duration_ms: u32,
        error: Option<String>,
    ) {
    }
    /// A stream ended: stopped, its call ended, its server closed it, or it
    /// could not connect (`reason` says which).
    fn stream_ended(&mut self, stream: media::StreamId, call: CallId, reason: String) {}
}

/// Makes a [`Scenario`] type the component's `app-events` export.
///
/// Use it once per component, at the crate root or in any module:
/// `sessionbox_guest::export_scenario!(MyScenario);`
#[macro_export]
macro_rules! export_scenario {
    ($scenario:ty) => {
        const _: () = {
            use $crate::bindings::exports::sessionbox::scenario0_2_0::app_events as __events;
            use $crate::bindings::exports::sessionbox::scenario0_3_0::media_events as __media;

            // The generated `Guest` trait has no `self`: the instance lives
            // here. Wasm guests are single threaded, and the host never
            // re-enters a guest while a handler runs, so the `RefCell` is
            // never borrowed twice.
            ::std::thread_local! {
                static INSTANCE: ::core::cell::RefCell<::core::option::Option<$scenario>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            fn with<R>(f: impl ::core::ops::FnOnce(&mut $scenario) -> R) -> R {
                INSTANCE.with(|cell| {
                    let mut slot = cell.borrow_mut();
                    f(slot.get_or_insert_with(::core::default::Default::default))
                })
            }

            // wit-bindgen's export macro wants a plain identifier.
            struct __SessionboxScenario;

            impl __events::Guest for __SessionboxScenario {
                fn started(event: __events::StartedEvent) {
                    with(|s| $crate::Scenario::started(s, event))
                }
                fn call_alerting(event: __events::CallAlertingEvent) {
                    with(|s| $crate::Scenario::call_alerting(s, event))
                }
                fn http_request(request: __events::HttpRequestEvent) -> __events::HttpResponse {
                    with(|s| $crate::Scenario::http_request(s, request))
                }
                fn websocket(event: __events::WebsocketEvent) {
                    with(|s| $crate::Scenario::websocket(s, event))
                }
                fn new_websocket_failed(event: __events::WebsocketFailedEvent) {
                    with(|s| $crate::Scenario::new_websocket_failed(s, event))
                }
                fn terminating() {
                    with(|s| $crate::Scenario::terminating(s))
                }
                fn terminated() {
                    with(|s| $crate::Scenario::terminated(s))
                }
                fn timer_fired(id: __events::TimerId) {
                    with(|s| $crate::Scenario::timer_fired(s, id))
                }
                fn call_connected(call: __events::CallId) {
                    with(|s| $crate::Scenario::call_connected(s, call))
                }
                fn call_disconnected(call: __events::CallId) {
                    with(|s| $crate::Scenario::call_disconnected(s, call))
                }
                fn call_failed(call: __events::CallId, code: u16, reason: ::std::string::String) {
                    with(|s| $crate::Scenario::call_failed(s, call, code, reason))
                }
                fn call_message_received(call: __events::CallId, text: ::std::string::String) {
                    with(|s| $crate::Scenario::call_message_received(s, call, text))
                }
                fn call_tone_received(call: __events::CallId, tone: ::std::string::String) {
                    with(|s| $crate::Scenario::call_tone_received(s, call, tone))
                }
                fn call_playback_finished(call: __events::CallId) {
                    with(|s| $crate::Scenario::call_playback_finished(s, call))
                }
                fn websocket_message(socket: __events::SocketId, message: __events::Message) {
                    with(|s| $crate::Scenario::websocket_message(s, socket, message))
                }
                fn websocket_closed(
                    socket: __events::SocketId,
                    code: u16,
                    reason: ::std::string::String,
                ) {
                    with(|s| $crate::Scenario::websocket_closed(s, socket, code, reason))
                }
            }

            impl __media::Guest for __SessionboxScenario {
                fn call_held(call: __media::CallId) {
                    with(|s| $crate::Scenario::call_held(s, call))
                }
                fn call_resumed(call: __media::CallId) {
                    with(|s| $crate::Scenario::call_resumed(s, call))
                }
                fn recording_finished(
                    recording: __media::RecordingId,
                    call: __media::CallId,
                    duration_ms: u32,
                    error: ::core::option::Option<::std::string::String>,
                ) {
                    with(|s| {
                        $crate::Scenario::recording_finished(s, recording, call, duration_ms, error)
                    })
                }
                fn stream_ended(
                    id: __media::StreamId,
                    call: __media::CallId,
                    reason: ::std::string::String,
                ) {
                    with(|s| $crate::Scenario::stream_ended(s, id, call, reason))
                }
            }

    $crate::bindings::export!(__SessionboxScenario with_types_in $crate::bindings);
        };
    };
}
