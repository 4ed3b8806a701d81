//! A session's core: its store and instance, and how an event becomes a
//! handler call. Whoever holds the core runs the session's handlers: its own
//! task, or a caller that found the session idle (see [`super::mailbox`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::time::Instant;
use wasmtime::Store;
use wasmtime::component::Resource;

use super::budget::{ComputeLimitExceeded, MemoryLimit};
use super::event::{Event, EventKind, TerminateCause};
use super::record::FinishReason;
use super::{Notice, Observer, SessionError};
use crate::bindings::exports::sessionbox::scenario::app_events::Guest;
use crate::bindings::{
    CallAlertingEvent, HttpRequestEvent, HttpResponse, Phase, Scenario as ScenarioBindings,
    StartedEvent, WebsocketEvent, WebsocketFailedEvent,
};
use crate::capabilities::SessionState;
use crate::capabilities::calls::CallHandle;
use crate::capabilities::websockets::SocketHandle;
use crate::cpu::FIRST_SLICE_TICKS;
use crate::limits::Limits;
use crate::log::LogSource;

/// How a handler failed: the session ends with this.
pub(crate) struct Failure(pub FinishReason);

/// What a session wakes up for besides its queue.
pub(crate) enum Wakeup {
    Timer(u32),
    Unanswered(u32),
    Idle,
}

