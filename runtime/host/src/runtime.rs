//! The runtime: one engine, its scenarios, and the sessions started from them.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result, anyhow};
use tokio::sync::{Semaphore, watch};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Engine, Store};

use crate::budget::{Budget, MemoryLimit};
use crate::cache::{CacheStats, ComponentCache, content_hash};
use crate::capabilities::calls::LiveCalls;
use crate::capabilities::{AppState, Ledger, SessionContext};
use crate::cpu::DEFAULT_WEIGHT;
use crate::cpu::{EpochClock, FIRST_SLICE_TICKS, Lanes, TenantCpu};
use crate::destination::HostRule;
use crate::engine::{EngineConfig, EpochTicker, build_engine};
use crate::limits::Limits;
use crate::log::SessionLog;
use crate::metrics::Metrics;
use crate::scenario::{Scenario, check_bytes, one_line, prelink};
use crate::session::{
    Core, Driver, EventSink, FinishHook, Mailbox, Observer, SessionHandle, log_lines_to,
};
use crate::shared_limits::SharedLimits;
use crate::store::{self, SessionState};
use crate::telephony::{CallEvents, Dialer, InProcessDialer};

pub struct Runtime {
    engine: Engine,
    config: EngineConfig,
    linker: Linker<SessionState>,
    cache: Option<ComponentCache>,
    dialer: Arc<dyn Dialer>,
    /// One permit per pool slot: a start beyond capacity is refused cleanly
    /// instead of failing inside the allocator.
    capacity: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    lanes: Arc<Lanes>,
    /// The CPU account of sessions started without shared limits.
    default_cpu: Arc<TenantCpu>,
    _ticker: EpochTicker,
}

/// How a session starts.
#[derive(Default)]
pub struct StartOptions {
    /// The session's id; a fresh random one (see [`new_session_id`]) if None.
    pub id: Option<String>,
    pub custom_data: String,
    /// The URL that reaches the session over HTTP, if it has one.
    pub access_url: String,
    /// Receives the session's notices (events, log lines, the record).
    pub observer: Option<Observer>,
    /// Receives the record when the session finishes, before anyone waiting
    /// on [`SessionHandle::finished`] wakes.
    pub on_finish: Option<FinishHook>,
    /// Limits this session shares with others (its tenant's), on top of its
    /// own.
    pub shared: Option<Arc<SharedLimits>>,
    /// What it shares with the other sessions of its app: storage and
    /// variables (by default neither).
    pub app: AppState,
}

/// Whether `custom_data` fits the scenario's limit: checked by
/// [`Runtime::start`], and ahead of it by callers with work to do before a
/// start (the server's history commit).
pub fn check_custom_data(custom_data: &str, limits: &Limits) -> Result<(), StartError> {
    if custom_data.len() > limits.custom_data_bytes {
        return Err(StartError::CustomDataTooLong {
            bytes: custom_data.len(),
            limit: limits.custom_data_bytes,
        });
    }
    Ok(())
}

/// Why a session could not start.
#[derive(Debug)]
pub enum StartError {
    /// Every session slot is taken.
    AtCapacity {
        max_sessions: u32,
    },
    CustomDataTooLong {
        bytes: usize,
        limit: usize,
    },
    /// The component failed while being instantiated (e.g. a trap in its
    /// start function, or initial memory above the limit).
    Instantiation(String),
    /// The instance's initial memory does not fit in what is left of the
    /// memory it shares with other sessions.
    SharedMemoryFull {
        limit_bytes: usize,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::AtCapacity { max_sessions } => {
                write!(f, "the node is at capacity ({max_sessions} live sessions)")
            }
            StartError::CustomDataTooLong { bytes, limit } => {
                write!(f, "custom data is limited to {limit} bytes (got {bytes})")
            }
            StartError::Instantiation(error) => write!(f, "instantiation failed: {error}"),
            StartError::SharedMemoryFull { limit_bytes } => write!(
                f,
                "the guest memory shared with other sessions ({} KiB) is in use",
                limit_bytes >> 10
            ),
        }
    }
}

