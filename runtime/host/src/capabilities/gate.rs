//! The one gate every capability passes: it knows the session's phase, says
//! what each phase allows ([`Phases`]), and books every use and refusal
//! ([`Ledger`]): counted in the session's record and the metrics, refusals
//! noted in the session log for the scenario's author.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use crate::bindings::{Capability, Phase, Refusal, RefusalKind};
use crate::log::SessionLog;
use crate::metrics::Metrics;
use crate::sync::MutexExt;

/// What the session's phase allows a capability.
#[derive(Debug, Clone, Copy)]
pub enum Phases {
    /// Every phase (the logger).
    Every,
    /// Running and Terminating; not Terminated.
    UntilTerminated,
    /// Only Running; in Terminating it is refused with this reason.
    Running { in_terminating: &'static str },
}

/// The reason every capability but the logger gives in Terminated.
pub const ONLY_THE_LOGGER: &str = "only the logger works once the session is terminated";

impl Phases {
    /// Whether `phase` allows it; the reason if not.
    pub fn check(self, phase: Phase) -> Result<(), String> {
        match (self, phase) {
            (Phases::Every, _) | (_, Phase::Running) => Ok(()),
            (Phases::UntilTerminated, Phase::Terminating) => Ok(()),
            (Phases::Running { in_terminating }, Phase::Terminating) => {
                Err(in_terminating.to_owned())
            }
            (_, Phase::Terminated) => Err(ONLY_THE_LOGGER.to_owned()),
        }
    }
}

/// The session's phase, and its ledger. Only the session moves the phase.
pub struct Gate {
    phase: Phase,
    ledger: Ledger,
}

impl Gate {
    pub fn new(ledger: Ledger) -> Self {
        Gate {
            phase: Phase::Running,
            ledger,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub(crate) fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Admits one use of `capability` if the phase allows it and then
    /// `rule` does; counts the use, or refuses with the reason (a
    /// [`RefusalKind::Rule`]).
    pub fn admit(
        &self,
        capability: Capability,
        phases: Phases,
        rule: impl FnOnce() -> Result<(), String>,
    ) -> Result<(), Refusal> {
        let outcome = self.check(phases);
        self.book(
            capability,
            outcome.and_then(|()| rule().map_err(Refused::rule)),
        )
    }

    /// Whether the phase allows a capability, without booking anything:
    /// for a capability whose rules say their kind of refusal, or whose
    /// outcome is known only later (see [`Gate::book`]).
    pub fn check(&self, phases: Phases) -> Result<(), Refused> {
        phases.check(self.phase).map_err(|reason| Refused {
            kind: RefusalKind::Phase,
            reason,
        })
    }

    /// Books one use of `capability` that ended in `outcome`.
    pub fn book<T>(
        &self,
        capability: Capability,
        outcome: Result<T, Refused>,
    ) -> Result<T, Refusal> {
        match outcome {
            Ok(value) => {
                self.ledger.count_use(capability);
                Ok(value)
            }
            Err(refused) => Err(self.refuse(capability, refused)),
        }
    }

    /// Refuses `capability` in the current phase.
    pub fn refuse(&self, capability: Capability, refused: Refused) -> Refusal {
        self.ledger.refuse(capability, self.phase, &refused.reason);
        Refusal {
            capability,
            phase: self.phase,
            kind: refused.kind,
            reason: refused.reason,
        }
    }
}

/// Why a rule refused: the kind of refusal, and a sentence for a human.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub kind: RefusalKind,
    pub reason: String,
}

impl Refused {
    /// A refusal by a rule or limit of the capability.
    pub fn rule(reason: String) -> Self {
        Refused {
            kind: RefusalKind::Rule,
            reason,
        }
    }
}

/// Where a session's uses and refusals are booked; clones share it (a
/// capability that decides after the host call returned, like outbound
/// HTTP, books through its own clone).
#[derive(Clone)]
pub struct Ledger(Arc<LedgerInner>);

struct LedgerInner {
    meter: Mutex<Meter>,
    log: SessionLog,
    metrics: Arc<Metrics>,
}

impl Ledger {
    pub fn new(log: SessionLog, metrics: Arc<Metrics>) -> Self {
        Ledger(Arc::new(LedgerInner {
            meter: Mutex::default(),
            log,
            metrics,
        }))
    }

