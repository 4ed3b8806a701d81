//! A session's store data: the resource table and the gate every capability
//! shares, each capability's own state (listed once, in [`factors!`]), and
//! the compute and memory budget the engine consults.

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, StoreContextMut};
use wasmtime_wasi::{WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

use crate::bindings::Phase;
use crate::bindings::scenario::types;
use crate::bindings::v0_1::sessionbox::scenario as v0_1;
use crate::budget::{Budget, at_epoch_deadline};
use crate::capabilities::calls::Calls;
use crate::capabilities::http::Http;
use crate::capabilities::logger::Logger;
use crate::capabilities::session::SessionFacts;
use crate::capabilities::storage::Storage;
use crate::capabilities::timers::Timers;
use crate::capabilities::variables::AppVariables;
use crate::capabilities::wasi::Wasi;
use crate::capabilities::websockets::Websockets;
use crate::capabilities::{Common, Factor, Gate, SessionContext, WasiStore};
use crate::log::SessionLog;
use crate::metrics::Metrics;

/// The data of one session's `Store`.
pub struct SessionState {
    table: ResourceTable,
    gate: Gate,
    pub(crate) factors: Factors,
    pub(crate) budget: Budget,
    pub(crate) log: SessionLog,
    pub(crate) metrics: Arc<Metrics>,
}

/// The capabilities, one line each: a field of [`Factors`] holding its
/// per-session state, linked through its own view of the store, told when
/// the session begins terminating (in this order).
macro_rules! factors {
    ($($name:ident: $factor:ty,)*) => {
        pub(crate) struct Factors {
            $(pub $name: $factor,)*
        }

        impl Factors {
            fn new(cx: &SessionContext<'_>) -> Self {
                Factors { $($name: <$factor as Factor>::new(cx),)* }
            }

            fn terminating(&mut self) {
                $(self.$name.terminating();)*
            }

            fn handler_begins(&mut self) {
                $(self.$name.handler_begins();)*
            }
        }

        fn link_factors(linker: &mut Linker<SessionState>) -> wasmtime::Result<()> {
            $(<$factor as Factor>::link(linker, |state: &mut SessionState| {
                let common = Common { gate: &mut state.gate, table: &mut state.table };
                state.factors.$name.view(common)
            })?;)*
            Ok(())
        }
    };
}

factors! {
    logger: Logger,
    session: SessionFacts,
    timers: Timers,
    calls: Calls,
    websockets: Websockets,
    http: Http,
    storage: Storage,
    variables: AppVariables,
    wasi: Wasi,
}

/// The linker every scenario is pre-linked with.
pub(crate) fn linker(engine: &Engine) -> wasmtime::Result<Linker<SessionState>> {
    let mut linker = Linker::new(engine);
    link_factors(&mut linker)?;
    types::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
    v0_1::types::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
    Ok(linker)
}

impl SessionState {
    /// A new session's state. `table` is sized by the caller.
    pub(crate) fn new(cx: &SessionContext<'_>, table: ResourceTable, budget: Budget) -> Self {
        SessionState {
            table,
            gate: Gate::new(cx.ledger.clone()),
            factors: Factors::new(cx),
            budget,
            log: cx.log.clone(),
            metrics: Arc::clone(cx.metrics),
        }
    }

    pub(crate) fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Splits the state into the gate and table every capability shares,
    /// and the capabilities.
    pub(crate) fn parts(&mut self) -> (Common<'_>, &mut Factors) {
        let common = Common {
            gate: &mut self.gate,
            table: &mut self.table,
        };
        (common, &mut self.factors)
    }

    /// A handler is about to run: a fresh compute budget, and what the
    /// capabilities count per handler starts over.
    pub(crate) fn begin_handler(&mut self) {
        self.budget.reset();
        self.factors.handler_begins();
    }

    /// Enters Terminating: what the capabilities hold (timers, calls,
    /// sockets) ends.
    pub(crate) fn begin_terminating(&mut self) {
        self.gate.set_phase(Phase::Terminating);
        self.factors.terminating();
    }

    /// Enters Terminated: only the logger works.
    pub(crate) fn begin_terminated(&mut self) {
        self.gate.set_phase(Phase::Terminated);
    }

    /// The engine's hooks into the budget: memory growth, and the epoch
    /// deadline (preemption and the compute limit).
    pub(crate) fn install_budget(store: &mut wasmtime::Store<SessionState>) {
        store.limiter(|state| &mut state.budget);
        store.epoch_deadline_callback(|mut store: StoreContextMut<'_, SessionState>| {
            at_epoch_deadline(&mut store.data_mut().budget)
        });
    }
}

impl types::Host for SessionState {}

impl WasiView for SessionState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let (common, factors) = self.parts();
        factors.wasi.view(common)
    }
}

impl WasiHttpView for SessionState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        let (common, factors) = self.parts();
        factors.http.view(common)
    }
}

impl WasiStore for SessionState {}