impl std::error::Error for StartError {}

impl Runtime {
    pub fn new(config: EngineConfig) -> Result<Self> {
        let engine = build_engine(&config)?;
        let linker = store::linker(&engine)?;
        let metrics = Arc::<Metrics>::default();
        let clock = Arc::new(EpochClock::new(config.epoch_tick));
        let lanes = Arc::new(Lanes::new(
            config.slow_lane_threads,
            Arc::clone(&clock),
            Arc::clone(&metrics),
        ));
        let ticker = {
            let governor = Arc::downgrade(&lanes.governor);
            let cores = config.slow_lane_threads;
            EpochTicker::start(&engine, config.epoch_tick, move || {
                if clock.advance()
                    && let Some(governor) = governor.upgrade()
                {
                    governor.close_window(clock.window(), cores);
                }
            })
        };
        Ok(Runtime {
            capacity: Arc::new(Semaphore::new(config.max_sessions as usize)),
            engine,
            config,
            linker,
            cache: None,
            dialer: Arc::new(InProcessDialer),
            metrics,
            lanes,
            default_cpu: TenantCpu::new("default", DEFAULT_WEIGHT),
            _ticker: ticker,
        })
    }

    /// Caches compiled components in `dir`, at most
    /// [`DEFAULT_MAX_BYTES`](crate::cache::DEFAULT_MAX_BYTES) of them.
    pub fn with_cache(self, dir: impl Into<PathBuf>) -> Self {
        self.with_cache_of(ComponentCache::new(dir))
    }

    /// Caches compiled components as `cache` says.
    pub fn with_cache_of(mut self, cache: ComponentCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Places the scenarios' outbound calls with `dialer` (by default they
    /// are answered in process, at once).
    pub fn with_dialer(mut self, dialer: Arc<dyn Dialer>) -> Self {
        self.dialer = dialer;
        self
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.cache.as_ref().map(ComponentCache::stats)
    }

    /// Validates, compiles (or loads from the cache) and pre-links a
    /// scenario. Every error is one line that says what is wrong.
    pub fn load(&self, name: &str, bytes: &[u8], limits: Limits) -> Result<Arc<Scenario>> {
        self.load_inner(bytes, limits, name)
            .with_context(|| format!("scenario {name}"))
    }

    fn load_inner(&self, bytes: &[u8], limits: Limits, name: &str) -> Result<Arc<Scenario>> {
        check_bytes(bytes)?;
        if limits.memory_bytes > self.config.max_memory_bytes {
            return Err(anyhow!(
                "its memory limit ({} bytes) is above the node's ({} bytes)",
                limits.memory_bytes,
                self.config.max_memory_bytes
            ));
        }
        let http_rules = limits
            .http_allow
            .iter()
            .map(|entry| HostRule::parse(entry))
            .collect::<Result<Arc<[_]>, _>>()
            .map_err(|e| anyhow!("limits.http_allow: {e}"))?;
        let hash = content_hash(bytes);
        let compiled = match &self.cache {
            Some(cache) => cache.load(&self.engine, bytes, &hash),
            None => wasmtime::component::Component::new(&self.engine, bytes).map_err(Into::into),
        };
        let component = compiled
            .map_err(|e| anyhow!("{e:#}"))
            .context("does not compile")?;
        let pre = prelink(&self.linker, &component)?;
        Ok(Arc::new(Scenario {
            name: name.to_owned(),
            content_hash: hash,
            limits: Arc::new(limits),
            http_rules,
            pre,
        }))
    }

    /// Reads and loads a scenario from a file; its name is the file's stem.
    pub fn load_file(&self, path: &std::path::Path, limits: Limits) -> Result<Arc<Scenario>> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let name = path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        self.load(&name, &bytes, limits)
    }

