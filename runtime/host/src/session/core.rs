//! A session's core: its store and instance, and how an event becomes a
//! handler call. Whoever holds the core runs the session's handlers: its own
//! task, or a caller that found the session idle (see [`super::mailbox`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::time::Instant;
use wasmtime::Store;
use wasmtime::component::ResourceTableError;

use super::event::{Event, TerminateCause};
use super::record::FinishReason;
use super::{Notice, Observer, SessionError};
use crate::bindings::{CallId, HttpRequestEvent, HttpResponse, StartedEvent, TimerId};
use crate::budget::{ComputeLimitExceeded, MemoryLimit};
use crate::cpu::FIRST_SLICE_TICKS;
use crate::guest::{AppEvents, EventKind, GuestCall};
use crate::limits::Limits;
use crate::log::LogSource;
use crate::scenario::Instance;
use crate::store::SessionState;

/// A resource for the guest that did not fit its table ends the session.
fn resource_table_full(error: ResourceTableError) -> Failure {
    Failure(FinishReason::Trapped {
        event: "host",
        trap: format!("resource table: {error}"),
    })
}

/// How a handler failed: the session ends with this.
pub(crate) struct Failure(pub FinishReason);

/// What a session wakes up for besides its queue.
pub(crate) enum Wakeup {
    Timer(TimerId),
    Unanswered(CallId),
    Idle,
}

pub(crate) struct Core {
    pub store: Store<SessionState>,
    instance: Instance,
    pub observer: Option<Observer>,
    limits: Arc<Limits>,
    /// Events delivered, by [`EventKind`] (`kind as usize`).
    delivered: [u64; EventKind::ALL.len()],
    /// When the scenario last got an event from outside (for the idle
    /// timeout).
    last_activity: Instant,
    /// How a handler run in a caller's task failed, for the session's task
    /// to end the session with.
    failure: Option<Failure>,
}

impl Core {
    pub fn new(
        store: Store<SessionState>,
        instance: Instance,
        observer: Option<Observer>,
        limits: Arc<Limits>,
    ) -> Self {
        Core {
            store,
            instance,
            observer,
            limits,
            delivered: [0; EventKind::ALL.len()],
            last_activity: Instant::now(),
            failure: None,
        }
    }

    /// Whether the session is to end: the scenario asked, or a handler
    /// failed.
    pub fn is_ending(&self) -> bool {
        self.failure.is_some() || self.store.data().factors.session.terminate_requested()
    }

    /// A failure a caller's handler left behind.
    pub fn take_failure(&mut self) -> Option<Failure> {
        self.failure.take()
    }

