//! The entries a session's queue carries.

use tokio::sync::oneshot;

use super::SessionError;
use crate::bindings::{CallId, HttpRequestEvent, HttpResponse};
use crate::capabilities::websockets::SocketEvent;
use crate::telephony::{CallEvent, ConnectCall, IncomingCall};

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

/// One entry in a session's queue. Started is not here: it is always first.
pub(crate) enum Event {
    CallAlerting {
        call: CallId,
        incoming: IncomingCall,
        connect: ConnectCall,
    },
    /// What the far end of a call reported.
    Call {
        call: CallId,
        event: CallEvent,
    },
    HttpRequest {
        request: std::sync::Arc<HttpRequestEvent>,
        respond: oneshot::Sender<Result<HttpResponse, SessionError>>,
    },
    Socket(SocketEvent),
    Terminate(TerminateCause),
}