    fn meter(&self) -> MutexGuard<'_, Meter> {
        self.0.meter.locked()
    }

    pub fn count_use(&self, capability: Capability) {
        self.meter().count_use(capability);
    }

    /// Counts a refusal of `capability` in `phase` and notes it in the
    /// session log (`reason` as the author reads it).
    pub fn refuse(&self, capability: Capability, phase: Phase, reason: &str) {
        let (capability, phase) = (capability_name(capability), phase_name(phase));
        self.meter().count_refusal(capability, phase);
        self.0.metrics.refused(capability, phase);
        self.0
            .log
            .note_refusal(|| format!("{capability} refused in {phase}: {reason}"));
    }

    /// What was counted so far, for the session record.
    pub fn meter_now(&self) -> Meter {
        self.meter().clone()
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
    fn count_use(&mut self, capability: Capability) {
        *self.uses.entry(capability_name(capability)).or_default() += 1;
    }

    fn count_refusal(&mut self, capability: &'static str, phase: &'static str) {
        *self
            .refusals
            .entry(capability)
            .or_default()
            .entry(phase)
            .or_default() += 1;
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
        Capability::Storage => "storage",
        Capability::Variables => "variables",
    }
}

pub fn refusal_kind_name(kind: RefusalKind) -> &'static str {
    match kind {
        RefusalKind::Phase => "phase",
        RefusalKind::Rule => "rule",
        RefusalKind::Quota => "quota",
        RefusalKind::Unknown => "unknown",
        RefusalKind::Full => "full",
        RefusalKind::Unavailable => "unavailable",
    }
}

pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Running => "running",
        Phase::Terminating => "terminating",
        Phase::Terminated => "terminated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> (Gate, SessionLog) {
        let log = SessionLog::new(std::time::Instant::now(), 1000, 1 << 20, None);
        (Gate::new(Ledger::new(log.clone(), Arc::default())), log)
    }

    #[test]
    fn each_phase_rule_answers_for_each_phase() {
        let running = Phases::Running {
            in_terminating: "timers ended when the session began terminating",
        };
        let table = [
            (Phases::Every, [Ok(()), Ok(()), Ok(())]),
            (
                Phases::UntilTerminated,
                [Ok(()), Ok(()), Err(ONLY_THE_LOGGER)],
            ),
            (
                running,
                [
                    Ok(()),
                    Err("timers ended when the session began terminating"),
                    Err(ONLY_THE_LOGGER),
                ],
            ),
        ];
        for (phases, answers) in table {
            for (phase, answer) in [Phase::Running, Phase::Terminating, Phase::Terminated]
                .into_iter()
                .zip(answers)
            {
                assert_eq!(
                    phases.check(phase),
                    answer.map_err(str::to_owned),
                    "{phases:?} in {phase:?}"
                );
            }
        }
    }

    #[test]
    fn uses_and_refusals_are_booked_and_refusals_noted() {
        let (mut gate, log) = gate();
        let timers = Phases::Running {
            in_terminating: "timers ended",
        };
        assert!(gate.admit(Capability::Timers, timers, || Ok(())).is_ok());
        let refusal = gate
            .admit(Capability::Timers, timers, || Err("too many".into()))
            .unwrap_err();
        assert_eq!(refusal.reason, "too many");
        assert_eq!(refusal.kind, RefusalKind::Rule);
        gate.set_phase(Phase::Terminated);
        let refusal = gate
            .admit(Capability::Timers, timers, || Ok(()))
            .unwrap_err();
        assert_eq!(refusal.reason, ONLY_THE_LOGGER);
        assert_eq!(refusal.phase, Phase::Terminated);
        assert_eq!(refusal.kind, RefusalKind::Phase);

        let meter = gate.ledger().meter_now();
        assert_eq!(meter.uses["timers"], 1);
        assert_eq!(meter.refusals["timers"]["running"], 1);
        assert_eq!(meter.refusals["timers"]["terminated"], 1);
        let lines: Vec<_> = log.snapshot().lines.into_iter().map(|l| l.text).collect();
        assert_eq!(
            lines,
            [
                "timers refused in running: too many",
                "timers refused in terminated: only the logger works once the session is terminated"
            ]
        );
    }
}
