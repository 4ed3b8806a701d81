//! Host bindings for the `scenario` world in `wit/`.
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
        "sessionbox:scenario/calls.call": crate::capabilities::calls::CallHandle,
        "sessionbox:scenario/websockets.websocket": crate::capabilities::websockets::SocketHandle,
    },
});

pub use self::exports::sessionbox::scenario::app_events::{
    CallAlertingEvent, HttpRequestEvent, HttpResponse, StartedEvent, WebsocketEvent,
    WebsocketFailedEvent,
};
pub use self::sessionbox::scenario::types::{Capability, Header, Phase, Refusal};
pub use self::sessionbox::scenario::websockets::Message;
