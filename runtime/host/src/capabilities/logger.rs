//! `logger`: the one capability that works in every phase.

use super::SessionState;
use crate::bindings::sessionbox::scenario::logger;
use crate::log::LogSource;

impl logger::Host for SessionState {
    fn write(&mut self, message: String) -> wasmtime::Result<()> {
        self.meter.count_use(crate::bindings::Capability::Logger);
        self.log.write(LogSource::Scenario, &message);
        Ok(())
    }
}