    /// The events delivered so far, by name.
    pub fn events_delivered(&self) -> BTreeMap<&'static str, u64> {
        EventKind::ALL
            .iter()
            .zip(self.delivered)
            .filter(|(_, count)| *count > 0)
            .map(|(kind, count)| (kind.name(), count))
            .collect()
    }

    pub async fn started(&mut self, custom_data: String) -> Result<(), Failure> {
        let session = &self.store.data().factors.session;
        let started = StartedEvent {
            session_id: session.id().to_owned(),
            access_url: session.access_url().to_owned(),
            custom_data,
        };
        self.deliver(GuestCall::Started(started)).await
    }

    /// Terminating, then (once the one request it may make is done)
    /// Terminated. Timers are cancelled, calls and sockets end first.
    pub async fn end(&mut self, cause: TerminateCause) -> Result<(), Failure> {
        self.store.data_mut().begin_terminating();
        let why = match cause {
            TerminateCause::Scenario => "terminate() called",
            TerminateCause::Idle => "idle timeout",
            TerminateCause::Host => "terminated by the host",
        };
        self.deliver(GuestCall::Terminating { why }).await?;

        let http_deadline = self.limits.http_total_timeout;
        let http = &self.store.data().factors.http;
        let _ = tokio::time::timeout(http_deadline, http.wait_idle()).await;

        self.store.data_mut().begin_terminated();
        self.deliver(GuestCall::Terminated).await
    }

    /// The earliest of: the next timer, the oldest unanswered call's limit,
    /// and (when the session has no calls) the idle timeout.
    pub fn next_wakeup(&self) -> Option<(Instant, Wakeup)> {
        let factors = &self.store.data().factors;
        let timer = factors
            .timers
            .next_due()
            .map(|(at, id)| (at, Wakeup::Timer(id)));
        let unanswered = factors
            .calls
            .next_unanswered()
            .map(|(at, call)| (at, Wakeup::Unanswered(call)));
        let idle = (factors.calls.live() == 0)
            .then(|| (self.last_activity + self.limits.idle_timeout, Wakeup::Idle));
        [timer, unanswered, idle]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
    }

    /// Does what a wake-up is for; says when it ends the session.
    pub async fn wake(&mut self, wakeup: Wakeup) -> Result<Option<TerminateCause>, Failure> {
        let factors = &mut self.store.data_mut().factors;
        let call = match wakeup {
            Wakeup::Timer(id) => factors.timers.fire(id),
            Wakeup::Unanswered(call) => factors.calls.unanswered(call),
            Wakeup::Idle => return Ok(Some(TerminateCause::Idle)),
        };
        self.deliver(call).await?;
        Ok(None)
    }

    /// Runs an HttpRequest in a caller's task: the answer is the caller's;
    /// a failure stays on the core for the session's task.
    pub async fn answer_http(
        &mut self,
        request: &HttpRequestEvent,
    ) -> Result<HttpResponse, SessionError> {
        let (answer, outcome) = self.http_request(request).await;
        if let Err(failure) = outcome {
            self.failure = Some(failure);
        }
        answer
    }

    /// Delivers one queued event, if the capability it concerns admits it.
    pub async fn dispatch(&mut self, event: Event) -> Result<(), Failure> {
        let (common, factors) = self.store.data_mut().parts();
        let admitted = match event {
            Event::HttpRequest { request, respond } => {
                let (answer, outcome) = self.http_request(&request).await;
                // The requester may have given up waiting; that is its business.
                let _ = respond.send(answer);
                return outcome;
            }
            Event::CallAlerting {
                call,
                incoming,
                connect,
            } => factors
                .calls
                .alerting(call, incoming, connect, common)
                .map_err(resource_table_full)?,
            Event::Call { call, event } => factors.calls.admit(call, event),
            Event::Socket(event) => factors
                .websockets
                .admit(event, factors.calls.live(), common.table)
                .map_err(resource_table_full)?,
            Event::Terminate(_) => unreachable!("handled by the session's task"),
        };
        match admitted {
            Some(call) => self.deliver(call).await,
            None => Ok(()),
        }
    }

    /// Runs HttpRequest: the answer for the requester (an answer over the
    /// size limit is refused), and whether the session goes on.
    async fn http_request(
        &mut self,
        request: &HttpRequestEvent,
    ) -> (Result<HttpResponse, SessionError>, Result<(), Failure>) {
        let detail = || {
            format!(
                "{} {} ({} bytes)",
                request.method,
                request.path,
                request.body.len()
            )
        };
        let outcome = self
            .run(EventKind::HttpRequest, detail, async |guest, store| {
                guest.http_request(store, request).await
            })
            .await;
        let limit = self.limits.http_answer_bytes;
        match outcome {
            Ok(response) if response.body.len() > limit => {
                let reason = format!(
                    "its answer is {} bytes; the limit is {limit}",
                    response.body.len()
                );
                self.store.data().log.write(
                    LogSource::Host,
                    &format!("http-request answer refused: {reason}"),
                );
                (Err(SessionError::ScenarioFailed(reason)), Ok(()))
            }
            Ok(response) => (Ok(response), Ok(())),
            Err(Failure(reason)) => (
                Err(SessionError::ScenarioFailed(reason.to_string())),
                Err(Failure(reason)),
            ),
        }
    }

    /// Delivers one event to its handler.
    async fn deliver(&mut self, call: GuestCall) -> Result<(), Failure> {
        self.run(
            call.kind(),
            || call.detail(),
            async |guest, store| call.invoke(guest, store).await,
        )
        .await
    }

    /// Runs one handler with a fresh compute budget, announcing it first.
    async fn run<R>(
        &mut self,
        kind: EventKind,
        detail: impl FnOnce() -> String,
        handler: impl AsyncFnOnce(AppEvents<'_>, &mut Store<SessionState>) -> wasmtime::Result<R>,
    ) -> Result<R, Failure> {
        self.delivered[kind as usize] += 1;
        if let Some(observer) = &self.observer {
            let _ = observer.send(Notice::Event {
                name: kind.name(),
                detail: detail(),
            });
        }
        self.store.data_mut().begin_handler();
        if self.store.data().budget.lane().begin_handler() {
            // Its tenant is over its share: to the slow lane before it
            // computes (the lane's future moves at this yield).
            tokio::task::yield_now().await;
        }
        self.store.set_epoch_deadline(FIRST_SLICE_TICKS);
        let guest = AppEvents::of(&self.instance);
        let began = Instant::now();
        if kind.is_activity() {
            self.last_activity = began;
        }
        let outcome = handler(guest, &mut self.store).await;
        let elapsed = began.elapsed();
        let state = self.store.data();
        state.budget.lane().end_handler(elapsed);
        state.metrics.handler_seconds.observe(elapsed);
        state.metrics.delivered(kind);
        outcome.map_err(|error| Failure(self.classify(kind.handler(), error)))
    }

    /// Turns a failed handler into the session's finish reason.
    fn classify(&self, event: &'static str, error: wasmtime::Error) -> FinishReason {
        if error.downcast_ref::<ComputeLimitExceeded>().is_some() {
            return FinishReason::ComputeLimit {
                event,
                limit_ms: self.limits.handler_compute.as_millis() as u64,
            };
        }
        let mut trap = match error.downcast_ref::<wasmtime::Trap>() {
            Some(trap) => trap.to_string(),
            None => error.root_cause().to_string(),
        };
        match self.store.data().budget.memory_refused {
            Some(MemoryLimit::Session) => trap.push_str(&format!(
                " (after growing memory past the {} MiB limit was refused)",
                self.limits.memory_bytes >> 20
            )),
            Some(MemoryLimit::Shared) => trap.push_str(
                " (after growing memory was refused: the memory its tenant's sessions share is in use)",
            ),
            None => {}
        }
        tracing::debug!(event, "scenario failed: {error:?}");
        FinishReason::Trapped { event, trap }
    }
}
