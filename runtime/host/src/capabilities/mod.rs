//! The host capabilities: one module each, as Spin keeps one "factor" per
//! capability. A capability implements [`Factor`]: it links its WIT
//! interface through its own view of the store (its state, the session's
//! [`Gate`] and resource table, nothing else), builds its per-session state
//! from a [`SessionContext`], says what Terminating does to it, and admits
//! (or not) the events that concern it. Every phase rule and every use or
//! refusal passes the gate. Registering one is a line in `crate::store`.

pub mod calls;
pub mod gate;
pub mod http;
pub mod logger;
pub mod session;
pub mod storage;
pub mod timers;
pub mod variables;
pub mod wasi;
pub mod websockets;

use std::sync::Arc;

use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime_wasi::WasiView;
use wasmtime_wasi_http::WasiHttpView;

pub use gate::{Gate, Ledger, Meter, Phases, Refused};

use crate::destination::HostRule;
use crate::limits::Limits;
use crate::log::SessionLog;
use crate::metrics::Metrics;
use crate::recording::RecordingStore;
use crate::shared_limits::SharedLimits;
use crate::telephony::{CallEvents, Dialer};

/// One host capability.
pub trait Factor: Sized + Send + 'static {
    /// What its host functions see of a session's store.
    type View: HasData;

    /// Its state for a new session.
    fn new(cx: &SessionContext<'_>) -> Self;

    /// Its view: its own state, and what every capability shares.
    fn view<'a>(&'a mut self, common: Common<'a>) -> <Self::View as HasData>::Data<'a>;

    /// Links its WIT interface; its host functions reach their view of the
    /// store's data through `get`.
    fn link<T: WasiStore>(
        linker: &mut Linker<T>,
        get: fn(&mut T) -> <Self::View as HasData>::Data<'_>,
    ) -> wasmtime::Result<()>;

    /// The session began terminating: what it still holds (timers, calls,
    /// sockets) ends now.
    fn terminating(&mut self) {}

    /// A handler is about to run: what is counted per handler starts over.
    fn handler_begins(&mut self) {}
}

/// What the sessions of one app share besides their scenario: its
/// key-value store (none: storage is refused as unavailable), its
/// variables, where its recordings are kept (none: recording is refused),
/// and the HTTP speech service its `say` uses (none: the node's flite).
#[derive(Clone, Default)]
pub struct AppState {
    pub storage: Option<storage::AppStorage>,
    pub variables: Arc<variables::Variables>,
    pub recordings: Option<Arc<dyn RecordingStore>>,
    pub tts_url: Option<Arc<str>>,
}

/// What every capability's view shares: the gate and the table of the
/// guest's resources.
pub struct Common<'a> {
    pub gate: &'a mut Gate,
    pub table: &'a mut ResourceTable,
}

/// What a capability may build its per-session state from.
pub struct SessionContext<'a> {
    pub id: &'a str,
    pub access_url: &'a str,
    pub custom_data: &'a str,
    pub limits: &'a Arc<Limits>,
    /// `limits.http_allow`, parsed.
    pub http_rules: &'a Arc<[HostRule]>,
    pub log: &'a SessionLog,
    pub ledger: &'a Ledger,
    pub metrics: &'a Arc<Metrics>,
    /// Limits the session shares with others (its tenant's).
    pub shared: Option<&'a Arc<SharedLimits>>,
    /// Places outbound calls.
    pub dialer: &'a Arc<dyn Dialer>,
    /// Where calls' far ends send their events.
    pub call_events: &'a Arc<dyn CallEvents>,
    /// The session's live calls, as its handle sees them.
    pub live_calls: &'a Arc<calls::LiveCalls>,
    /// What the session shares with the other sessions of its app.
    pub app: &'a AppState,
}

/// A store's data that the WASI pieces can link against: they take
/// wasmtime-wasi's and wasi-http's own views of it.
pub trait WasiStore: WasiView + WasiHttpView + Send + 'static {}

/// What a capability's unit tests start a session's state from: no engine,
/// no guest, calls answered in process, call events kept for the test.
#[cfg(test)]
pub(crate) mod fixture {
    use std::sync::{Arc, Mutex};

    use super::{AppState, Ledger, SessionContext, calls::LiveCalls};
    use crate::bindings::CallId;
    use crate::destination::HostRule;
    use crate::limits::Limits;
    use crate::log::SessionLog;
    use crate::metrics::Metrics;
    use crate::sync::MutexExt;
    use crate::telephony::{CallEvent, CallEvents, Dialer, InProcessDialer};

    /// Call events as the session's queue would receive them.
    #[derive(Default)]
    pub struct Received(Mutex<Vec<(CallId, CallEvent)>>);

    impl CallEvents for Received {
        fn send(&self, call: CallId, event: CallEvent) {
            self.0.locked().push((call, event));
        }
    }

    impl Received {
        pub fn take(&self) -> Vec<(CallId, CallEvent)> {
            std::mem::take(&mut self.0.locked())
        }
    }

    pub struct Fixture {
        pub limits: Arc<Limits>,
        rules: Arc<[HostRule]>,
        pub log: SessionLog,
        pub ledger: Ledger,
        metrics: Arc<Metrics>,
        dialer: Arc<dyn Dialer>,
        pub received: Arc<Received>,
        call_events: Arc<dyn CallEvents>,
        pub live_calls: Arc<LiveCalls>,
        pub app: AppState,
    }

    impl Fixture {
        pub fn new(limits: Limits) -> Self {
            let log = SessionLog::new(std::time::Instant::now(), 1000, 1 << 20, None);
            let metrics = Arc::<Metrics>::default();
            let received = Arc::<Received>::default();
            Fixture {
                limits: Arc::new(limits),
                rules: Arc::from([]),
                ledger: Ledger::new(log.clone(), Arc::clone(&metrics)),
                log,
                metrics,
                dialer: Arc::new(InProcessDialer),
                call_events: Arc::clone(&received) as Arc<dyn CallEvents>,
                received,
                live_calls: Arc::default(),
                app: AppState::default(),
            }
        }

        pub fn context(&self) -> SessionContext<'_> {
            SessionContext {
                id: "s",
                access_url: "",
                custom_data: "",
                limits: &self.limits,
                http_rules: &self.rules,
                log: &self.log,
                ledger: &self.ledger,
                metrics: &self.metrics,
                shared: None,
                dialer: &self.dialer,
                call_events: &self.call_events,
                live_calls: &self.live_calls,
                app: &self.app,
            }
        }

        pub fn gate(&self) -> super::Gate {
            super::Gate::new(self.ledger.clone())
        }

        /// The host's notes in the session log so far.
        pub fn log_lines(&self) -> Vec<String> {
            let lines = self.log.snapshot().lines;
            lines.into_iter().map(|line| line.text).collect()
        }
    }
}