pub(crate) struct Core {
    pub store: Store<SessionState>,
    bindings: ScenarioBindings,
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
        bindings: ScenarioBindings,
        observer: Option<Observer>,
        limits: Arc<Limits>,
    ) -> Self {
        Core {
            store,
            bindings,
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
        self.failure.is_some() || self.store.data().session.terminate_requested
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
        let started = {
            let session = &self.store.data().session;
            StartedEvent {
                session_id: session.id.clone(),
                access_url: session.access_url.clone(),
                custom_data,
            }
        };
        let detail = || format!("custom-data={:?}", started.custom_data);
        self.deliver(EventKind::Started, detail, async |guest, store| {
            guest.call_started(store, &started).await
        })
        .await
    }

    /// Terminating, then (once the one request it may make is done)
    /// Terminated. Timers are cancelled, calls and sockets end first.
    pub async fn end(&mut self, cause: TerminateCause) -> Result<(), Failure> {
        let state = self.store.data_mut();
        state.session.phase = Phase::Terminating;
        state.timers.cancel_all();
        state.calls.end_all();
        state.sockets.close_all();
        let why = match cause {
            TerminateCause::Scenario => "terminate() called",
            TerminateCause::Idle => "idle timeout",
            TerminateCause::Host => "terminated by the host",
        };
        self.deliver(
            EventKind::Terminating,
            || why.into(),
            async |guest, store| guest.call_terminating(store).await,
        )
        .await?;

        let http_deadline = self.limits.http_total_timeout;
        let _ = tokio::time::timeout(http_deadline, self.store.data().http.wait_idle()).await;

        self.store.data_mut().session.phase = Phase::Terminated;
        self.deliver(EventKind::Terminated, String::new, async |guest, store| {
            guest.call_terminated(store).await
        })
        .await
    }

    /// The earliest of: the next timer, the oldest unanswered call's limit,
    /// and (when the session has no calls) the idle timeout.
    pub fn next_wakeup(&self) -> Option<(Instant, Wakeup)> {
        let state = self.store.data();
        let timer = state
            .timers
            .next_due()
            .map(|(at, id)| (at, Wakeup::Timer(id)));
        let unanswered = state
            .calls
            .next_unanswered(self.limits.unanswered_call)
            .map(|(at, call)| (at, Wakeup::Unanswered(call)));
        let idle = (state.calls.live() == 0)
            .then(|| (self.last_activity + self.limits.idle_timeout, Wakeup::Idle));
        [timer, unanswered, idle]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
    }

    /// Does what a wake-up is for; says when it ends the session.
    pub async fn wake(&mut self, wakeup: Wakeup) -> Result<Option<TerminateCause>, Failure> {
        match wakeup {
            Wakeup::Timer(id) => {
                self.store.data_mut().timers.fired(id);
                self.deliver(
                    EventKind::TimerFired,
                    || format!("timer={id}"),
                    async |guest, store| guest.call_timer_fired(store, id).await,
                )
                .await?;
            }
            Wakeup::Unanswered(call) => {
                let calls = &mut self.store.data_mut().calls;
                calls.drop_unanswered(call);
                calls.on_ended(call, true);
                let reason = format!(
                    "not answered within {} ms",
                    self.limits.unanswered_call.as_millis()
                );
                self.deliver(
                    EventKind::CallFailed,
                    || format!("call={call} code=408 {reason}"),
                    async |guest, store| guest.call_call_failed(store, call, 408, &reason).await,
                )
                .await?;
            }
            Wakeup::Idle => return Ok(Some(TerminateCause::Idle)),
        }
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

    /// Delivers one queued event.
    pub async fn dispatch(&mut self, event: Event) -> Result<(), Failure> {
        match event {
            Event::CallAlerting {
                call,
                incoming,
                connect,
            } => {
                let state = self.store.data_mut();
                let link = connect(state.call_context(call));
                if let Err(reason) = state.calls.admit(call, link) {
                    state.refuse(crate::bindings::Capability::Calls, reason);
                    return Ok(());
                }
                let handle = self.push_resource(CallHandle { id: call })?;
                let detail = format!(
                    "call={call} from={} to={}",
                    incoming.caller_id, incoming.destination
                );
                let event = CallAlertingEvent {
                    call: handle,
                    caller_id: incoming.caller_id,
                    destination: incoming.destination,
                    display_name: incoming.display_name,
                    headers: incoming.headers,
                };
                self.deliver(
                    EventKind::CallAlerting,
                    move || detail,
                    async |guest, store| guest.call_call_alerting(store, &event).await,
                )
                .await
            }
            Event::HttpRequest { request, respond } => {
                let (answer, outcome) = self.http_request(&request).await;
                // The requester may have given up waiting; that is its business.
                let _ = respond.send(answer);
                outcome
            }
            Event::WebsocketOpened {
                socket,
                path,
                headers,
                commands,
                accepted,
            } => {
                let state = self.store.data();
                let allowed = state.calls.live() + self.limits.websockets_beyond_calls;
                if state.sockets.open_count() >= allowed {
                    let reason = format!(
                        "{allowed} incoming WebSockets are open, the limit (calls in the session + {})",
                        self.limits.websockets_beyond_calls
                    );
                    let _ = accepted.send(Err(SessionError::Refused(reason.clone())));
                    let event = WebsocketFailedEvent { reason };
                    return self
                        .deliver(
                            EventKind::NewWebSocketFailed,
                            || event.reason.clone(),
                            async |guest, store| {
                                guest.call_new_websocket_failed(store, &event).await
                            },
                        )
                        .await;
                }
                self.store.data_mut().sockets.add(socket, commands);
                let _ = accepted.send(Ok(()));
                let handle = self.push_resource(SocketHandle { id: socket })?;
                let detail = format!("socket={socket} {path}");
                let event = WebsocketEvent {
                    socket: handle,
                    path,
                    headers,
                };
                self.deliver(
                    EventKind::WebSocket,
                    move || detail,
                    async |guest, store| guest.call_websocket(store, &event).await,
                )
                .await
            }
            Event::WebsocketMessage { socket, message } => {
                if !self.store.data().sockets.is_open(socket) {
                    return Ok(());
                }
                let detail = || format!("socket={socket}");
                self.deliver(EventKind::WebSocketMessage, detail, async |guest, store| {
                    guest.call_websocket_message(store, socket, &message).await
                })
                .await
            }
            Event::WebsocketClosed {
                socket,
                code,
                reason,
            } => {
                if !self.store.data_mut().sockets.on_closed(socket) {
                    return Ok(());
                }
                let detail = format!("socket={socket} code={code}");
                self.deliver(
                    EventKind::WebSocketClosed,
                    move || detail,
                    async |guest, store| {
                        guest
                            .call_websocket_closed(store, socket, code, &reason)
                            .await
                    },
                )
                .await
            }
            Event::CallConnected { call } => {
                if !self.store.data_mut().calls.on_connected(call) {
                    return Ok(());
                }
                self.deliver(
                    EventKind::CallConnected,
                    move || format!("call={call}"),
                    async |guest, store| guest.call_call_connected(store, call).await,
                )
                .await
            }
            Event::CallDisconnected { call } => {
                if !self.store.data_mut().calls.on_ended(call, false) {
                    return Ok(());
                }
                self.deliver(
                    EventKind::CallDisconnected,
                    move || format!("call={call}"),
                    async |guest, store| guest.call_call_disconnected(store, call).await,
                )
                .await
            }
            Event::CallFailed { call, code, reason } => {
                if !self.store.data_mut().calls.on_ended(call, true) {
                    return Ok(());
                }
                let detail = format!("call={call} code={code} {reason}");
                self.deliver(
                    EventKind::CallFailed,
                    move || detail,
                    async |guest, store| guest.call_call_failed(store, call, code, &reason).await,
                )
                .await
            }
            Event::CallMessageReceived { call, text } => {
                if !self.store.data().calls.is_connected(call) {
                    return Ok(());
                }
                let detail = format!("call={call} ({} bytes)", text.len());
                self.deliver(
                    EventKind::CallMessageReceived,
                    move || detail,
                    async |guest, store| guest.call_call_message_received(store, call, &text).await,
                )
                .await
            }
            Event::CallToneReceived { call, tone } => {
                if !self.store.data().calls.is_connected(call) {
                    return Ok(());
                }
                let detail = format!("call={call} tone={tone}");
                self.deliver(
                    EventKind::CallToneReceived,
                    move || detail,
                    async |guest, store| guest.call_call_tone_received(store, call, &tone).await,
                )
                .await
            }
            Event::CallPlaybackFinished { call } => {
                if !self.store.data().calls.is_connected(call) {
                    return Ok(());
                }
                let detail = format!("call={call}");
                self.deliver(
                    EventKind::CallPlaybackFinished,
                    move || detail,
                    async |guest, store| guest.call_call_playback_finished(store, call).await,
                )
                .await
            }
            Event::Terminate(_) => unreachable!("handled by the session's task"),
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
            .deliver(EventKind::HttpRequest, detail, async |guest, store| {
                guest.call_http_request(store, request).await
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

    /// Hands the guest a new resource.
    fn push_resource<T: Send + 'static>(&mut self, value: T) -> Result<Resource<T>, Failure> {
        self.store.data_mut().table.push(value).map_err(|e| {
            Failure(FinishReason::Trapped {
                event: "host",
                trap: format!("resource table: {e}"),
            })
        })
    }

    /// Runs one handler with a fresh compute budget, announcing it first.
    async fn deliver<R>(
        &mut self,
        kind: EventKind,
        detail: impl FnOnce() -> String,
        handler: impl AsyncFnOnce(&Guest, &mut Store<SessionState>) -> wasmtime::Result<R>,
    ) -> Result<R, Failure> {
        self.delivered[kind as usize] += 1;
        if let Some(observer) = &self.observer {
            let _ = observer.send(Notice::Event {
                name: kind.name(),
                detail: detail(),
            });
        }
        self.store.data_mut().budget.reset();
        if self.store.data().budget.lane().begin_handler() {
            // Its tenant is over its share: to the slow lane before it
            // computes (the lane's future moves at this yield).
            tokio::task::yield_now().await;
        }
        self.store.set_epoch_deadline(FIRST_SLICE_TICKS);
        let guest = self.bindings.sessionbox_scenario_app_events();
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
