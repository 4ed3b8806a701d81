//! The per-session limits the engine enforces while guest code runs:
//! compute time per handler (epoch ticks) and linear memory (a resource
//! limiter). Both live in the store's data, where wasmtime's callbacks can
//! reach them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::{ResourceLimiter, StoreContextMut, UpdateDeadline};

use crate::capabilities::SessionState;
use crate::metrics::Metrics;
use crate::shared_limits::SharedLimits;

pub(crate) struct Budget {
    /// Epoch ticks a handler may compute for.
    ticks_allowed: u64,
    /// Ticks seen while the current handler was computing.
    ticks_used: u64,
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
        tick: Duration,
        memory_bytes: usize,
        shared: Option<Arc<SharedLimits>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Budget {
            ticks_allowed: compute.as_nanos().div_ceil(tick.as_nanos().max(1)) as u64,
            ticks_used: 0,
            memory_bytes,
            memory_in_use: 0,
            shared,
            metrics,
            memory_refused: None,
        }
    }

    /// Starts a handler's budget afresh.
    pub fn reset(&mut self) {
        self.ticks_used = 0;
        self.memory_refused = None;
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

/// Called by wasmtime each time a computing guest passes its epoch deadline
/// (the deadline is one tick ahead). A tick is charged only while the guest
/// computes: when it waits on the host no deadline check runs, so waiting is
/// free. Every tick the guest also yields, so a looping guest shares its
/// worker thread with the other sessions on it.
pub(crate) fn on_epoch_tick(
    mut store: StoreContextMut<'_, SessionState>,
) -> wasmtime::Result<UpdateDeadline> {
    let budget = &mut store.data_mut().budget;
    budget.ticks_used += 1;
    if budget.ticks_used > budget.ticks_allowed {
        return Err(wasmtime::Error::new(ComputeLimitExceeded));
    }
    Ok(UpdateDeadline::Yield(1))
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
