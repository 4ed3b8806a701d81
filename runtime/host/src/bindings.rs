//! Host bindings for the current `scenario` world in `wit/` (0.3.0, which
//! includes 0.2.0 whole), and the host side of the guest's resources.
//! Components built for 0.2.0 run on the same bindings (they export
//! `app-events` and not `media-events`); those built for 0.1.0 keep running
//! through [`v0_1`].
//!
//! Imports are trappable, so a host function can end a guest that misuses a
//! handle, and synchronous (every host function answers at once; anything
//! that takes time, like a call being answered, comes back later as an
//! event) except storage's, which wait for the database on the session's
//! fiber rather than on a tokio worker. Exports are async so that each
//! handler runs on a fiber that the epoch ticker can suspend: a looping
//! guest yields instead of blocking its worker.

pub mod v0_1;

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "scenario",
    imports: {
        "sessionbox:scenario/storage": async | trappable,
        default: trappable,
    },
    exports: { default: async },
    with: {
        "sessionbox:scenario/calls.call": crate::bindings::CallHandle,
        "sessionbox:scenario/websockets.websocket": crate::bindings::SocketHandle,
    },
});

/// The interfaces 0.3.0 takes from 0.2.0, by the names the capabilities use.
pub use self::sessionbox::scenario0_2_0 as scenario;
pub use self::sessionbox::scenario0_3_0::media;

pub use self::exports::sessionbox::scenario0_2_0::app_events::{
    CallAlertingEvent, HttpRequestEvent, HttpResponse, StartedEvent, WebsocketEvent,
    WebsocketFailedEvent,
};
pub use self::scenario::types::{Capability, Header, Phase, Refusal, RefusalKind};
pub use self::scenario::websockets::Message;

/// Names a call within its session.
pub type CallId = u32;
/// Names a WebSocket within its session.
pub type SocketId = u32;
/// Names a timer within its session.
pub type TimerId = u32;

/// The host side of a guest's `call` resource.
pub struct CallHandle {
    pub id: CallId,
}

/// The host side of a guest's `websocket` resource.
pub struct SocketHandle {
    pub id: SocketId,
}
