//! `timers`: one-shot and repeating timers, firing as `timer-fired` events.
//!
//! Timers live in the session's own state, not in tasks: the session's task
//! sleeps until [`Timers::next_due`] alongside its event queue, so cancelling
//! a timer (or all of them, on entering Terminating) is just forgetting it.
//! Only while running: Terminating cancels every pending timer.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;
use wasmtime::component::{HasData, Linker};

use super::{Common, Factor, Gate, Phases, SessionContext, WasiStore};
use crate::bindings::scenario::timers;
use crate::bindings::v0_1::sessionbox::scenario as v0_1;
use crate::bindings::{Capability, Refusal, TimerId};
use crate::guest::GuestCall;

const PHASES: Phases = Phases::Running {
    in_terminating: "timers ended when the session began terminating",
};

pub struct Timers {
    last_id: TimerId,
    pending: BTreeMap<TimerId, Timer>,
    /// Timers pending at once, and the shortest interval.
    most: usize,
    min_interval: Duration,
}

struct Timer {
    due: Instant,
    period: Option<Duration>,
}

impl Timers {
    /// The timer that fires next, if any (ties go to the older timer).
    pub fn next_due(&self) -> Option<(Instant, TimerId)> {
        self.pending
            .iter()
            .map(|(&id, timer)| (timer.due, id))
            .min()
    }

    /// Timer `id` is due: a timeout is gone, an interval is due again one
    /// period after it was due (so it keeps its rhythm). The event for the
    /// scenario.
    pub fn fire(&mut self, id: TimerId) -> GuestCall {
        if let Some(timer) = self.pending.get_mut(&id) {
            match timer.period {
                Some(period) => timer.due += period,
                None => {
                    self.pending.remove(&id);
                }
            }
        }
        GuestCall::TimerFired(id)
    }

    fn add(&mut self, delay: Duration, period: Option<Duration>) -> TimerId {
        self.last_id = self.last_id.wrapping_add(1);
        let due = Instant::now() + delay;
        self.pending.insert(self.last_id, Timer { due, period });
        self.last_id
    }

    /// Sets a timer, within the limits.
    fn set(
        &mut self,
        gate: &Gate,
        delay: Duration,
        period: Option<Duration>,
    ) -> Result<TimerId, Refusal> {
        gate.admit(Capability::Timers, PHASES, || {
            if self.pending.len() >= self.most {
                Err(format!("{} timers are pending, the limit", self.most))
            } else if period.is_some_and(|p| p < self.min_interval) {
                Err(format!(
                    "intervals must be at least {} ms",
                    self.min_interval.as_millis()
                ))
            } else {
                Ok(())
            }
        })?;
        Ok(self.add(delay, period))
    }
}

pub struct TimersView<'a> {
    timers: &'a mut Timers,
    gate: &'a Gate,
}

impl HasData for Timers {
    type Data<'a> = TimersView<'a>;
}

impl Factor for Timers {
    type View = Timers;

    fn new(cx: &SessionContext<'_>) -> Self {
        Timers {
            last_id: 0,
            pending: BTreeMap::new(),
            most: cx.limits.timers,
            min_interval: cx.limits.min_interval,
        }
    }

    fn view<'a>(&'a mut self, common: Common<'a>) -> TimersView<'a> {
        TimersView {
            timers: self,
            gate: common.gate,
        }
    }

    fn link<T: WasiStore>(
        linker: &mut Linker<T>,
        get: fn(&mut T) -> TimersView<'_>,
    ) -> wasmtime::Result<()> {
        timers::add_to_linker::<T, Timers>(linker, get)?;
        v0_1::timers::add_to_linker::<T, Timers>(linker, get)
    }

    fn terminating(&mut self) {
        self.pending.clear();
    }
}

impl timers::Host for TimersView<'_> {
    fn set_timeout(&mut self, delay_ms: u32) -> wasmtime::Result<Result<TimerId, Refusal>> {
        let delay = Duration::from_millis(delay_ms.into());
        Ok(self.timers.set(self.gate, delay, None))
    }

    fn set_interval(&mut self, period_ms: u32) -> wasmtime::Result<Result<TimerId, Refusal>> {
        let period = Duration::from_millis(period_ms.into());
        Ok(self.timers.set(self.gate, period, Some(period)))
    }

    fn clear(&mut self, id: TimerId) -> wasmtime::Result<Result<(), Refusal>> {
        let admitted = self.gate.admit(Capability::Timers, PHASES, || Ok(()));
        Ok(admitted.map(|()| {
            self.timers.pending.remove(&id);
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::bindings::Phase;
    use crate::capabilities::Ledger;
    use crate::log::SessionLog;

    fn timers(most: usize) -> (Timers, Gate) {
        let log = SessionLog::new(std::time::Instant::now(), 1000, 1 << 20, None);
        let timers = Timers {
            last_id: 0,
            pending: BTreeMap::new(),
            most,
            min_interval: Duration::from_millis(100),
        };
        (timers, Gate::new(Ledger::new(log, Arc::default())))
    }

    #[tokio::test(start_paused = true)]
    async fn an_interval_keeps_its_rhythm_and_a_timeout_fires_once() {
        let (mut timers, gate) = timers(10);
        let interval = timers
            .set(
                &gate,
                Duration::from_millis(100),
                Some(Duration::from_millis(100)),
            )
            .unwrap();
        let once = timers.set(&gate, Duration::from_millis(150), None).unwrap();
        let start = Instant::now();
        assert_eq!(
            timers.next_due(),
            Some((start + Duration::from_millis(100), interval))
        );
        timers.fire(interval);
        assert_eq!(
            timers.next_due(),
            Some((start + Duration::from_millis(150), once))
        );
        timers.fire(once);
        assert_eq!(
            timers.next_due(),
            Some((start + Duration::from_millis(200), interval))
        );
        assert_eq!(timers.pending.len(), 1, "the timeout is gone");
    }

    #[test]
    fn past_the_limits_and_the_phase_a_timer_is_refused() {
        let (mut timers, mut gate) = timers(2);
        let second = Duration::from_secs(1);
        timers.set(&gate, second, None).unwrap();
        let short = timers.set(&gate, second, Some(Duration::from_millis(10)));
        assert_eq!(
            short.unwrap_err().reason,
            "intervals must be at least 100 ms"
        );
        timers.set(&gate, second, None).unwrap();
        let third = timers.set(&gate, second, None).unwrap_err();
        assert_eq!(third.reason, "2 timers are pending, the limit");

        timers.terminating();
        gate.set_phase(Phase::Terminating);
        assert_eq!(timers.next_due(), None, "Terminating cancels them");
        let late = timers.set(&gate, second, None).unwrap_err();
        assert_eq!(
            late.reason,
            "timers ended when the session began terminating"
        );
        let meter = gate.ledger().meter_now();
        assert_eq!(meter.uses["timers"], 2);
        assert_eq!(meter.refused("timers"), 3);
    }
}
