//! `session`: facts about the session, its custom data, and `terminate()`.
//!
//! The getters are facts, not capabilities, and answer in every phase.
//! Setting custom data works until the session is terminated; `terminate()`
//! works while running (again and again, to the same effect).

use super::SessionState;
use crate::bindings::sessionbox::scenario::session;
use crate::bindings::{Capability, Phase, Refusal};

/// What a session knows about itself.
pub(crate) struct SessionInfo {
    pub id: String,
    pub access_url: String,
    pub custom_data: String,
    pub phase: Phase,
    /// Set by `terminate()`: the session enters Terminating when the current
    /// handler returns.
    pub terminate_requested: bool,
}

impl session::Host for SessionState {
    fn id(&mut self) -> wasmtime::Result<String> {
        Ok(self.session.id.clone())
    }

    fn access_url(&mut self) -> wasmtime::Result<String> {
        Ok(self.session.access_url.clone())
    }

    fn custom_data(&mut self) -> wasmtime::Result<String> {
        Ok(self.session.custom_data.clone())
    }

    fn set_custom_data(&mut self, data: String) -> wasmtime::Result<Result<(), Refusal>> {
        let limit = self.limits.custom_data_bytes;
        let rule = match self.phase() {
            Phase::Terminated => Err("only the logger works once the session is terminated".into()),
            _ if data.len() > limit => Err(format!(
                "custom data is limited to {limit} bytes (got {})",
                data.len()
            )),
            _ => Ok(()),
        };
        Ok(self
            .permit(Capability::Session, rule)
            .map(|()| self.session.custom_data = data))
    }

    fn current_phase(&mut self) -> wasmtime::Result<Phase> {
        Ok(self.session.phase)
    }

    fn terminate(&mut self) -> wasmtime::Result<Result<(), Refusal>> {
        let rule = match self.phase() {
            Phase::Running => Ok(()),
            Phase::Terminating => Err("the session is already terminating".into()),
            Phase::Terminated => Err("only the logger works once the session is terminated".into()),
        };
        Ok(self
            .permit(Capability::Session, rule)
            .map(|()| self.session.terminate_requested = true))
    }
}
