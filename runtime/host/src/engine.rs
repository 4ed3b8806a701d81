//! The one wasmtime `Engine` a Sessionbox process runs every session on, and
//! the epoch ticker that meters compute time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Result;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Engine-wide settings: the pool is sized once, for every scenario.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Sessions that can be live at once (pool slots).
    pub max_sessions: u32,
    /// The largest linear memory any scenario may be given; each scenario's
    /// own limit (`Limits::memory_bytes`) is enforced per store below this.
    pub max_memory_bytes: usize,
    /// How often the epoch advances: the granularity of the fast lane's
    /// first slice (see [`crate::cpu`]).
    pub epoch_tick: Duration,
    /// Threads of the slow lane, where handlers that compute for longer
    /// than a slice run (at a lower OS priority).
    pub slow_lane_threads: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_sessions: 1_000,
            max_memory_bytes: 16 << 20,
            epoch_tick: Duration::from_millis(1),
            slow_lane_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// Upper bounds per component, generous enough for componentize-js and
/// componentize-py output, which hold several core modules.
const CORE_INSTANCES_PER_COMPONENT: u32 = 24;
const MEMORIES_PER_COMPONENT: u32 = 4;
const TABLES_PER_COMPONENT: u32 = 8;
/// What a session may use, for sizing the pool's totals so that the pool
/// holds `max_sessions` of any language's sessions. Rust, C and JavaScript
/// guests use 4 core instances, Python's 14; unused slots cost address
/// space, not memory.
const CORE_INSTANCES_PER_SESSION: u32 = 16;
const MEMORIES_PER_SESSION: u32 = 2;
const TABLES_PER_SESSION: u32 = 4;
/// The wasm stack a handler may use: deeper recursion traps with a stack
/// overflow (ending the session). wasmtime's default, stated here because
/// it is a limit.
const WASM_STACK_BYTES: usize = 512 << 10;
/// Each session's fiber stack: the wasm stack plus room for the host calls
/// made from it.
const FIBER_STACK_BYTES: usize = 2 << 20;
/// Address space the pool's memory slots may reserve. A slot of 4 GiB plus
/// guard lets compiled code skip bounds checks, but 100,000 sessions' slots
/// that size would not fit in the 128 TiB a process can address; past this
/// budget, slots are only as large as the memory limit.
const MEMORY_ADDRESS_BUDGET: u64 = 32 << 40;
/// wasmtime's defaults on 64-bit hosts, with which this budget is reckoned.
const LARGE_SLOT_BYTES: u64 = (4 << 30) + (32 << 20);

pub fn build_engine(config: &EngineConfig) -> Result<Engine> {
    let sessions = config.max_sessions.max(1);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(sessions)
        .total_core_instances(sessions.saturating_mul(CORE_INSTANCES_PER_SESSION))
        .total_memories(sessions.saturating_mul(MEMORIES_PER_SESSION))
        .total_tables(sessions.saturating_mul(TABLES_PER_SESSION))
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        // An idle store keeps its last fiber stack: one per live session.
        .total_stacks(sessions)
        .max_memory_size(config.max_memory_bytes)
        // Reset a freed slot by copying back only its dirty pages instead of
        // madvise: no TLB-shootdown IPIs and no page faults on reuse. Worth
        // ~5x in session lifecycle throughput on small VMs (see the bench
        // baselines); needs Linux >= 6.7, and falls back where missing.
        .pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(64 << 10);

    let mut wasm = Config::new();
    let memory_slots = u64::from(sessions.saturating_mul(MEMORIES_PER_SESSION));
    if memory_slots.saturating_mul(LARGE_SLOT_BYTES) > MEMORY_ADDRESS_BUDGET {
        // Explicit bounds checks instead of guard regions: a little guest
        // speed for density.
        wasm.memory_reservation(config.max_memory_bytes as u64)
            .memory_guard_size(0)
            .memory_reservation_for_growth(0);
    }
    wasm.wasm_component_model(true)
        .epoch_interruption(true)
        .memory_init_cow(true)
        .max_wasm_stack(WASM_STACK_BYTES)
        .async_stack_size(FIBER_STACK_BYTES)
        // Scenarios are p2 components: skip the per-store machinery of
        // component-model async, which also costs an error (and, with
        // RUST_BACKTRACE set, a backtrace) on every store drop.
        .concurrency_support(false)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Ok(Engine::new(&wasm)?)
}

/// Advances the engine's epoch every tick on a thread of its own, calling
/// `on_tick` after each, until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(
        engine: &Engine,
        tick: Duration,
        mut on_tick: impl FnMut() + Send + 'static,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.weak();
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("sessionbox-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        match engine.upgrade() {
                            Some(engine) => engine.increment_epoch(),
                            None => break,
                        }
                        on_tick();
                    }
                })
                .expect("spawning the epoch ticker thread")
        };
        EpochTicker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
