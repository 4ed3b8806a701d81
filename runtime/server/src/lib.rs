//! `sessionbox serve`: the management API, access URLs, and the session
//! history behind them.
//!
//! One [`Server`] ties together the runtime, the [`apps`] (each a loaded
//! scenario owned by a tenant), the [`live`] sessions, the [`history`] and
//! the tenants' quotas; [`start`] is how a session begins. [`api`] routes
//! requests to it; [`access`] delivers requests on access URLs to sessions.
//! With a `[cluster]`, the node shares [`postgres`] with others, and
//! [`cluster`] forwards what belongs to another node.

mod access;
mod api;
mod apps;
mod cluster;
pub mod config;
mod error;
pub mod history;
mod listener;
mod live;
pub mod postgres;
mod quota;
pub mod recordings;
mod sip;
mod start;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;

use crate::apps::{App, Apps};
use crate::cluster::Cluster;
use crate::config::{AppConfig, BUNDLED, Config, Database, ServerConfig, TenantConfig};
use crate::history::{History, StoredSession};
use crate::live::{Access, LiveSessions};
use crate::postgres::Postgres;
use crate::postgres::keyvalue::PgKeyValue;
use crate::postgres::nodes::{Load, Node};
use crate::recordings::Recordings;
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
    history: History,
    recordings: Arc<Recordings>,
    /// The name this node's sessions carry in the history.
    node_id: String,
    /// This node's place among several, when it has one.
    cluster: Option<Cluster>,
    /// Set by a drain: no new sessions or calls; live ones run to their end.
    draining: AtomicBool,
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
        let node_id = config
            .cluster
            .as_ref()
            .map_or_else(|| "local".to_owned(), |cluster| cluster.node_id.clone());
        let databases = Databases::open(&settings).await?;
        let storage: Arc<dyn KeyValue> = match &databases.storage {
            Stored::File(path) => Arc::new(SqliteKeyValue::open(
                path,
                DEFAULT_CACHE_BYTES,
                Arc::clone(runtime.metrics()),
            )?),
            Stored::Postgres(postgres) => PgKeyValue::new(Arc::clone(postgres)),
        };
        let recordings = Arc::new(match &databases.history {
            Stored::File(path) => Recordings::sqlite(path)?,
            Stored::Postgres(postgres) => Recordings::Postgres(Arc::clone(postgres)),
        });
        let apps = Apps::load(&config, &runtime, &storage, &recordings)?;
        let metrics = Arc::clone(runtime.metrics());
        let (history, interrupted) = match &databases.history {
            Stored::File(path) => History::sqlite(path, settings.retention_days, metrics)?,
            Stored::Postgres(postgres) => {
                History::postgres(
                    Arc::clone(postgres),
                    &node_id,
                    settings.retention_days,
                    metrics,
                )
                .await?
            }
        };
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                "sessions live at the last shutdown were marked interrupted"
            );
        }
        let public_url = public_url.trim_end_matches('/').to_owned();
        let cluster = match (&config.cluster, &databases.history) {
            (Some(cluster), Stored::Postgres(postgres)) => {
                let idle = Load {
                    live_sessions: 0,
                    max_sessions: settings.max_sessions,
                    draining: false,
                };
                let metrics = Arc::clone(runtime.metrics());
                Some(
                    Cluster::join(cluster, &public_url, Arc::clone(postgres), &idle, metrics)
                        .await?,
                )
            }
            _ => None,
        };
        let server = Arc::new(Server {
            runtime,
            settings,
            public_url,
            quotas: quota::Quotas::new(
                config
                    .tenants
                    .iter()
                    .map(|(tenant, settings)| (tenant, &settings.quota)),
            ),
            apps,
            live: LiveSessions::default(),
            history,
            recordings,
            node_id,
            cluster,
            draining: AtomicBool::new(false),
            sip,
            finished: tokio::sync::broadcast::channel(FINISHED_BACKLOG).0,
        });
        if let Some(sip) = &server.sip {
            sip.serve(Arc::downgrade(&server));
        }
        if let Some(cluster) = &server.cluster {
            cluster.keep_lease(Arc::downgrade(&server));
        }
        Ok(server)
    }

    /// What this node's lease reports of it.
    fn load(&self) -> Load {
        Load {
            live_sessions: self.live.count(),
            max_sessions: self.settings.max_sessions,
            draining: self.is_draining(),
        }
    }

    /// Whether a drain has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Why this node takes no new session now, if it does not: it drains,
    /// it is full, or (with others) it cannot be sure its lease holds.
    fn no_room(&self) -> Option<String> {
        if self.is_draining() {
            return Some(format!("node {} is draining", self.node_id));
        }
        if self.live.count() >= self.settings.max_sessions as usize {
            return Some(format!(
                "node {} runs its most sessions ({})",
                self.node_id, self.settings.max_sessions
            ));
        }
        if self
            .cluster
            .as_ref()
            .is_some_and(|cluster| !cluster.lease_holds())
        {
            return Some(format!(
                "node {} cannot renew its lease in the shared database",
                self.node_id
            ));
        }
        None
    }

    /// Begins a drain: readiness and SIP OPTIONS answer 503, no new session
    /// starts here, and live sessions run to their end; past the drain
    /// deadline they are asked to end. Draining twice is draining once.
    pub fn drain(self: &Arc<Self>) {
        if self.draining.swap(true, Ordering::Relaxed) {
            return;
        }
        self.runtime.metrics().draining.set(1);
        tracing::info!(
            live_sessions = self.live.count(),
            "draining: no new sessions; live ones run to their end"
        );
        if let Some(sip) = &self.sip {
            sip.stop_taking_calls();
        }
        let server = Arc::clone(self);
        tokio::spawn(async move {
            // The others learn at once, not at the next renewal.
            if let Some(cluster) = &server.cluster
                && let Err(error) = cluster.renew(&server).await
            {
                tracing::warn!("reporting the drain to the other nodes failed: {error:#}");
            }
            server.drained().await;
        });
    }

    /// Waits until a drain has let every live session end, or its
    /// deadline passed and the rest were asked to end.
    async fn drained(&self) {
        let deadline = Duration::from_millis(self.settings.drain_deadline);
        if tokio::time::timeout(deadline, self.live.none_left())
            .await
            .is_err()
        {
            tracing::info!(
                live_sessions = self.live.count(),
                "the drain deadline passed: asking the sessions left to end"
            );
            self.terminate_all();
        }
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

    /// A session of `tenant`'s, live here (from memory), or anywhere else
    /// or past (from history).
    async fn session_of(&self, tenant: &str, id: &str) -> Result<Option<StoredSession>> {
        match self.live.stored(tenant, id) {
            Some(session) => Ok(session),
            None => Ok(self
                .history
                .session(id)
                .await?
                .filter(|session| session.tenant == tenant)),
        }
    }

    /// A live session of `tenant`'s.
    fn live_session(&self, tenant: &str, id: &str) -> Option<SessionHandle> {
        self.live.of_tenant(tenant, id)
    }

    /// What an access token (session id, then secret) reaches: the live
    /// session and its WebSocket message limit; the node it lives on if
    /// that is another; Gone for a finished session's right token;
    /// otherwise not found.
    async fn access(&self, id: &str, secret: &str) -> Result<Option<(SessionHandle, usize)>, Gone> {
        match self.live.access(id, secret) {
            Access::Granted(handle, message_bytes) => Ok(Some((handle, message_bytes))),
            Access::Denied => Ok(None),
            Access::NotLive => {
                if let Some(cluster) = &self.cluster {
                    // Its owner checks the secret.
                    let owner = cluster.owner(id, None).await.map_err(Gone::Unreadable)?;
                    if let Some(node) = owner {
                        return Err(Gone::Elsewhere(node));
                    }
                }
                let stored = self.history.session(id).await.map_err(Gone::Unreadable)?;
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
    fn history(&self) -> &History {
        &self.history
    }

    fn recordings(&self) -> &Recordings {
        &self.recordings
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
        if let Some(cluster) = &self.cluster {
            cluster.leave().await;
        }
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
    config.server.database = Database::File(dir.join("demo.db"));
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
            tts_url: None,
        },
    );
    (config, key)
}

/// Why an access token reaches no live session here, beyond not being
/// found.
enum Gone {
    /// The session has finished.
    Finished,
    /// It lives on another node.
    Elsewhere(Node),
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
    // Access URLs are served while the drain lets sessions end.
    let stopping = async move {
        shutdown.await;
        tracing::info!("shutting down: draining");
        draining.drain();
        draining.drained().await;
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

/// Where the history and the storage are kept: files, or a PostgreSQL
/// database (one pool when both are the same one).
struct Databases {
    history: Stored,
    storage: Stored,
}

enum Stored {
    File(PathBuf),
    Postgres(Arc<Postgres>),
}

impl Databases {
    async fn open(settings: &ServerConfig) -> Result<Databases> {
        let mut connected: Vec<(String, Arc<Postgres>)> = Vec::new();
        let mut open = async |database: &Database| -> Result<Stored> {
            Ok(match database {
                Database::File(path) => {
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir).ok();
                    }
                    Stored::File(path.clone())
                }
                Database::Postgres(url) => {
                    let known = connected.iter().find(|(known, _)| known == url);
                    let postgres = match known {
                        Some((_, postgres)) => Arc::clone(postgres),
                        None => {
                            let postgres = Arc::new(Postgres::connect(url).await?);
                            connected.push((url.clone(), Arc::clone(&postgres)));
                            postgres
                        }
                    };
                    Stored::Postgres(postgres)
                }
            })
        };
        let history = open(&settings.database).await?;
        let storage = open(&settings.storage()).await?;
        Ok(Databases { history, storage })
    }
}
