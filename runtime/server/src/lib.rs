//! `sessionbox serve`: the management API, access URLs, and the session
//! history behind them.
//!
//! One [`Server`] holds the runtime, the apps (each a loaded scenario owned
//! by a tenant), the live sessions and the history. [`api`] routes requests
//! to it; [`access`] delivers requests on access URLs to sessions.

mod access;
mod api;
pub mod config;
mod error;
pub mod history;
mod listener;
mod quota;
mod sip;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

use crate::config::{AppConfig, BUNDLED, Config, ServerConfig, TenantConfig};
use crate::history::{NewSession, Storage, StoredSession};
use axum::http::StatusCode;
use error::ApiError;
use sessionbox_host::cache::{ComponentCache, content_hash};
use sessionbox_host::engine::EngineConfig;
use sessionbox_host::metrics::QuotaLabels;
use sessionbox_host::runtime::{
    Runtime, StartError, StartOptions, check_custom_data, new_session_id, random_token,
};
use sessionbox_host::scenario::Scenario;
use sessionbox_host::session::SessionHandle;
use sessionbox_host::sync::{MutexExt, RwLockExt};

pub use api::service;

/// Finished records kept for a slow listener of [`Server::finished_sessions`].
const FINISHED_BACKLOG: usize = 1_024;

/// The scenario `serve` runs when it is given no config: the
/// remote-control example (guest-examples/rust/remote-control), built.
pub const BUNDLED_SCENARIO: &[u8] = include_bytes!("../../assets/remote-control.wasm");

pub struct Server {
    runtime: Runtime,
    settings: ServerConfig,
    public_url: String,
    /// API key -> tenant.
    keys: HashMap<String, String>,
    quotas: quota::Quotas,
    apps: RwLock<BTreeMap<String, App>>,
    live: Mutex<HashMap<String, Live>>,
    storage: Storage,
    /// The SIP listener and the routes of incoming calls to apps.
    sip: Option<sip::SipFront>,
    /// Every session's record as it finishes, for whoever listens.
    finished: tokio::sync::broadcast::Sender<Arc<sessionbox_host::session::SessionRecord>>,
}

#[derive(Clone)]
struct App {
    tenant: String,
    scenario: Arc<Scenario>,
    /// The file the scenario was loaded from and its modification time,
    /// watched for changes (None for the bundled scenario).
    file: Option<(PathBuf, Option<SystemTime>)>,
}

/// A session that is running. `handle` is None while it is being started.
struct Live {
    handle: Option<SessionHandle>,
    /// The secret half of the session's access token.
    secret: String,
    /// Incoming WebSocket messages are cut off past this.
    websocket_message_bytes: usize,
    /// What the history knows of it.
    row: NewSession,
}

/// A session just started, as the API reports it.
pub struct Started {
    pub handle: SessionHandle,
    pub access_url: String,
}

