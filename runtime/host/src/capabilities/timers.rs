//! `timers`: one-shot and repeating timers, firing as `timer-fired` events.
//!
//! Timers live in the session's own state, not in tasks: the session loop
//! sleeps until [`Timers::next_due`] alongside its event queue, so cancelling
//! a timer (or all of them, on entering Terminating) is just forgetting it.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::{SessionState, running_only};
use crate::bindings::sessionbox::scenario::timers;
use crate::bindings::{Capability, Refusal};

pub type TimerId = u32;

#[derive(Default)]
pub(crate) struct Timers {
    last_id: TimerId,
    pending: BTreeMap<TimerId, Timer>,
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

    /// Marks timer `id` as fired: a timeout is gone, an interval is due again
    /// one period after it was due (so it keeps its rhythm).
    pub fn fired(&mut self, id: TimerId) {
        let Some(timer) = self.pending.get_mut(&id) else {
            return;
        };
        match timer.period {
            Some(period) => timer.due += period,
            None => {
                self.pending.remove(&id);
            }
        }
    }

    /// Forgets every pending timer (entering Terminating).
    pub fn cancel_all(&mut self) {
        self.pending.clear();
    }

    fn add(&mut self, delay: Duration, period: Option<Duration>) -> TimerId {
        self.last_id = self.last_id.wrapping_add(1);
        let due = Instant::now() + delay;
        self.pending.insert(self.last_id, Timer { due, period });
        self.last_id
    }
}

impl SessionState {
    fn set_timer(&mut self, delay: Duration, period: Option<Duration>) -> Result<TimerId, Refusal> {
        let limits = &self.limits;
        let rule = running_only(self.phase(), "timers").and_then(|()| {
            if self.timers.pending.len() >= limits.timers {
                Err(format!("{} timers are pending, the limit", limits.timers))
            } else if period.is_some_and(|p| p < limits.min_interval) {
                Err(format!(
                    "intervals must be at least {} ms",
                    limits.min_interval.as_millis()
                ))
            } else {
                Ok(())
            }
        });
        self.permit(Capability::Timers, rule)?;
        Ok(self.timers.add(delay, period))
    }
}

impl timers::Host for SessionState {
    fn set_timeout(&mut self, delay_ms: u32) -> wasmtime::Result<Result<TimerId, Refusal>> {
        Ok(self.set_timer(Duration::from_millis(delay_ms.into()), None))
    }

    fn set_interval(&mut self, period_ms: u32) -> wasmtime::Result<Result<TimerId, Refusal>> {
        let period = Duration::from_millis(period_ms.into());
        Ok(self.set_timer(period, Some(period)))
    }

    fn clear(&mut self, id: TimerId) -> wasmtime::Result<Result<(), Refusal>> {
        let rule = running_only(self.phase(), "timers");
        Ok(self.permit(Capability::Timers, rule).map(|()| {
            self.timers.pending.remove(&id);
        }))
    }
}
