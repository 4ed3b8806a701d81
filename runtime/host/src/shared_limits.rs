//! Limits that a group of sessions shares: the server gives every tenant
//! one, so that one tenant's sessions together cannot take the node's
//! memory or its outbound connections, however many sessions it runs.
//!
//! Each session still has its own limits ([`crate::Limits`]); a shared limit
//! applies on top of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;

use crate::cpu::TenantCpu;

pub struct SharedLimits {
    cpu: Arc<TenantCpu>,
    memory_bytes: usize,
    memory_in_use: AtomicUsize,
    http_turns: Arc<Semaphore>,
}

impl SharedLimits {
    /// At most `memory_bytes` of guest linear memory across the group's
    /// live sessions, at most `http_concurrent` outbound requests of the
    /// group in flight (more wait their turn), and the CPU charged to `cpu`
    /// (whose weight is the group's share of a busy node).
    pub fn new(memory_bytes: usize, http_concurrent: usize, cpu: Arc<TenantCpu>) -> Arc<Self> {
        Arc::new(SharedLimits {
            cpu,
            memory_bytes,
            memory_in_use: AtomicUsize::new(0),
            http_turns: Arc::new(Semaphore::new(http_concurrent)),
        })
    }

    /// The group's CPU account.
    pub fn cpu(&self) -> &Arc<TenantCpu> {
        &self.cpu
    }

    pub fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }

    /// Guest memory the group's sessions hold now.
    pub fn memory_in_use(&self) -> usize {
        self.memory_in_use.load(Ordering::Acquire)
    }

    /// Takes `bytes` of the shared memory, if that many are left.
    pub(crate) fn reserve_memory(&self, bytes: usize) -> bool {
        self.memory_in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes)
                    .filter(|&total| total <= self.memory_bytes)
            })
            .is_ok()
    }

    /// Gives back memory taken with [`SharedLimits::reserve_memory`].
    pub(crate) fn release_memory(&self, bytes: usize) {
        self.memory_in_use.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// The group's turns for outbound requests.
    pub(crate) fn http_turns(&self) -> &Arc<Semaphore> {
        &self.http_turns
    }
}