impl Server {
    /// Builds the server from a config: the runtime, every app's scenario
    /// (each validated; a bad one stops the start, naming it), the history,
    /// and the SIP listener when the config has one (serving from here on).
    pub async fn new(config: Config, public_url: String) -> Result<Arc<Server>> {
        let settings = config.server.clone();
        // Pool slots as large as the largest memory limit of any app.
        let defaults = EngineConfig::default();
        let max_memory_bytes = config
            .apps
            .values()
            .map(|app| app.limits.memory_bytes)
            .fold(defaults.max_memory_bytes, usize::max);
        let engine = EngineConfig {
            max_sessions: settings.max_sessions,
            max_memory_bytes,
            ..defaults
        };
        let mut runtime = Runtime::new(engine)?;
        let sip = match &config.sip {
            Some(settings) => {
                let front = sip::SipFront::bind(settings).await?;
                runtime = runtime.with_dialer(front.dialer(settings)?);
                Some(front)
            }
            None => None,
        };
        // An empty cache_dir turns the cache off.
        match settings
            .cache_dir
            .clone()
            .or_else(ComponentCache::default_dir)
        {
            Some(dir) if !dir.as_os_str().is_empty() => {
                let cache = ComponentCache::new(dir).with_max_bytes(settings.cache_max_bytes);
                runtime = runtime.with_cache_of(cache);
            }
            _ => {}
        }
        let mut apps = BTreeMap::new();
        for (name, app) in &config.apps {
            let file = (app.scenario.as_os_str() != BUNDLED)
                .then(|| (app.scenario.clone(), modified(&app.scenario)));
            let scenario = load_app(&runtime, name, app)?;
            apps.insert(
                name.clone(),
                App {
                    tenant: app.tenant.clone(),
                    scenario,
                    file,
                },
            );
        }
        let keys = config
            .tenants
            .iter()
            .flat_map(|(tenant, TenantConfig { api_keys, .. })| {
                api_keys
                    .iter()
                    .map(move |key| (key.clone(), tenant.clone()))
            })
            .collect();
        if let Some(dir) = settings.database.parent() {
            std::fs::create_dir_all(dir).ok();
        }
        let (storage, interrupted) = Storage::open(
            &settings.database,
            settings.retention_days,
            Arc::clone(runtime.metrics()),
        )?;
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                "sessions live at the last shutdown were marked interrupted"
            );
        }
        let server = Arc::new(Server {
            runtime,
            settings,
            public_url: public_url.trim_end_matches('/').to_owned(),
            keys,
            quotas: quota::Quotas::new(
                config
                    .tenants
                    .iter()
                    .map(|(tenant, settings)| (tenant, &settings.quota)),
            ),
            apps: RwLock::new(apps),
            live: Mutex::new(HashMap::new()),
            storage,
            sip,
            finished: tokio::sync::broadcast::channel(FINISHED_BACKLOG).0,
        });
        if let Some(sip) = &server.sip {
            sip.serve(Arc::downgrade(&server));
        }
        Ok(server)
    }

    /// The records of sessions as they finish from now on (a listener that
    /// falls more than a thousand behind misses some).
    pub fn finished_sessions(
        &self,
    ) -> tokio::sync::broadcast::Receiver<Arc<sessionbox_host::session::SessionRecord>> {
        self.finished.subscribe()
    }

    /// Where the SIP listener is, when there is one.
    pub fn sip_addr(&self) -> Option<std::net::SocketAddr> {
        self.sip.as_ref().map(sip::SipFront::local_addr)
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// A live session, whatever its tenant (for embedders and tests).
    pub fn session(&self, id: &str) -> Option<SessionHandle> {
        let live = self.live.locked();
        live.get(id).and_then(|session| session.handle.clone())
    }

    /// Waits until the history has everything that happened so far.
    pub fn flush_history(&self) {
        self.storage.flush();
    }

    /// Whether the history is being written.
    pub fn history_health(&self) -> crate::history::Health {
        self.storage.health()
    }

    /// The content hash of the scenario `app` runs now, if there is such
    /// an app.
    pub fn scenario_hash(&self, app: &str) -> Option<String> {
        let apps = self.apps.read_locked();
        apps.get(app)
            .map(|app| app.scenario.content_hash().to_owned())
    }

    /// The tenant an API key acts for.
    fn tenant_of(&self, key: &str) -> Option<&str> {
        self.keys.get(key).map(String::as_str)
    }

    /// The tenant's app named `name` (another tenant's app is not found).
    fn app(&self, tenant: &str, name: &str) -> Option<App> {
        let apps = self.apps.read_locked();
        apps.get(name).filter(|app| app.tenant == tenant).cloned()
    }

    /// Validates a new scenario for an app and swaps it in: new sessions
    /// get it, live ones keep the one they started with.
    fn replace_scenario(&self, name: &str, bytes: &[u8]) -> Result<Arc<Scenario>> {
        let limits = {
            let apps = self.apps.read_locked();
            apps[name].scenario.limits().clone()
        };
        let scenario = self.runtime.load(name, bytes, limits)?;
        let mut apps = self.apps.write_locked();
        if let Some(app) = apps.get_mut(name) {
            app.scenario = Arc::clone(&scenario);
        }
        Ok(scenario)
    }

    /// Reloads every app whose scenario file changed since it was loaded.
    /// A file that does not validate leaves the app as it was (and is
    /// reported); live sessions keep the version they started with.
    /// Returns the apps reloaded.
    pub fn reload_changed_scenarios(&self) -> Vec<String> {
        let changed: Vec<(String, PathBuf, Option<SystemTime>)> = {
            let apps = self.apps.read_locked();
            apps.iter()
                .filter_map(|(name, app)| {
                    let (path, loaded) = app.file.as_ref()?;
                    let now = modified(path);
                    (now != *loaded).then(|| (name.clone(), path.clone(), now))
                })
                .collect()
        };
        let mut reloaded = Vec::new();
        for (name, path, now) in changed {
            let outcome = std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|bytes| self.replace_scenario(&name, &bytes));
            match outcome {
                Ok(scenario) => {
                    tracing::info!(app = %name, sha256 = scenario.content_hash(), "scenario reloaded");
                    reloaded.push(name.clone());
                }
                Err(e) => {
                    tracing::error!(app = %name, "scenario file changed but is not valid, keeping the loaded one: {e:#}")
                }
            }
            // Either way this version of the file has been seen.
            let mut apps = self.apps.write_locked();
            if let Some(App {
                file: Some((_, seen)),
                ..
            }) = apps.get_mut(&name)
            {
                *seen = now;
            }
        }
        reloaded
    }

    /// Starts a session of `app`; Started is its first event. Its row is
    /// committed to the history before it runs (so a crash from then on
    /// leaves it `interrupted`, not missing; a history that cannot be
    /// written refuses the start with 503). The history hears of its end
    /// through the finish hook, which retires it from the live sessions
    /// once its record is committed: until then it is read from memory.
    async fn start_session(
        self: &Arc<Self>,
        app_name: &str,
        app: &App,
        custom_data: String,
    ) -> Result<Started, ApiError> {
        // A refusal that needs no disk comes before the history commit.
        check_custom_data(&custom_data, app.scenario.limits()).map_err(api::start_error)?;
        if let Err(refused) = self.quotas.admit(&app.tenant) {
            return Err(self.quota_refusal(&app.tenant, refused.quota, refused.reason));
        }
        // The tenant's quota holds a place from here until the session ends
        // or fails to start.
        let id = new_session_id();
        let secret = random_token();
        let session = NewSession {
            id: id.clone(),
            tenant: app.tenant.clone(),
            app: app_name.to_owned(),
            scenario_sha256: app.scenario.content_hash().to_owned(),
            access_secret_sha256: content_hash(secret.as_bytes()),
            started_at: SystemTime::now(),
        };
        let committed = self.storage.started(session.clone()).await;
        if let Err(error) = committed.unwrap_or_else(|_| Err("the history writer stopped".into())) {
            self.quotas.release(&app.tenant);
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the session was not started: its history cannot be written ({error})"),
            ));
        }
        let on_finish = {
            let server = Arc::clone(self);
            let session = session.clone();
            Box::new(
                move |record: Arc<sessionbox_host::session::SessionRecord>| {
                    server.quotas.release(&session.tenant);
                    let retire = Arc::clone(&server);
                    let id = record.id.clone();
                    // Nobody listening is fine.
                    let _ = server.finished.send(Arc::clone(&record));
                    server.storage.finished(session, record, move || {
                        retire.retire(&id);
                    });
                },
            )
        };
        // In the map before it runs: its finish hook may retire it at any
        // moment from here on.
        let starting = Live {
            handle: None,
            secret: secret.clone(),
            websocket_message_bytes: app.scenario.limits().websocket_message_bytes,
            row: session.clone(),
        };
        self.live.locked().insert(id.clone(), starting);
        let options = StartOptions {
            id: Some(id.clone()),
            custom_data,
            access_url: format!("{}/s/{id}{secret}", self.public_url),
            observer: None,
            on_finish: Some(on_finish),
            shared: self.quotas.shared(&app.tenant),
        };
        let access_url = options.access_url.clone();
        let handle = match self.runtime.start(&app.scenario, options).await {
            Ok(handle) => handle,
            Err(error) => {
                // Never ran: nothing to keep, and nothing a reader can find
                // by the time the refusal is answered.
                self.retire(&id);
                self.quotas.release(&app.tenant);
                let _ = self.storage.forget(&id).await;
                if let StartError::SharedMemoryFull { limit_bytes } = error {
                    let reason = format!(
                        "tenant {}'s sessions use its guest memory quota ({} KiB)",
                        app.tenant,
                        limit_bytes >> 10
                    );
                    return Err(self.quota_refusal(&app.tenant, "memory_bytes", reason));
                }
                return Err(api::start_error(error));
            }
        };
        // Unless it already finished and was retired, it is live now.
        if let Some(live) = self.live.locked().get_mut(&id) {
            live.handle = Some(handle.clone());
        }
        Ok(Started { handle, access_url })
    }

    /// A start refused by one of `tenant`'s quotas: counted, and a 429 that
    /// names it.
    fn quota_refusal(&self, tenant: &str, quota: &'static str, reason: String) -> ApiError {
        self.runtime
            .metrics()
            .quota_refusals
            .get_or_create(&QuotaLabels {
                tenant: tenant.to_owned(),
                quota,
            })
            .inc();
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, reason)
    }

    /// Forgets a session whose record is in the history (or that never
    /// started).
    fn retire(&self, id: &str) {
        self.live.locked().remove(id);
    }

    /// A session of `tenant`'s, live (from memory) or past (from history).
    fn session_of(&self, tenant: &str, id: &str) -> Result<Option<StoredSession>> {
        {
            let live = self.live.locked();
            if let Some(session) = live.get(id) {
                if session.row.tenant != tenant {
                    return Ok(None);
                }
                // Finished, with its record on its way to the history.
                let record = session.handle.as_ref().and_then(SessionHandle::record);
                return Ok(Some(match record {
                    Some(record) => StoredSession::finished(&session.row, &record),
                    None => StoredSession::live(&session.row),
                }));
            }
        }
        Ok(self
            .storage
            .session(id)?
            .filter(|session| session.tenant == tenant))
    }

    /// A live session of `tenant`'s.
    fn live_session(&self, tenant: &str, id: &str) -> Option<SessionHandle> {
        let live = self.live.locked();
        live.get(id)
            .filter(|session| session.row.tenant == tenant)
            .and_then(|session| session.handle.clone())
    }

    fn live_handles(&self) -> Vec<SessionHandle> {
        let live = self.live.locked();
        live.values()
            .filter_map(|session| session.handle.clone())
            .collect()
    }

    /// Asks every live session to end (Terminating, then Terminated).
    pub fn terminate_all(&self) {
        for handle in self.live_handles() {
            let _ = handle.terminate();
        }
    }

    /// Ends every live session and waits for them, at most the shutdown
    /// deadline; then flushes the history.
    pub async fn shutdown(&self) {
        self.terminate_all();
        let handles = self.live_handles();
        let deadline = Duration::from_millis(self.settings.shutdown_deadline);
        let all = futures_util::future::join_all(handles.iter().map(SessionHandle::finished));
        if tokio::time::timeout(deadline, all).await.is_err() {
            tracing::warn!("some sessions did not finish within the shutdown deadline");
        }
        // Last: the calls of the sessions that ended needed it for their BYEs.
        if let Some(sip) = &self.sip {
            sip.stop_listening();
        }
        self.storage.close();
    }

    fn log_url(&self, id: &str) -> String {
        format!("{}/v1/sessions/{id}/log", self.public_url)
    }
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load_app(runtime: &Runtime, name: &str, app: &AppConfig) -> Result<Arc<Scenario>> {
    let bytes = if app.scenario.as_os_str() == BUNDLED {
        BUNDLED_SCENARIO.to_vec()
    } else {
        std::fs::read(&app.scenario)
            .with_context(|| format!("apps.{name}.scenario: reading {}", app.scenario.display()))?
    };
    runtime
        .load(name, &bytes, app.limits.clone())
        .with_context(|| format!("apps.{name}.scenario"))
}

