//! The host capabilities, one module per interface of the `scenario` world.
//!
//! Each module keeps side by side, as Spin keeps its "factors": how it links
//! its WIT interface (the `Host` impl on [`SessionState`]), its per-session
//! state, and its phase rule. Every use and every refusal passes through
//! [`SessionState::permit`] or [`SessionState::refuse`], which count it in the
//! session's [`Meter`] and note refusals in the session log.

pub mod calls;
pub mod http;
pub mod logger;
pub mod session;
pub mod timers;
pub mod wasi;
pub mod websockets;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use wasmtime::component::ResourceTable;

use crate::bindings::{Capability, Phase, Refusal};
use crate::limits::Limits;
use crate::log::SessionLog;

/// The data of one session's `Store`: every capability's per-session state.
pub struct SessionState {
    pub(crate) table: ResourceTable,
    pub(crate) limits: Arc<Limits>,
    pub(crate) log: SessionLog,
    pub(crate) meter: Meter,
    pub(crate) session: session::SessionInfo,
    pub(crate) timers: timers::Timers,
    pub(crate) calls: calls::Calls,
    pub(crate) sockets: websockets::Sockets,
    pub(crate) http: http::HttpState,
    pub(crate) wasi: wasi::WasiState,
    pub(crate) budget: crate::session::budget::Budget,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
}

impl crate::bindings::sessionbox::scenario::types::Host for SessionState {}

impl SessionState {
    pub(crate) fn phase(&self) -> Phase {
        self.session.phase
    }

    /// Counts one use of `capability` when `rule` allows it, or refuses with
    /// the rule's reason.
    pub(crate) fn permit(
        &mut self,
        capability: Capability,
        rule: Result<(), String>,
    ) -> Result<(), Refusal> {
        match rule {
            Ok(()) => {
                self.meter.count_use(capability);
                Ok(())
            }
            Err(reason) => Err(self.refuse(capability, reason)),
        }
    }

    /// Builds a refusal of `capability` in the current phase, counts it and
    /// notes it in the session log for the scenario's author.
    pub(crate) fn refuse(&mut self, capability: Capability, reason: String) -> Refusal {
        let phase = self.phase();
        self.meter.count_refusal(capability, phase);
        self.metrics
            .refused(capability_name(capability), phase_name(phase));
        self.log.note_refusal(|| {
            format!(
                "{} refused in {}: {reason}",
                capability_name(capability),
                phase_name(phase)
            )
        });
        Refusal {
            capability,
            phase,
            reason,
        }
    }
}

/// Per-session counts of capability uses and refusals, for the session record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Meter {
    /// Uses by capability name.
    pub uses: BTreeMap<&'static str, u64>,
    /// Refusals by capability name, then phase name.
    pub refusals: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
}

impl Meter {
    pub(crate) fn count_use(&mut self, capability: Capability) {
        *self.uses.entry(capability_name(capability)).or_default() += 1;
    }

    pub(crate) fn count_refusal(&mut self, capability: Capability, phase: Phase) {
        *self
            .refusals
            .entry(capability_name(capability))
            .or_default()
            .entry(phase_name(phase))
            .or_default() += 1;
    }

    /// Adds another meter's counts to this one.
    pub(crate) fn merge(&mut self, other: &Meter) {
        for (&name, &uses) in &other.uses {
            *self.uses.entry(name).or_default() += uses;
        }
        for (&name, by_phase) in &other.refusals {
            let entry = self.refusals.entry(name).or_default();
            for (&phase, &n) in by_phase {
                *entry.entry(phase).or_default() += n;
            }
        }
    }

    /// How many times `capability` was refused, in any phase.
    pub fn refused(&self, capability: &str) -> u64 {
        self.refusals
            .get(capability)
            .map_or(0, |by_phase| by_phase.values().sum())
    }
}

pub fn capability_name(capability: Capability) -> &'static str {
    match capability {
        Capability::Logger => "logger",
        Capability::Session => "session",
        Capability::Timers => "timers",
        Capability::Calls => "calls",
        Capability::Websockets => "websockets",
        Capability::Http => "http",
    }
}

pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Running => "running",
        Phase::Terminating => "terminating",
        Phase::Terminated => "terminated",
    }
}

/// The phase rule shared by capabilities that only work while running.
pub(crate) fn running_only(phase: Phase, what: &str) -> Result<(), String> {
    match phase {
        Phase::Running => Ok(()),
        Phase::Terminating => Err(format!("{what} ended when the session began terminating")),
        Phase::Terminated => Err("only the logger works once the session is terminated".into()),
    }
}
