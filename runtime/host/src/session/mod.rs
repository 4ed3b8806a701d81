//! A session: one store, one instance, its event queue and its phase.
//!
//! A session delivers its events one at a time, each handler running to
//! completion, in arrival order (the VoxEngine model). Its [`core`] (store
//! and instance) belongs to a tokio task (the [`driver`]) that walks the
//! phases and delivers queued events, timers and deadlines; while that task
//! is idle, an HttpRequest runs in the caller's own task instead (see
//! [`mailbox`]). Everything outside talks to a session through a
//! [`SessionHandle`].

mod core;
mod driver;
mod event;
mod mailbox;
mod record;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::{mpsc, oneshot, watch};

pub(crate) use self::core::Core;
pub(crate) use driver::Driver;
pub(crate) use event::Event;
pub use event::TerminateCause;
use mailbox::Borrowed;
pub(crate) use mailbox::EventSink;
pub(crate) use mailbox::Mailbox;
pub use record::{FinishReason, SessionRecord, TerminateCauseName};

use crate::bindings::{CallId, Header, HttpRequestEvent, HttpResponse, Message, SocketId};
use crate::capabilities::calls::LiveCalls;
use crate::capabilities::websockets::{SocketCommand, SocketEvent};
use crate::cpu::LaneCell;
use crate::log::{LineSink, LogContents, LogLine, SessionLog};
use crate::telephony::{CallEvent, ConnectCall, InProcessLink, IncomingCall};

/// What a session tells its observer as it happens.
#[derive(Debug, Clone)]
pub enum Notice {
    /// An event is about to be delivered to the scenario.
    Event { name: &'static str, detail: String },
    /// A line was added to the session log.
    Log(LogLine),
    /// The session ended; this is its record.
    Finished(Arc<SessionRecord>),
}

/// Where a session sends its [`Notice`]s.
pub type Observer = mpsc::UnboundedSender<Notice>;

/// Passes each log line on to `observer` as a notice.
pub(crate) fn log_lines_to(observer: Observer) -> LineSink {
    // The observer may have gone away; the log itself is what counts.
    Box::new(move |line: &LogLine| {
        let _ = observer.send(Notice::Log(line.clone()));
    })
}

/// Called once with a session's record when it finishes.
pub type FinishHook = Box<dyn FnOnce(Arc<SessionRecord>) + Send>;

/// Why an event could not be delivered to a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionError {
    /// The session's event queue is full.
    Busy,
    /// The session has ended, or is ending and takes no more events.
    Finished,
    /// The session refused the request; the reason says why.
    Refused(String),
    /// The scenario failed while handling the event.
    ScenarioFailed(String),
    /// The session's task ended without a record (a Sessionbox bug).
    Lost,
    /// The session has no call of this id that is not over.
    UnknownCall(CallId),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Busy => f.write_str("the session's event queue is full"),
            SessionError::Finished => f.write_str("the session has finished"),
            SessionError::Refused(reason) => write!(f, "refused: {reason}"),
            SessionError::ScenarioFailed(reason) => write!(f, "the scenario failed: {reason}"),
            SessionError::Lost => f.write_str("the session ended without a record"),
            SessionError::UnknownCall(call) => write!(f, "the session has no live call {call}"),
        }
    }
}

impl std::error::Error for SessionError {}

/// A WebSocket the session accepted: its id, and what the scenario asks of it.
pub struct WebsocketLink {
    pub id: SocketId,
    pub commands: mpsc::Receiver<SocketCommand>,
}

/// How the world outside reaches a live session. Cheap to clone.
#[derive(Clone)]
pub struct SessionHandle(Arc<HandleInner>);

struct HandleInner {
    id: String,
    mailbox: Arc<Mailbox>,
    /// Ids for calls and sockets, which the outside names before the
    /// session has seen them.
    next_id: AtomicU32,
    log: SessionLog,
    finished: watch::Receiver<Option<Arc<SessionRecord>>>,
    /// The session's calls that are not over: the far end's actions name one.
    calls: Arc<LiveCalls>,
    /// Where a handler run in a caller's task computes.
    lane: Arc<LaneCell>,
}

/// Commands a socket's connection may have waiting before it falls behind.
const SOCKET_COMMAND_QUEUE: usize = 64;

impl SessionHandle {
    pub(crate) fn new(
        id: String,
        mailbox: Arc<Mailbox>,
        log: SessionLog,
        finished: watch::Receiver<Option<Arc<SessionRecord>>>,
        calls: Arc<LiveCalls>,
        lane: Arc<LaneCell>,
    ) -> Self {
        SessionHandle(Arc::new(HandleInner {
            id,
            mailbox,
            next_id: AtomicU32::new(1),
            log,
            finished,
            calls,
            lane,
        }))
    }

    pub fn id(&self) -> &str {
        &self.0.id
    }

