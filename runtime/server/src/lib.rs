//! `sessionbox serve`: the management API, access URLs, and the session
//! history behind them.
//!
//! One [`Server`] ties together the runtime, the [`apps`] (each a loaded
//! scenario owned by a tenant), the [`live`] sessions, the [`history`] and
//! the tenants' quotas; [`start`] is how a session begins. [`api`] routes
//! requests to it; [`access`] delivers requests on access URLs to sessions.

mod access;
mod api;
mod apps;
pub mod config;
mod error;
pub mod history;
mod listener;
mod live;
mod quota;
mod sip;
mod start;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use crate::apps::{App, Apps};
use crate::config::{AppConfig, BUNDLED, Config, ServerConfig, TenantConfig};
use crate::history::{History, SqliteHistory, StoredSession};
use crate::live::{Access, LiveSessions};
use sessionbox_host::cache::ComponentCache;
use sessionbox_host::engine::EngineConfig;
use sessionbox_host::keyvalue::KeyValue;
use sessionbox_host::keyvalue::sqlite::{DEFAULT_CACHE_BYTES, SqliteKeyValue};
use sessionbox_host::runtime::{Runtime, random_token};
use sessionbox_host::session::{SessionHandle, SessionRecord};

pub use api::service;
pub use apps::BUNDLED_SCENARIO;

/// Finished records kept for a slow listener of [`Server::finished_sessions`].
const FINISHED_BACKLOG: usize = 1_024;

