//! `session`: facts about the session, its custom data, and `terminate()`.
//!
//! The getters are facts, not capabilities, and answer in every phase.
//! Setting custom data works until the session is terminated; `terminate()`
//! works while running (again and again, to the same effect).

use wasmtime::component::{HasData, Linker};

use super::{Common, Factor, Gate, Phases, SessionContext, WasiStore};
use crate::bindings::scenario::session;
use crate::bindings::v0_1::sessionbox::scenario as v0_1;
use crate::bindings::{Capability, Phase, Refusal};

/// What a session knows about itself.
pub struct SessionFacts {
    id: String,
    access_url: String,
    custom_data: String,
    custom_data_bytes: usize,
    /// Set by `terminate()`: the session enters Terminating when the current
    /// handler returns.
    terminate_requested: bool,
}

impl SessionFacts {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn access_url(&self) -> &str {
        &self.access_url
    }

    /// Whether the scenario called `terminate()`.
    pub fn terminate_requested(&self) -> bool {
        self.terminate_requested
    }
}

pub struct SessionView<'a> {
    facts: &'a mut SessionFacts,
    gate: &'a Gate,
}

impl HasData for SessionFacts {
    type Data<'a> = SessionView<'a>;
}

impl Factor for SessionFacts {
    type View = SessionFacts;

    fn new(cx: &SessionContext<'_>) -> Self {
        SessionFacts {
            id: cx.id.to_owned(),
            access_url: cx.access_url.to_owned(),
            custom_data: cx.custom_data.to_owned(),
            custom_data_bytes: cx.limits.custom_data_bytes,
            terminate_requested: false,
        }
    }

    fn view<'a>(&'a mut self, common: Common<'a>) -> SessionView<'a> {
        SessionView {
            facts: self,
            gate: common.gate,
        }
    }

    fn link<T: WasiStore>(
        linker: &mut Linker<T>,
        get: fn(&mut T) -> SessionView<'_>,
    ) -> wasmtime::Result<()> {
        session::add_to_linker::<T, SessionFacts>(linker, get)?;
        v0_1::session::add_to_linker::<T, SessionFacts>(linker, get)
    }
}

impl session::Host for SessionView<'_> {
    fn id(&mut self) -> wasmtime::Result<String> {
        Ok(self.facts.id.clone())
    }

    fn access_url(&mut self) -> wasmtime::Result<String> {
        Ok(self.facts.access_url.clone())
    }

    fn custom_data(&mut self) -> wasmtime::Result<String> {
        Ok(self.facts.custom_data.clone())
    }

    fn set_custom_data(&mut self, data: String) -> wasmtime::Result<Result<(), Refusal>> {
        let limit = self.facts.custom_data_bytes;
        let rule = || {
            if data.len() > limit {
                return Err(format!(
                    "custom data is limited to {limit} bytes (got {})",
                    data.len()
                ));
            }
            Ok(())
        };
        let admitted = self
            .gate
            .admit(Capability::Session, Phases::UntilTerminated, rule);
        Ok(admitted.map(|()| self.facts.custom_data = data))
    }

    fn current_phase(&mut self) -> wasmtime::Result<Phase> {
        Ok(self.gate.phase())
    }

    fn terminate(&mut self) -> wasmtime::Result<Result<(), Refusal>> {
        let phases = Phases::Running {
            in_terminating: "the session is already terminating",
        };
        let admitted = self.gate.admit(Capability::Session, phases, || Ok(()));
        Ok(admitted.map(|()| self.facts.terminate_requested = true))
    }
}
