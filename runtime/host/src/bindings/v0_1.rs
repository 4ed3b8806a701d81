//! The `scenario@0.1.0` world (`wit/0.1.0/`), served beside the current one
//! so that components built for it keep running, as Spin serves its older
//! worlds. Its host functions are the current ones: each 0.1.0 import
//! forwards to the capability's current implementation and converts the
//! types that differ (0.1.0's refusals have no kind; its records are types
//! of their own). Its `app-events` export gets the current events,
//! converted ([`ToV0_1`]).

use wasmtime::component::Resource;

use super::scenario as current;
use super::{CallHandle, CallId, SocketHandle, SocketId, TimerId};
use crate::capabilities::calls::CallsView;
use crate::capabilities::logger::LoggerView;
use crate::capabilities::session::SessionView;
use crate::capabilities::timers::TimersView;
use crate::capabilities::websockets::WebsocketsView;

wasmtime::component::bindgen!({
    path: "../../wit/0.1.0",
    world: "scenario",
    imports: { default: trappable },
    exports: { default: async },
    with: {
        "sessionbox:scenario/calls.call": crate::bindings::CallHandle,
        "sessionbox:scenario/websockets.websocket": crate::bindings::SocketHandle,
    },
});

use self::exports::sessionbox::scenario::app_events as events;
use self::sessionbox::scenario::{calls, logger, session, timers, types, websockets};

/// A current value as 0.1.0 has it, for the events delivered to a 0.1.0
/// scenario.
pub trait ToV0_1 {
    type Old;
    fn to_v0_1(&self) -> Self::Old;
}

/// A handle the guest gets a second name for: the same host resource.
fn same<T: 'static>(resource: &Resource<T>) -> Resource<T> {
    Resource::new_own(resource.rep())
}

fn headers(headers: &[current::types::Header]) -> Vec<types::Header> {
    headers
        .iter()
        .map(|h| types::Header {
            name: h.name.clone(),
            value: h.value.clone(),
        })
        .collect()
}

impl ToV0_1 for super::StartedEvent {
    type Old = events::StartedEvent;
    fn to_v0_1(&self) -> Self::Old {
        events::StartedEvent {
            session_id: self.session_id.clone(),
            access_url: self.access_url.clone(),
            custom_data: self.custom_data.clone(),
        }
    }
}

impl ToV0_1 for super::CallAlertingEvent {
    type Old = events::CallAlertingEvent;
    fn to_v0_1(&self) -> Self::Old {
        events::CallAlertingEvent {
            call: same(&self.call),
            caller_id: self.caller_id.clone(),
            destination: self.destination.clone(),
            display_name: self.display_name.clone(),
            headers: headers(&self.headers),
        }
    }
}

impl ToV0_1 for super::HttpRequestEvent {
    type Old = events::HttpRequestEvent;
    fn to_v0_1(&self) -> Self::Old {
        events::HttpRequestEvent {
            method: self.method.clone(),
            path: self.path.clone(),
            headers: headers(&self.headers),
            body: self.body.clone(),
        }
    }
}

impl ToV0_1 for super::WebsocketEvent {
    type Old = events::WebsocketEvent;
    fn to_v0_1(&self) -> Self::Old {
        events::WebsocketEvent {
            socket: same(&self.socket),
            path: self.path.clone(),
            headers: headers(&self.headers),
        }
    }
}

impl ToV0_1 for super::WebsocketFailedEvent {
    type Old = events::WebsocketFailedEvent;
    fn to_v0_1(&self) -> Self::Old {
        events::WebsocketFailedEvent {
            reason: self.reason.clone(),
        }
    }
}

impl ToV0_1 for super::Message {
    type Old = websockets::Message;
    fn to_v0_1(&self) -> Self::Old {
        match self {
            Self::Text(text) => websockets::Message::Text(text.clone()),
            Self::Binary(bytes) => websockets::Message::Binary(bytes.clone()),
        }
    }
}

/// A 0.1.0 scenario's answer to an HttpRequest, as the host handles it.
impl From<events::HttpResponse> for super::HttpResponse {
    fn from(response: events::HttpResponse) -> Self {
        super::HttpResponse {
            status: response.status,
            headers: response.headers.into_iter().map(Into::into).collect(),
            body: response.body,
        }
    }
}

impl From<types::Header> for current::types::Header {
    fn from(header: types::Header) -> Self {
        current::types::Header {
            name: header.name,
            value: header.value,
        }
    }
}

impl From<websockets::Message> for super::Message {
    fn from(message: websockets::Message) -> Self {
        match message {
            websockets::Message::Text(text) => Self::Text(text),
            websockets::Message::Binary(bytes) => Self::Binary(bytes),
        }
    }
}

/// A refusal as 0.1.0 words it: without its kind.
fn refusal(refusal: super::Refusal) -> types::Refusal {
    use super::Capability as C;
    types::Refusal {
        capability: match refusal.capability {
            C::Logger => types::Capability::Logger,
            C::Session => types::Capability::Session,
            C::Timers => types::Capability::Timers,
            C::Calls => types::Capability::Calls,
            C::Websockets => types::Capability::Websockets,
            C::Http => types::Capability::Http,
            C::Storage | C::Variables => {
                unreachable!("the 0.1.0 world imports neither storage nor variables")
            }
        },
        phase: match refusal.phase {
            super::Phase::Running => types::Phase::Running,
            super::Phase::Terminating => types::Phase::Terminating,
            super::Phase::Terminated => types::Phase::Terminated,
        },
        reason: refusal.reason,
    }
}