    fn next_id(&self) -> u32 {
        self.0.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Delivers an HttpRequest; the scenario's return value is the answer.
    /// An idle session runs the handler in the caller's task. A request
    /// shared (an `Arc`) is not copied: the same one can go to many sessions.
    pub async fn http_request(
        &self,
        request: impl Into<Arc<HttpRequestEvent>>,
    ) -> Result<HttpResponse, SessionError> {
        let request = request.into();
        let mailbox = &self.0.mailbox;
        if let Some(mut core) = mailbox.take_idle()? {
            let running = self.0.lane.laned(async move {
                let answer = core.answer_http(&request).await;
                (core, answer)
            });
            return Borrowed::new(Arc::clone(mailbox), running).await;
        }
        let (respond, response) = oneshot::channel();
        mailbox.post(Event::HttpRequest { request, respond })?;
        response.await.unwrap_or(Err(SessionError::Finished))
    }

    /// An incoming call without a network behind it (from the API or the
    /// command line) reaches the session (CallAlerting). Returns the id its
    /// later events are named by.
    pub fn incoming_call(&self, incoming: IncomingCall) -> Result<CallId, SessionError> {
        self.incoming_call_via(
            incoming,
            Box::new(|context| Box::new(InProcessLink(context))),
        )
    }

    /// An incoming call reaches the session (CallAlerting); `connect` makes
    /// its far end when the session takes it (not at all when this fails).
    pub fn incoming_call_via(
        &self,
        incoming: IncomingCall,
        connect: ConnectCall,
    ) -> Result<CallId, SessionError> {
        let call = self.next_id();
        self.0.calls.add(call);
        let posted = self.0.mailbox.post(Event::CallAlerting {
            call,
            incoming,
            connect,
        });
        if posted.is_err() {
            self.0.calls.remove(call);
        }
        posted.map(|()| call)
    }

    /// The far end hung up.
    pub fn remote_hangup(&self, call: CallId) -> Result<(), SessionError> {
        self.post_for_call(call, CallEvent::Disconnected)
    }

    /// The far end gave up or the network failed the call before it connected.
    pub fn remote_failed(&self, call: CallId, code: u16, reason: &str) -> Result<(), SessionError> {
        let reason = reason.to_owned();
        self.post_for_call(call, CallEvent::Failed { code, reason })
    }

    /// The far end pressed a key.
    pub fn remote_tone(&self, call: CallId, tone: &str) -> Result<(), SessionError> {
        self.post_for_call(call, CallEvent::Tone(tone.to_owned()))
    }

    /// The far end put the call on hold (`true`) or took it off.
    pub fn remote_hold(&self, call: CallId, held: bool) -> Result<(), SessionError> {
        self.post_for_call(call, CallEvent::Held(held))
    }

    /// The far end sent an in-call message.
    pub fn remote_message(&self, call: CallId, text: &str) -> Result<(), SessionError> {
        self.post_for_call(call, CallEvent::Message(text.to_owned()))
    }

    /// Queues the far end's `event` on `call`, if the call is not over.
    fn post_for_call(&self, call: CallId, event: CallEvent) -> Result<(), SessionError> {
        if !self.0.calls.contains(call) {
            return Err(SessionError::UnknownCall(call));
        }
        self.0.mailbox.post(Event::Call { call, event })
    }

    /// A client asks to open a WebSocket on the access URL. Resolves when the
    /// session accepted it (WebSocket delivered) or refused it
    /// (NewWebSocketFailed delivered).
    pub async fn open_websocket(
        &self,
        path: String,
        headers: Vec<Header>,
    ) -> Result<WebsocketLink, SessionError> {
        let socket = self.next_id();
        let (commands, commands_rx) = mpsc::channel(SOCKET_COMMAND_QUEUE);
        let (accepted, decision) = oneshot::channel();
        self.0.mailbox.post(Event::Socket(SocketEvent::Opened {
            socket,
            path,
            headers,
            commands,
            accepted,
        }))?;
        match decision.await {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => return Err(SessionError::Refused(reason)),
            Err(_) => return Err(SessionError::Finished),
        }
        Ok(WebsocketLink {
            id: socket,
            commands: commands_rx,
        })
    }

    /// The client sent a message on a socket.
    pub fn websocket_message(
        &self,
        socket: SocketId,
        message: Message,
    ) -> Result<(), SessionError> {
        self.0
            .mailbox
            .post(Event::Socket(SocketEvent::Message { socket, message }))
    }

    /// The client closed a socket.
    pub fn websocket_closed(
        &self,
        socket: SocketId,
        code: u16,
        reason: String,
    ) -> Result<(), SessionError> {
        self.0.mailbox.post(Event::Socket(SocketEvent::Closed {
            socket,
            code,
            reason,
        }))
    }

    /// Asks the session to end (Terminating, then Terminated).
    pub fn terminate(&self) -> Result<(), SessionError> {
        self.0.mailbox.post(Event::Terminate(TerminateCause::Host))
    }

    /// The session's log so far (a live session's; a finished one's is in
    /// its record).
    pub fn log(&self) -> LogContents {
        self.0.log.snapshot()
    }

    /// The session's record once it has finished.
    pub fn record(&self) -> Option<Arc<SessionRecord>> {
        self.0.finished.borrow().clone()
    }

    /// Waits for the session to finish and returns its record.
    pub async fn finished(&self) -> Result<Arc<SessionRecord>, SessionError> {
        let mut finished = self.0.finished.clone();
        let record = finished
            .wait_for(Option::is_some)
            .await
            .map_err(|_| SessionError::Lost)?;
        Ok(Arc::clone(record.as_ref().expect("waited for Some")))
    }
}