pub struct Server {
    runtime: Runtime,
    settings: ServerConfig,
    public_url: String,
    apps: Apps,
    quotas: quota::Quotas,
    live: LiveSessions,
    history: Box<dyn History>,
    /// The SIP listener and the routes of incoming calls to apps.
    sip: Option<sip::SipFront>,
    /// Every session's record as it finishes, for whoever listens.
    finished: tokio::sync::broadcast::Sender<Arc<SessionRecord>>,
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
        let storage_path = settings.storage_path();
        for database in [&settings.database, &storage_path] {
            if let Some(dir) = database.parent() {
                std::fs::create_dir_all(dir).ok();
            }
        }
        let storage: Arc<dyn KeyValue> = Arc::new(SqliteKeyValue::open(
            &storage_path,
            DEFAULT_CACHE_BYTES,
            Arc::clone(runtime.metrics()),
        )?);
        let apps = Apps::load(&config, &runtime, &storage)?;
        let (history, interrupted) = SqliteHistory::open(
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
            quotas: quota::Quotas::new(
                config
                    .tenants
                    .iter()
                    .map(|(tenant, settings)| (tenant, &settings.quota)),
            ),
            apps,
            live: LiveSessions::default(),
            history: Box::new(history),
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
    pub fn finished_sessions(&self) -> tokio::sync::broadcast::Receiver<Arc<SessionRecord>> {
        self.finished.subscribe()
    }

    /// Where the SIP listener is, when there is one.
    pub fn sip_addr(&self) -> Option<std::net::SocketAddr> {
        self.sip.as_ref().map(sip::SipFront::local_addr)
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub fn settings(&self) -> &ServerConfig {
        &self.settings
    }

    /// A live session, whatever its tenant (for embedders and tests).
    pub fn session(&self, id: &str) -> Option<SessionHandle> {
        self.live.handle(id)
    }

    /// Waits until the history has everything that happened so far.
    pub fn flush_history(&self) {
        self.history.flush();
    }

    /// Whether the history is being written.
    pub fn history_health(&self) -> crate::history::Health {
        self.history.health()
    }

    /// The content hash of the scenario `app` runs now, if there is such
    /// an app.
    pub fn scenario_hash(&self, app: &str) -> Option<String> {
        self.apps.scenario_hash(app)
    }

    /// Reloads every app whose scenario file changed since it was loaded
    /// (see [`Apps::reload_changed`]); returns the apps reloaded.
    pub fn reload_changed_scenarios(&self) -> Vec<String> {
        self.apps.reload_changed(&self.runtime)
    }

    /// The tenant an API key acts for.
    fn tenant_of(&self, key: &str) -> Option<&str> {
        self.apps.tenant_of(key)
    }

    /// The tenant's app named `name` (another tenant's app is not found).
    pub(crate) fn app(&self, tenant: &str, name: &str) -> Option<App> {
        self.apps.of_tenant(tenant, name)
    }

    /// Validates a new scenario for an app and swaps it in.
    fn replace_scenario(&self, name: &str, bytes: &[u8]) -> Result<Arc<sessionbox_host::Scenario>> {
        self.apps.replace_scenario(&self.runtime, name, bytes)
    }

    /// A session of `tenant`'s, live (from memory) or past (from history).
    fn session_of(&self, tenant: &str, id: &str) -> Result<Option<StoredSession>> {
        match self.live.stored(tenant, id) {
            Some(session) => Ok(session),
            None => Ok(self
                .history
                .session(id)?
                .filter(|session| session.tenant == tenant)),
        }
    }

    /// A live session of `tenant`'s.
    fn live_session(&self, tenant: &str, id: &str) -> Option<SessionHandle> {
        self.live.of_tenant(tenant, id)
    }

    /// What an access token (session id, then secret) reaches: the live
    /// session and its WebSocket message limit; Gone for a finished
    /// session's right token; otherwise not found.
    fn access(&self, id: &str, secret: &str) -> Result<Option<(SessionHandle, usize)>, Gone> {
        match self.live.access(id, secret) {
            Access::Granted(handle, message_bytes) => Ok(Some((handle, message_bytes))),
            Access::Denied => Ok(None),
            Access::NotLive => {
                let stored = self.history.session(id).map_err(Gone::Unreadable)?;
                let secret_hash = sessionbox_host::cache::content_hash(secret.as_bytes());
                match stored {
                    Some(session)
                        if live::constant_time_eq(
                            session.access_secret_sha256.as_bytes(),
                            secret_hash.as_bytes(),
                        ) =>
                    {
                        Err(Gone::Finished)
                    }
                    _ => Ok(None),
                }
            }
        }
    }

    /// The history, for the API's listings and logs.
    fn history(&self) -> &dyn History {
        self.history.as_ref()
    }

    /// Asks every live session to end (Terminating, then Terminated).
    pub fn terminate_all(&self) {
        for handle in self.live.handles() {
            let _ = handle.terminate();
        }
    }

    /// Ends every live session and waits for them, at most the shutdown
    /// deadline; then flushes the history.
    pub async fn shutdown(&self) {
        self.terminate_all();
        let handles = self.live.handles();
        let deadline = Duration::from_millis(self.settings.shutdown_deadline);
        let all = futures_util::future::join_all(handles.iter().map(SessionHandle::finished));
        if tokio::time::timeout(deadline, all).await.is_err() {
            tracing::warn!("some sessions did not finish within the shutdown deadline");
        }
        // Last: the calls of the sessions that ended needed it for their BYEs.
        if let Some(sip) = &self.sip {
            sip.stop_listening();
        }
        self.history.close();
    }

    fn log_url(&self, id: &str) -> String {
        format!("{}/v1/sessions/{id}/log", self.public_url)
    }
}

/// The configuration `serve` uses when given none: tenant `demo` with a
/// fresh random API key, and app `demo` running the bundled scenario; its
/// history (and storage, beside it) in `dir`.
pub fn default_config(dir: &Path) -> (Config, String) {
    let key = format!("demo-{}", random_token());
    let mut config = Config::default();
    config.server.database = dir.join("demo.db");
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
            variables: Default::default(),
            resolved_variables: Default::default(),
        },
    );
    (config, key)
}

/// Why an access token reaches no live session, beyond not being found.
enum Gone {
    /// The session has finished.
    Finished,
    /// The history could not be read to tell.
    Unreadable(anyhow::Error),
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