type Answer<T> = wasmtime::Result<Result<T, types::Refusal>>;

/// A current host function's answer, its refusal as 0.1.0 words it.
fn answer<T>(answer: wasmtime::Result<Result<T, super::Refusal>>) -> Answer<T> {
    answer.map(|result| result.map_err(refusal))
}

impl types::Host for crate::store::SessionState {}

impl logger::Host for LoggerView<'_> {
    fn write(&mut self, message: String) -> wasmtime::Result<()> {
        current::logger::Host::write(self, message)
    }
}

impl session::Host for SessionView<'_> {
    fn id(&mut self) -> wasmtime::Result<String> {
        current::session::Host::id(self)
    }

    fn access_url(&mut self) -> wasmtime::Result<String> {
        current::session::Host::access_url(self)
    }

    fn custom_data(&mut self) -> wasmtime::Result<String> {
        current::session::Host::custom_data(self)
    }

    fn set_custom_data(&mut self, data: String) -> Answer<()> {
        answer(current::session::Host::set_custom_data(self, data))
    }

    fn current_phase(&mut self) -> wasmtime::Result<types::Phase> {
        let phase = current::session::Host::current_phase(self)?;
        Ok(match phase {
            super::Phase::Running => types::Phase::Running,
            super::Phase::Terminating => types::Phase::Terminating,
            super::Phase::Terminated => types::Phase::Terminated,
        })
    }

    fn terminate(&mut self) -> Answer<()> {
        answer(current::session::Host::terminate(self))
    }
}

impl timers::Host for TimersView<'_> {
    fn set_timeout(&mut self, delay_ms: u32) -> Answer<TimerId> {
        answer(current::timers::Host::set_timeout(self, delay_ms))
    }

    fn set_interval(&mut self, period_ms: u32) -> Answer<TimerId> {
        answer(current::timers::Host::set_interval(self, period_ms))
    }

    fn clear(&mut self, id: TimerId) -> Answer<()> {
        answer(current::timers::Host::clear(self, id))
    }
}

impl calls::Host for CallsView<'_> {
    fn dial(
        &mut self,
        number: String,
        options: calls::DialOptions,
    ) -> Answer<Resource<CallHandle>> {
        let options = current::calls::DialOptions {
            caller_id: options.caller_id,
            display_name: options.display_name,
            headers: options.headers.into_iter().map(Into::into).collect(),
        };
        answer(current::calls::Host::dial(self, number, options))
    }
}

impl calls::HostCall for CallsView<'_> {
    fn id(&mut self, call: Resource<CallHandle>) -> wasmtime::Result<CallId> {
        current::calls::HostCall::id(self, call)
    }

    fn state(&mut self, call: Resource<CallHandle>) -> wasmtime::Result<calls::CallState> {
        use current::calls::CallState as S;
        Ok(match current::calls::HostCall::state(self, call)? {
            S::Alerting => calls::CallState::Alerting,
            S::Connected => calls::CallState::Connected,
            S::Disconnected => calls::CallState::Disconnected,
            S::Failed => calls::CallState::Failed,
        })
    }

    fn answer(&mut self, call: Resource<CallHandle>) -> Answer<()> {
        answer(current::calls::HostCall::answer(self, call))
    }

    fn reject(&mut self, call: Resource<CallHandle>, code: u16) -> Answer<()> {
        answer(current::calls::HostCall::reject(self, call, code))
    }

    fn hangup(&mut self, call: Resource<CallHandle>) -> Answer<()> {
        answer(current::calls::HostCall::hangup(self, call))
    }

    fn say(
        &mut self,
        call: Resource<CallHandle>,
        text: String,
        language: Option<String>,
    ) -> Answer<()> {
        answer(current::calls::HostCall::say(self, call, text, language))
    }

    fn play(&mut self, call: Resource<CallHandle>, url: String) -> Answer<()> {
        answer(current::calls::HostCall::play(self, call, url))
    }

    fn send_message(&mut self, call: Resource<CallHandle>, text: String) -> Answer<()> {
        answer(current::calls::HostCall::send_message(self, call, text))
    }

    fn drop(&mut self, call: Resource<CallHandle>) -> wasmtime::Result<()> {
        current::calls::HostCall::drop(self, call)
    }
}

impl websockets::Host for WebsocketsView<'_> {}

impl websockets::HostWebsocket for WebsocketsView<'_> {
    fn id(&mut self, socket: Resource<SocketHandle>) -> wasmtime::Result<SocketId> {
        current::websockets::HostWebsocket::id(self, socket)
    }

    fn send(&mut self, socket: Resource<SocketHandle>, message: websockets::Message) -> Answer<()> {
        let message = message.into();
        answer(current::websockets::HostWebsocket::send(
            self, socket, message,
        ))
    }

    fn close(&mut self, socket: Resource<SocketHandle>, code: u16, reason: String) -> Answer<()> {
        answer(current::websockets::HostWebsocket::close(
            self, socket, code, reason,
        ))
    }

    fn drop(&mut self, socket: Resource<SocketHandle>) -> wasmtime::Result<()> {
        current::websockets::HostWebsocket::drop(self, socket)
    }
}
