//! `logger`: the one capability that works in every phase.

use wasmtime::component::{HasData, Linker};

use super::{Common, Factor, Gate, Phases, SessionContext, WasiStore};
use crate::bindings::Capability;
use crate::bindings::scenario::logger;
use crate::bindings::v0_1::sessionbox::scenario as v0_1;
use crate::log::{LogSource, SessionLog};

pub struct Logger {
    log: SessionLog,
}

pub struct LoggerView<'a> {
    log: &'a SessionLog,
    gate: &'a Gate,
}

impl HasData for Logger {
    type Data<'a> = LoggerView<'a>;
}

impl Factor for Logger {
    type View = Logger;

    fn new(cx: &SessionContext<'_>) -> Self {
        Logger {
            log: cx.log.clone(),
        }
    }

    fn view<'a>(&'a mut self, common: Common<'a>) -> LoggerView<'a> {
        LoggerView {
            log: &self.log,
            gate: common.gate,
        }
    }

    fn link<T: WasiStore>(
        linker: &mut Linker<T>,
        get: fn(&mut T) -> LoggerView<'_>,
    ) -> wasmtime::Result<()> {
        logger::add_to_linker::<T, Logger>(linker, get)?;
        v0_1::logger::add_to_linker::<T, Logger>(linker, get)
    }
}

impl logger::Host for LoggerView<'_> {
    fn write(&mut self, message: String) -> wasmtime::Result<()> {
        // Never refused; counted like every use.
        let _ = self
            .gate
            .admit(Capability::Logger, Phases::Every, || Ok(()));
        self.log.write(LogSource::Scenario, &message);
        Ok(())
    }
}