    /// Starts a session: a new instance of `scenario`, Started delivered first.
    pub async fn start(
        &self,
        scenario: &Arc<Scenario>,
        options: StartOptions,
    ) -> Result<SessionHandle, StartError> {
        let limits = Arc::clone(&scenario.limits);
        check_custom_data(&options.custom_data, &limits)?;
        let permit = Arc::clone(&self.capacity)
            .try_acquire_owned()
            .map_err(|_| StartError::AtCapacity {
                max_sessions: self.config.max_sessions,
            })?;

        let id = options.id.unwrap_or_else(new_session_id);
        let log = SessionLog::new(
            Instant::now(),
            limits.log_line_chars,
            limits.log_bytes,
            options.observer.clone().map(log_lines_to),
        )
        .hiding(options.app.variables.secrets().clone());
        let mailbox = Arc::new(Mailbox::new(limits.queued_events));
        let call_events: Arc<dyn CallEvents> = Arc::new(EventSink(Arc::downgrade(&mailbox)));
        let live_calls = Arc::new(LiveCalls::default());
        let cpu = options
            .shared
            .as_ref()
            .map_or(&self.default_cpu, |s| s.cpu());
        let lane = self.lanes.cell(Arc::clone(cpu));
        let context = SessionContext {
            id: &id,
            access_url: &options.access_url,
            custom_data: &options.custom_data,
            limits: &limits,
            http_rules: &scenario.http_rules,
            log: &log,
            ledger: &Ledger::new(log.clone(), Arc::clone(&self.metrics)),
            metrics: &self.metrics,
            shared: options.shared.as_ref(),
            dialer: &self.dialer,
            call_events: &call_events,
            live_calls: &live_calls,
            app: &options.app,
        };
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits.resources);
        let budget = Budget::new(
            limits.handler_compute,
            Arc::clone(&lane),
            limits.memory_bytes,
            options.shared.clone(),
            Arc::clone(&self.metrics),
        );
        let state = SessionState::new(&context, table, budget);
        let mut store = Store::new(&self.engine, state);
        SessionState::install_budget(&mut store);
        store.set_epoch_deadline(FIRST_SLICE_TICKS);
        // A component's start functions are guest code like any handler's.
        let pre = scenario.pre.clone();
        let instantiating = lane.laned(async move {
            let instantiated = pre.instantiate(&mut store).await;
            (store, instantiated)
        });
        let (store, instantiated) = instantiating.await;
        let bindings = match instantiated {
            Ok(bindings) => bindings,
            Err(_) if store.data().budget.memory_refused == Some(MemoryLimit::Shared) => {
                let limit_bytes = options.shared.as_ref().map_or(0, |s| s.memory_bytes());
                return Err(StartError::SharedMemoryFull { limit_bytes });
            }
            Err(e) => return Err(StartError::Instantiation(one_line(&e))),
        };

        self.metrics.sessions_started.inc();
        self.metrics.sessions_live.inc();
        let (finished_tx, finished) = watch::channel(None);
        let core = Box::new(Core::new(store, bindings, options.observer, limits));
        let driver = Driver {
            mailbox: Arc::clone(&mailbox),
            on_finish: options.on_finish,
            scenario: scenario.name.clone(),
            started_at: SystemTime::now(),
            finished: finished_tx,
            capacity: permit,
        };
        let handle = SessionHandle::new(id, mailbox, log, finished, live_calls, Arc::clone(&lane));
        tokio::spawn(lane.laned(driver.run(core, options.custom_data)));
        Ok(handle)
    }
}

/// A fresh session id: a [`random_token`], so an id alone grants nothing.
pub fn new_session_id() -> String {
    random_token()
}

/// 128 random bits from the OS, as 32 lowercase hex digits: unguessable.
/// (The OS source, not a userspace generator: it stays unique across a
/// VM snapshot restored twice.)
pub fn random_token() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source failed");
    hex(&bytes)
}

/// Lowercase hex, without a `format!` per byte (a session start makes two
/// tokens).
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(2 * bytes.len());
    for byte in bytes {
        hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_fresh_lowercase_hex() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 32, "{a}");
        assert_ne!(a, b);
    }
}
