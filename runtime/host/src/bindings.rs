//! Host bindings for the `scenario` world in `wit/`, and the host side of
//! the guest's resources.
//!
//! Imports are synchronous (every host function answers at once; anything
//! that takes time, like a call being answered, comes back later as an event)
//! and trappable, so a host function can end a guest that misuses a handle.
//! Exports are async so that each handler runs on a fiber that the epoch
//! ticker can suspend: a looping guest yields instead of blocking its worker.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "scenario",
    imports: { default: trappable },
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
pub use self::sessionbox::scenario::types::{Capability, Header, Phase, Refusal};
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