/// The configuration `serve` uses when given none: tenant `demo` with a
/// fresh random API key, and app `demo` running the bundled scenario.
pub fn default_config(database: PathBuf) -> (Config, String) {
    let key = format!("demo-{}", random_token());
    let mut config = Config::default();
    config.server.database = database;
    config.tenants.insert(
        "demo".into(),
        TenantConfig {
            api_keys: vec![key.clone()],
            quota: Default::default(),
        },
    );
    config.apps.insert(
        "demo".into(),
        AppConfig {
            tenant: "demo".into(),
            scenario: PathBuf::from(BUNDLED),
            limits: Default::default(),
        },
    );
    (config, key)
}

/// Compares secrets without leaking, through timing, how much of a guess
/// was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Serves the API on `listener` until `shutdown` resolves; then stops
/// accepting, ends the live sessions (Terminating, Terminated) within the
/// shutdown deadline, and flushes the history.
pub async fn serve(
    server: Arc<Server>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let draining = Arc::clone(&server);
    let watch_every = Duration::from_millis(server.settings.watch_scenarios);
    let watcher = (!watch_every.is_zero()).then(|| {
        let server = Arc::downgrade(&server);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(watch_every);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(server) = server.upgrade() else {
                    return;
                };
                // Compiling a changed scenario can take seconds.
                let reload = move || server.reload_changed_scenarios();
                let _ = tokio::task::spawn_blocking(reload).await;
            }
        })
    });
    let limits = listener::ConnectionLimits {
        max_connections: server.settings.max_connections,
        header_read_timeout: Duration::from_millis(server.settings.header_read_timeout),
        body_read_timeout: Duration::from_millis(server.settings.body_read_timeout),
        idle_timeout: Duration::from_millis(server.settings.idle_timeout),
    };
    let deadline = Duration::from_millis(server.settings.shutdown_deadline);
    let stopping = async move {
        shutdown.await;
        tracing::info!("shutting down: ending live sessions");
        draining.terminate_all();
    };
    listener::serve(
        listener,
        service(Arc::clone(&server)),
        limits,
        stopping,
        deadline,
    )
    .await;
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    server.shutdown().await;
    Ok(())
}
