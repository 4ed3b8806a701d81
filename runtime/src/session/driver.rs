//! The session task: delivers events to the instance one at a time and walks
//! the phases running -> terminating -> terminated.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use wasmtime::Store;
use wasmtime::component::Resource;

use super::budget::{ComputeLimitExceeded, MemoryLimit};
use super::event::{Event, EventKind, TerminateCause};
use super::record::{FinishReason, SessionRecord};
use super::{Notice, Observer, SessionError};
use crate::bindings::exports::sessionbox::scenario::app_events::Guest;
use crate::bindings::{
    CallAlertingEvent, Phase, Scenario as ScenarioBindings, StartedEvent, WebsocketEvent,
    WebsocketFailedEvent,
};
use crate::capabilities::SessionState;
use crate::capabilities::calls::CallHandle;
use crate::capabilities::websockets::SocketHandle;
use crate::limits::Limits;
use crate::log::LogSource;
use crate::metrics::FinishLabels;
use crate::runtime::FinishHook;

/// How a handler failed: the session ends with this.
struct Failure(FinishReason);

/// What the session loop wakes up for besides its queue.
enum Wakeup {
    Timer(u32),
    Unanswered(u32),
    Idle,
}

pub(crate) struct Driver {
    store: Store<SessionState>,
    bindings: ScenarioBindings,
    queue: mpsc::Receiver<Event>,
    observer: Option<Observer>,
    on_finish: Option<FinishHook>,
    scenario: String,
    started_at: SystemTime,
    finished: watch::Sender<Option<Arc<SessionRecord>>>,
    limits: Arc<Limits>,
    /// The session's pool slot, held until its store is gone.
    capacity: tokio::sync::OwnedSemaphorePermit,
    events: BTreeMap<&'static str, u64>,
    last_activity: Instant,
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store<SessionState>,
        bindings: ScenarioBindings,
        queue: mpsc::Receiver<Event>,
        observer: Option<Observer>,
        on_finish: Option<FinishHook>,
        scenario: String,
        finished: watch::Sender<Option<Arc<SessionRecord>>>,
        limits: Arc<Limits>,
        capacity: tokio::sync::OwnedSemaphorePermit,
    ) -> Self {
        Driver {
            store,
            bindings,
            queue,
            observer,
            on_finish,
            scenario,
            started_at: SystemTime::now(),
            finished,
            limits,
            capacity,
            events: BTreeMap::new(),
            last_activity: Instant::now(),
        }
    }

    /// Runs the session to its end and publishes its record.
    pub async fn run(mut self, custom_data: String) {
        let finish_reason = match self.lifecycle(custom_data).await {
            Ok(cause) => FinishReason::Terminated {
                cause: cause.into(),
            },
            Err(Failure(reason)) => reason,
        };
        self.finish(finish_reason);
    }

    async fn lifecycle(&mut self, custom_data: String) -> Result<TerminateCause, Failure> {
        let started = {
            let session = &self.store.data().session;
            StartedEvent {
                session_id: session.id.clone(),
                access_url: session.access_url.clone(),
                custom_data,
            }
        };
        let detail = format!("custom-data={:?}", started.custom_data);
        self.deliver(
            EventKind::Started,
            move || detail,
            async |guest, store| guest.call_started(store, &started).await,
        )
        .await?;

        let cause = self.run_until_terminating().await?;
        self.enter_terminating();
        let why = match cause {
            TerminateCause::Scenario => "terminate() called",
            TerminateCause::Idle => "idle timeout",
            TerminateCause::Host => "terminated by the host",
        };
        self.deliver(
            EventKind::Terminating,
            move || why.into(),
            async |guest, store| guest.call_terminating(store).await,
        )
        .await?;

        // Terminated waits for the one request Terminating may make.
        let http_deadline = self.limits.http_total_timeout;
        let _ = tokio::time::timeout(http_deadline, self.store.data().http.wait_idle()).await;

        self.store.data_mut().session.phase = Phase::Terminated;
        self.deliver(EventKind::Terminated, String::new, async |guest, store| {
            guest.call_terminated(store).await
        })
        .await?;
        Ok(cause)
    }

    /// Delivers queued events, timers and deadlines until the session is to
    /// terminate, and says why.
    async fn run_until_terminating(&mut self) -> Result<TerminateCause, Failure> {
        loop {
            if self.store.data().session.terminate_requested {
                return Ok(TerminateCause::Scenario);
            }
            let wakeup = self.next_wakeup();
            let sleep = async {
                match &wakeup {
                    Some((at, _)) => tokio::time::sleep_until(*at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                event = self.queue.recv() => match event {
                    // Every handle is gone: nobody can reach the session.
                    None => return Ok(TerminateCause::Host),
                    Some(Event::Terminate(cause)) => return Ok(cause),
                    Some(event) => {
                        if event.is_activity() {
                            self.last_activity = Instant::now();
                        }
                        self.dispatch(event).await?;
                    }
                },
                () = sleep => match wakeup.map(|(_, wakeup)| wakeup) {
                    Some(Wakeup::Timer(id)) => self.fire_timer(id).await?,
                    Some(Wakeup::Unanswered(call)) => self.drop_unanswered(call).await?,
                    Some(Wakeup::Idle) => return Ok(TerminateCause::Idle),
                    None => unreachable!("a pending sleep never wakes"),
                },
            }
        }
    }

    /// The earliest of: the next timer, the oldest unanswered call's limit,
    /// and (when the session has no calls) the idle timeout.
    fn next_wakeup(&self) -> Option<(Instant, Wakeup)> {
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

    async fn fire_timer(&mut self, id: u32) -> Result<(), Failure> {
        self.store.data_mut().timers.fired(id);
        self.deliver(
            EventKind::TimerFired,
            move || format!("timer={id}"),
            async |guest, store| guest.call_timer_fired(store, id).await,
        )
        .await
    }

    async fn drop_unanswered(&mut self, call: u32) -> Result<(), Failure> {
        let limit = self.limits.unanswered_call;
        self.store.data_mut().calls.drop_unanswered(call);
        self.store.data_mut().calls.on_ended(call, true);
        let reason = format!("not answered within {} ms", limit.as_millis());
        self.deliver(
            EventKind::CallFailed,
            || format!("call={call} code=408 {reason}"),
            async |guest, store| guest.call_call_failed(store, call, 408, &reason).await,
        )
        .await
    }

    /// Delivers one event from the queue.
    async fn dispatch(&mut self, event: Event) -> Result<(), Failure> {
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
                        guest.call_http_request(store, &request).await
                    })
                    .await;
                let limit = self.limits.http_answer_bytes;
                let (answer, outcome) = match outcome {
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
                };
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
            Event::Terminate(_) => unreachable!("handled by the session loop"),
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

    /// The session ends: Terminating is next. Timers are cancelled, calls
    /// and sockets end, and the queue takes no more events.
    fn enter_terminating(&mut self) {
        let state = self.store.data_mut();
        state.session.phase = Phase::Terminating;
        state.timers.cancel_all();
        state.calls.end_all();
        state.sockets.close_all();
        self.queue.close();
    }

    /// Runs one handler with a fresh compute budget, announcing it first.
    async fn deliver<R>(
        &mut self,
        kind: EventKind,
        detail: impl FnOnce() -> String,
        handler: impl AsyncFnOnce(&Guest, &mut Store<SessionState>) -> wasmtime::Result<R>,
    ) -> Result<R, Failure> {
        *self.events.entry(kind.name()).or_default() += 1;
        if let Some(observer) = &self.observer {
            let name = kind.name();
            let _ = observer.send(Notice::Event {
                name,
                detail: detail(),
            });
        }
        self.store.data_mut().budget.reset();
        self.store.set_epoch_deadline(1);
        let guest = self.bindings.sessionbox_scenario_app_events();
        let began = std::time::Instant::now();
        let outcome = handler(guest, &mut self.store).await;
        let metrics = &self.store.data().metrics;
        metrics
            .handler_seconds
            .observe(began.elapsed().as_secs_f64());
        metrics.delivered(kind);
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

    fn finish(self, finish_reason: FinishReason) {
        let state = self.store.data();
        state.log.write(
            LogSource::Host,
            &format!("session finished: {finish_reason}"),
        );
        let mut capabilities = state.meter.clone();
        capabilities.merge(&state.http.meter());
        let record = Arc::new(SessionRecord {
            id: state.session.id.clone(),
            scenario: self.scenario,
            started_at: self.started_at,
            ended_at: SystemTime::now(),
            finish_reason,
            events: self.events,
            capabilities,
            log: state.log.take(),
        });
        let metrics = Arc::clone(&state.metrics);
        metrics.sessions_live.dec();
        metrics
            .sessions_finished
            .get_or_create(&FinishLabels {
                reason: record.finish_reason.label(),
            })
            .inc();
        // The instance, its memory and its pool slot are given back before
        // anyone hears the session ended: a start that follows finds room.
        drop(self.store);
        drop(self.capacity);
        // The hook runs first: whoever waits on the handle wakes to a world
        // where the hook has done its part (e.g. handed the record to storage).
        if let Some(on_finish) = self.on_finish {
            on_finish(Arc::clone(&record));
        }
        self.finished.send_replace(Some(Arc::clone(&record)));
        if let Some(observer) = &self.observer {
            let _ = observer.send(Notice::Finished(record));
        }
    }
}
