//! Host bindings for the current `scenario` world in `wit/` (0.2.0), and
//! the host side of the guest's resources. Components built for the
//! earlier world keep running through [`v0_1`].
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

pub use self::exports::sessionbox::scenario::app_events::{
    CallAlertingEvent, HttpRequestEvent, HttpResponse, StartedEvent, WebsocketEvent,
    WebsocketFailedEvent,
};
pub use self::sessionbox::scenario::types::{Capability, Header, Phase, Refusal, RefusalKind};
pub use self::sessionbox::scenario::websockets::Message;

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
