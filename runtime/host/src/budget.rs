//! The per-session limits the engine enforces while guest code runs:
//! compute time per handler (charged at epoch deadlines, see [`crate::cpu`])
//! and linear memory (a resource limiter). Both live in the store's data,
//! where wasmtime's callbacks can reach them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::{ResourceLimiter, UpdateDeadline};

use crate::cpu::{AtDeadline, LaneCell, SLOW_SLICE_TICKS};
use crate::metrics::Metrics;
use crate::shared_limits::SharedLimits;

pub(crate) struct Budget {
    /// Compute time a handler may use.
    compute_allowed: Duration,
    /// What the current handler computed so far.
    compute_used: Duration,
    /// The session's place on the lanes, which measures what it computed.
    lane: Arc<LaneCell>,
    memory_bytes: usize,
    /// Linear memory the instance holds now, as reported to the metrics (and
    /// taken from the shared limits, if any).
    memory_in_use: usize,
    shared: Option<Arc<SharedLimits>>,
    metrics: Arc<Metrics>,
    /// Set when a memory.grow was refused during the current handler (or
    /// instantiation): a trap that follows is most likely its consequence.
    pub memory_refused: Option<MemoryLimit>,
}

/// Which limit refused a memory.grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemoryLimit {
    /// The session's own (`Limits::memory_bytes`).
    Session,
    /// The limit shared with other sessions (the tenant's quota).
    Shared,
}

impl Budget {
    pub fn new(
        compute: Duration,
        lane: Arc<LaneCell>,
        memory_bytes: usize,
        shared: Option<Arc<SharedLimits>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Budget {
            compute_allowed: compute,
            compute_used: Duration::ZERO,
            lane,
            memory_bytes,
            memory_in_use: 0,
            shared,
            metrics,
            memory_refused: None,
        }
    }

    /// Starts a handler's budget afresh.
    pub fn reset(&mut self) {
        self.compute_used = Duration::ZERO;
        self.memory_refused = None;
    }

    pub fn lane(&self) -> &Arc<LaneCell> {
        &self.lane
    }
}

impl Drop for Budget {
    /// The instance's memory goes with its store.
    fn drop(&mut self) {
        self.metrics
            .guest_memory_bytes
            .dec_by(self.memory_in_use as i64);
        if let Some(shared) = &self.shared {
            shared.release_memory(self.memory_in_use);
        }
    }
}

/// The error that ends a handler which computed for longer than its budget.
#[derive(Debug)]
pub(crate) struct ComputeLimitExceeded;

impl fmt::Display for ComputeLimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("handler compute limit exceeded")
    }
}

impl std::error::Error for ComputeLimitExceeded {}

/// What a guest that passed its epoch deadline must do. What it computed
/// since it last resumed is charged (a deadline that passed while it waited
/// on the host charges nothing and moves on), and past the limit the
/// handler ends. Otherwise it yields: on the fast lane to move to the slow
/// one, on the slow lane to let the governor hand the next turn (see
/// [`crate::cpu`]). Called from the store's epoch callback.
pub(crate) fn at_epoch_deadline(budget: &mut Budget) -> wasmtime::Result<UpdateDeadline> {
    match budget.lane.at_deadline() {
        AtDeadline::Stale(ticks) => Ok(UpdateDeadline::Continue(ticks)),
        AtDeadline::Computed(time) => {
            budget.compute_used += time;
            if budget.compute_used > budget.compute_allowed {
                return Err(wasmtime::Error::new(ComputeLimitExceeded));
            }
            Ok(UpdateDeadline::Yield(SLOW_SLICE_TICKS))
        }
    }
}

impl ResourceLimiter for Budget {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_refused = Some(MemoryLimit::Session);
            return Ok(false);
        }
        let grown = desired.saturating_sub(current);
        if let Some(shared) = &self.shared
            && !shared.reserve_memory(grown)
        {
            self.memory_refused = Some(MemoryLimit::Shared);
            return Ok(false);
        }
        self.memory_in_use += grown;
        self.metrics.guest_memory_bytes.inc_by(grown as i64);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(true)
    }
}
