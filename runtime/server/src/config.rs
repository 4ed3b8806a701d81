//! The server's configuration file (TOML): server settings, tenants and
//! their API keys, and apps (a scenario, its tenant, its limits).
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:8080"
//! database = "sessionbox.db"             # or postgres://user:pass@host/db
//!
//! [tenants.acme]
//! api_keys = ["acme-secret-key"]
//!
//! [apps.support-line]
//! tenant = "acme"
//! scenario = "scenarios/support.wasm"   # relative to this file
//! limits = { idle_timeout = 30000 }      # milliseconds; see `Limits`
//! # Read by the scenario's `variables.get`; values from the environment
//! # or a file are secrets, never shown in logs.
//! variables = { greeting = "Hello", token = { env = "ACME_TOKEN" } }
//!
//! [sip]                                  # off unless present
//! listen = "127.0.0.1:5060"              # UDP and TCP
//! routes = [{ number = "^1000$", app = "support-line" }]
//! trunk = { address = "sip.example.net:5060", username = "u", password = "p" }
//!
//! [cluster]                              # more than one node: see `ClusterConfig`
//! node_id = "${NODE_ID}"                 # ${NAME}: from the environment
//! ```
//!
//! `${NAME}` anywhere in the file is replaced by the environment variable
//! `NAME` before the file is read, so that one file serves every node of a
//! deployment (an unset variable is an error naming its line).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use toml::Spanned;

use sessionbox_host::capabilities::variables::{Variable, Variables};
use sessionbox_host::limits::Limits;
use sessionbox_sip::Trunk;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
    #[serde(default)]
    pub apps: BTreeMap<String, AppConfig>,
    /// The SIP listener and trunk; without it calls come only from the API.
    pub sip: Option<SipConfig>,
    /// This node's place among several; without it the node is alone.
    pub cluster: Option<ClusterConfig>,
}

/// One node of several that share a PostgreSQL database: each session lives
/// on the node that started it, and its access URL (`server.public_url`)
/// names that node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name, unique among the nodes and kept across restarts
    /// (a StatefulSet's pod name).
    pub node_id: String,
    /// Where the other nodes reach this node's API (forwarded requests).
    pub internal_url: String,
    /// Shared by the nodes: authenticates what one forwards to another.
    pub secret: String,
    /// Milliseconds a node's lease lasts; it renews it every third of
    /// that. A node whose lease lapses has its live sessions marked
    /// interrupted by a surviving node.
    #[serde(default = "ClusterConfig::default_lease")]
    pub lease: u64,
}

impl ClusterConfig {
    fn default_lease() -> u64 {
        10_000
    }
}

/// Where the history (or the storage) is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file: one node.
    File(PathBuf),
    /// A PostgreSQL database (`postgres://…`), which nodes can share.
    Postgres(String),
}

impl Database {
    fn from_text(text: &str) -> Database {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Database::Postgres(text.to_owned())
        } else {
            Database::File(PathBuf::from(text))
        }
    }
}

impl<'de> Deserialize<'de> for Database {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Database::from_text(&String::deserialize(deserializer)?))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    /// Where SIP is heard, on UDP and TCP alike.
    pub listen: SocketAddr,
    /// The address callers reach this node at, given in Contact and SDP;
    /// needed when `listen` is a wildcard address.
    pub public_address: Option<IpAddr>,
    /// `[low, high]`: the UDP ports calls' RTP may use (each call one even
    /// port), for firewalls; any free port when unset.
    pub rtp_ports: Option<[u16; 2]>,
    /// An IPv6 address of this node for the media of calls whose offer is
    /// IPv6 (a node whose address is IPv4); without it, such offers get
    /// 488.
    pub media_address_v6: Option<std::net::Ipv6Addr>,
    /// Which app takes a call, by the number called: the first route whose
    /// pattern (a regular expression) matches the request URI's user.
    #[serde(default)]
    pub routes: Vec<SipRoute>,
    /// Where the scenarios' outbound calls go; without it `dial` is refused.
    pub trunk: Option<Trunk>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipRoute {
    /// A regular expression over the called number (anchor it with `^…$`
    /// to match the whole number).
    pub number: String,
    pub app: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The base of access and log URLs, as clients reach this server;
    /// defaults to `http://<listen>`.
    pub public_url: Option<String>,
    /// The session history and logs: an SQLite file, or a PostgreSQL URL.
    pub database: Database,
    /// The apps' key-value storage; by default the PostgreSQL `database`,
    /// or an SQLite file beside the SQLite one, named after it
    /// (`sessionbox-storage.db`).
    pub storage: Option<Database>,
    /// The bearer key of the operator's endpoints (`/v1/admin/...`); they
    /// are off without one.
    pub admin_key: Option<String>,
    /// On SIGTERM, or a drain over the API, live sessions run this long
    /// (ms) on their own before they are asked to end.
    pub drain_deadline: u64,
    /// Finished sessions (and their logs) are kept this many days.
    pub retention_days: u32,
    /// On shutdown, live sessions get this long (ms) to run Terminating
    /// and Terminated.
    pub shutdown_deadline: u64,
    /// Sessions live at once on this node.
    pub max_sessions: u32,
    /// Bytes of a request body, to the API or to an access URL.
    pub max_body_bytes: usize,
    /// Where compiled components are cached (default: the user cache dir).
    pub cache_dir: Option<PathBuf>,
    /// The most that directory holds; the entries used longest ago go first.
    pub cache_max_bytes: u64,
    /// How often (ms) apps' scenario files are checked for changes and
    /// reloaded; 0 turns watching off.
    pub watch_scenarios: u64,
    /// HTTP connections open at once; past it, new ones get 503.
    pub max_connections: usize,
    /// Milliseconds a client has to send a request's head.
    pub header_read_timeout: u64,
    /// Milliseconds a client has to send a request's body, once its head
    /// arrived (else 408).
    pub body_read_timeout: u64,
    /// Milliseconds a connection may sit with no request and no traffic.
    pub idle_timeout: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            database: Database::File(PathBuf::from("sessionbox.db")),
            storage: None,
            admin_key: None,
            drain_deadline: 0,
            retention_days: 30,
            shutdown_deadline: 10_000,
            max_sessions: 1_000,
            max_body_bytes: 1 << 20,
            cache_dir: None,
            cache_max_bytes: sessionbox_host::cache::DEFAULT_MAX_BYTES,
            watch_scenarios: 2_000,
            max_connections: 10_000,
            header_read_timeout: 10_000,
            body_read_timeout: 60_000,
            idle_timeout: 60_000,
        }
    }
}

impl ServerConfig {
    /// Where the apps' storage is.
    pub fn storage(&self) -> Database {
        match (&self.storage, &self.database) {
            (Some(storage), _) => storage.clone(),
            (None, Database::Postgres(url)) => Database::Postgres(url.clone()),
            (None, Database::File(path)) => {
                let stem = path.file_stem().unwrap_or_default().to_string_lossy();
                Database::File(path.with_file_name(format!("{stem}-storage.db")))
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Bearer tokens that act for this tenant.
    pub api_keys: Vec<String>,
    /// Quotas that keep one tenant from taking the node.
    #[serde(default)]
    pub quota: TenantQuota,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantQuota {
    /// Sessions of this tenant live at once.
    pub max_sessions: usize,
    /// Session starts per second (a burst of as many is allowed).
    pub starts_per_second: u32,
    /// Guest linear memory of all the tenant's live sessions together, in
    /// bytes.
    pub memory_bytes: usize,
    /// Outbound HTTP requests of all the tenant's sessions in flight at
    /// once; more wait their turn.
    pub http_concurrent: usize,
    /// The tenant's share of a busy node's CPU, against the other tenants'
    /// weights (1 to 10,000; as cgroup v2's `cpu.weight`).
    pub cpu_weight: u32,
}

impl Default for TenantQuota {
    fn default() -> Self {
        TenantQuota {
            max_sessions: 500,
            starts_per_second: 100,
            memory_bytes: 4 << 30,
            http_concurrent: 100,
            cpu_weight: sessionbox_host::cpu::DEFAULT_WEIGHT,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub tenant: String,
    /// The scenario component; relative paths are relative to the config
    /// file. `bundled:remote-control` names the scenario built into the binary.
    pub scenario: PathBuf,
    #[serde(default)]
    pub limits: Limits,
    /// What the scenario reads with `variables.get`, by name.
    #[serde(default)]
    pub variables: BTreeMap<String, Spanned<VariableSource>>,
    /// The variables' values, read when the config is.
    #[serde(skip)]
    pub resolved_variables: std::sync::Arc<Variables>,
    /// An HTTP speech service for `say` in place of flite: GET
    /// `{tts_url}?text=...&language=...` answers with the speech as a WAV
    /// (8 kHz mono).
    pub tts_url: Option<String>,
}

/// Where a variable's value comes from: the config itself (a plain value),
/// or, for a secret, the node's environment or a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum VariableSource {
    Value(String),
    Env { env: String },
    File { file: PathBuf },
}

/// The `scenario` value that names the scenario built into the binary.
pub const BUNDLED: &str = "bundled:remote-control";

impl Config {
    /// Reads and checks a config file. Errors name the file, the key and
    /// the line.
    pub fn load(path: &Path) -> Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = expand_environment(&text, &|name| std::env::var(name).ok())
            .and_then(|text| Config::parse_in(&text, base))
            .with_context(|| format!("{}", path.display()))?;
        for app in config.apps.values_mut() {
            if app.scenario.is_relative() && app.scenario.as_os_str() != BUNDLED {
                app.scenario = base.join(&app.scenario);
            }
        }
        Ok(config)
    }

    /// Parses a config whose relative paths are relative to the current
    /// directory.
    pub fn parse(text: &str) -> Result<Config> {
        Config::parse_in(text, Path::new("."))
    }

    /// Parses a config after replacing each `${NAME}` with `env(NAME)`.
    pub fn parse_with_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
        Config::parse(&expand_environment(text, env)?)
    }

    /// Parses a config; `base` is where its relative variable files are.
    fn parse_in(text: &str, base: &Path) -> Result<Config> {
        let mut config: Config = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        config.check()?;
        for (name, app) in &mut config.apps {
            app.resolved_variables = resolve_variables(name, &app.variables, text, base)?.into();
        }
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        let mut keys = BTreeMap::new();
        for (tenant, settings) in &self.tenants {
            if !(1..=10_000).contains(&settings.quota.cpu_weight) {
                bail!(
                    "tenants.{tenant}.quota.cpu_weight: a weight is from 1 to 10000, not {}",
                    settings.quota.cpu_weight
                );
            }
            if settings.api_keys.is_empty() {
                bail!("tenants.{tenant}.api_keys: a tenant needs at least one key");
            }
            for key in &settings.api_keys {
                if key.len() < 8 {
                    bail!("tenants.{tenant}.api_keys: keys must be at least 8 characters");
                }
                if let Some(other) = keys.insert(key, tenant) {
                    bail!("tenants.{tenant}.api_keys: a key is also one of tenant {other}'s");
                }
            }
        }
        if let Some(cluster) = &self.cluster {
            if !matches!(self.server.database, Database::Postgres(_)) {
                bail!(
                    "cluster: nodes share their history through PostgreSQL: \
                     server.database must be a postgres:// URL"
                );
            }
            if cluster.secret.len() < 16 {
                bail!("cluster.secret: the nodes' shared secret must be at least 16 characters");
            }
            if cluster.lease < 300 {
                bail!(
                    "cluster.lease: a lease is at least 300 ms, not {}",
                    cluster.lease
                );
            }
            let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
            if cluster.node_id.is_empty() || !cluster.node_id.chars().all(valid) {
                bail!(
                    "cluster.node_id: a node id is letters, digits, '-' and '_', not {:?}",
                    cluster.node_id
                );
            }
        }
        if let Some(key) = &self.server.admin_key
            && key.len() < 16
        {
            bail!("server.admin_key: the operator's key must be at least 16 characters");
        }
        for (app, settings) in &self.apps {
            if !self.tenants.contains_key(&settings.tenant) {
                bail!(
                    "apps.{app}.tenant: there is no tenant named {:?}",
                    settings.tenant
                );
            }
            if let Some(url) = &settings.tts_url {
                let web = |uri: hyper::Uri| {
                    matches!(uri.scheme_str(), Some("http" | "https"))
                        && uri.host().is_some_and(|host| !host.is_empty())
                };
                if !url.parse().is_ok_and(web) {
                    bail!("apps.{app}.tts_url: an http:// or https:// URL, not {url:?}");
                }
            }
        }
        if let Some(sip) = &self.sip {
            if let Some([low, high]) = sip.rtp_ports
                && u32::from(low) + u32::from(low & 1) > u32::from(high)
            {
                bail!("sip.rtp_ports: [{low}, {high}] holds no even port to give a call");
            }
            for (index, route) in sip.routes.iter().enumerate() {
                if !self.apps.contains_key(&route.app) {
                    bail!(
                        "sip.routes[{index}].app: there is no app named {:?}",
                        route.app
                    );
                }
                if let Err(error) = regex::Regex::new(&route.number) {
                    bail!("sip.routes[{index}].number: {error}");
                }
            }
        }
        Ok(())
    }
}

/// Replaces every `${NAME}` in a config's text with `env(NAME)`; a name
/// without a value is an error naming its line.
fn expand_environment(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String> {
    let pattern = regex::Regex::new(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}").expect("a valid pattern");
    let mut expanded = String::with_capacity(text.len());
    let mut last = 0;
    for found in pattern.captures_iter(text) {
        let whole = found.get(0).expect("the whole match");
        let name = &found[1];
        let Some(value) = env(name) else {
            let line = text[..whole.start()].matches('\n').count() + 1;
            bail!("line {line}: the environment variable {name} is not set");
        };
        expanded.push_str(&text[last..whole.start()]);
        expanded.push_str(&value);
        last = whole.end();
    }
    expanded.push_str(&text[last..]);
    Ok(expanded)
}

/// Reads an app's variables: plain values as written, secrets from the
/// environment or their file (less one trailing newline). One that cannot
/// be read is an error naming its key and line.
fn resolve_variables(
    app: &str,
    sources: &BTreeMap<String, Spanned<VariableSource>>,
    text: &str,
    base: &Path,
) -> Result<Variables> {
    let mut variables = BTreeMap::new();
    for (name, source) in sources {
        let line = text[..source.span().start].matches('\n').count() + 1;
        let at = || format!("apps.{app}.variables.{name} (line {line})");
        let variable = match source.get_ref() {
            VariableSource::Value(value) => Variable {
                value: value.clone(),
                secret: false,
            },
            VariableSource::Env { env } => Variable {
                value: std::env::var(env).with_context(|| {
                    format!("{}: the environment variable {env} is not set", at())
                })?,
                secret: true,
            },
            VariableSource::File { file } => {
                let path = base.join(file);
                let value = std::fs::read_to_string(&path)
                    .with_context(|| format!("{}: reading {}", at(), path.display()))?;
                let value = value.strip_suffix('\n').unwrap_or(&value);
                Variable {
                    value: value.strip_suffix('\r').unwrap_or(value).to_owned(),
                    secret: true,
                }
            }
        };
        variables.insert(name.clone(), variable);
    }
    Ok(Variables::new(variables))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_config_parses() {
        let config = Config::parse(
            r#"
            [server]
            listen = "127.0.0.1:9000"
            cache_max_bytes = 1000000
            [tenants.acme]
            api_keys = ["acme-key-1"]
            quota = { memory_bytes = 1048576 }
            [apps.support]
            tenant = "acme"
            scenario = "support.wasm"
            limits = { idle_timeout = 1500, timers = 5 }
            "#,
        )
        .unwrap();
        assert_eq!(config.server.listen.port(), 9000);
        assert_eq!(config.server.cache_max_bytes, 1_000_000);
        let quota = &config.tenants["acme"].quota;
        assert_eq!((quota.memory_bytes, quota.max_sessions), (1 << 20, 500));
        let limits = &config.apps["support"].limits;
        assert_eq!(limits.idle_timeout.as_millis(), 1500);
        assert_eq!(limits.timers, 5);
        assert_eq!(
            limits.custom_data_bytes, 200,
            "unset limits keep their defaults"
        );
    }

    #[test]
    fn sip_routes_and_ports_are_checked() {
        let base = "[tenants.a]\napi_keys = [\"key-of-a\"]\n[apps.x]\ntenant = \"a\"\nscenario = \"x.wasm\"\n[sip]\nlisten = \"127.0.0.1:5060\"\n";
        let sip = Config::parse(&format!(
            "{base}routes = [{{ number = \"^1\", app = \"x\" }}]\nrtp_ports = [10000, 10001]\n"
        ))
        .unwrap()
        .sip
        .unwrap();
        assert_eq!((sip.routes.len(), sip.rtp_ports), (1, Some([10000, 10001])));
        for (extra, error) in [
            (
                "routes = [{ number = \"^1\", app = \"y\" }]",
                "sip.routes[0].app: there is no app named \"y\"",
            ),
            (
                "rtp_ports = [10001, 10001]",
                "sip.rtp_ports: [10001, 10001] holds no even port to give a call",
            ),
        ] {
            let got = Config::parse(&format!("{base}{extra}\n"))
                .unwrap_err()
                .to_string();
            assert_eq!(got, error);
        }
        let bad_pattern = Config::parse(&format!(
            "{base}routes = [{{ number = \"(\", app = \"x\" }}]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            bad_pattern.starts_with("sip.routes[0].number: "),
            "{bad_pattern}"
        );
    }

    #[test]
    fn variables_come_from_the_config_the_environment_and_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "file-secret\n").unwrap();
        // SAFETY: set before any thread of this test reads the environment;
        // the name is this test's own.
        unsafe { std::env::set_var("SESSIONBOX_TEST_SECRET", "env-secret") };
        let base = "[tenants.a]\napi_keys = [\"key-of-a\"]\n[apps.x]\ntenant = \"a\"\nscenario = \"x.wasm\"\n";
        let config = Config::parse_in(
            &format!(
                "{base}variables = {{ plain = \"hi\", env = {{ env = \"SESSIONBOX_TEST_SECRET\" }}, file = {{ file = \"token\" }} }}\n"
            ),
            dir.path(),
        )
        .unwrap();
        let variables = &config.apps["x"].resolved_variables;
        let value = |name| {
            let variable = variables.get(name).unwrap();
            (variable.value.as_str(), variable.secret)
        };
        assert_eq!(value("plain"), ("hi", false));
        assert_eq!(value("env"), ("env-secret", true));
        assert_eq!(value("file"), ("file-secret", true));

        let missing = format!(
            "{base}\n[apps.x.variables]\nok = \"fine\"\ntoken = {{ env = \"SESSIONBOX_TEST_UNSET\" }}\n"
        );
        let error = format!("{:#}", Config::parse(&missing).unwrap_err());
        assert!(
            error.starts_with("apps.x.variables.token (line 9): the environment variable SESSIONBOX_TEST_UNSET is not set"),
            "{error}"
        );
        let error = format!(
            "{:#}",
            Config::parse_in(
                &format!("{base}variables = {{ t = {{ file = \"nope\" }} }}\n"),
                dir.path()
            )
            .unwrap_err()
        );
        assert!(
            error.starts_with("apps.x.variables.t (line 6): reading "),
            "{error}"
        );
        assert!(error.contains("nope"), "{error}");
    }

    #[test]
    fn errors_name_the_key_and_the_line() {
        let error = Config::parse("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 3"), "{error}");
        assert!(error.contains("unknown field `lisen`"), "{error}");

        let error = Config::parse(
            "[tenants.a]\napi_keys = [\"key-of-a\"]\n[apps.x]\ntenant = \"b\"\nscenario = \"x.wasm\"\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(error, "apps.x.tenant: there is no tenant named \"b\"");

        let error = Config::parse(
            "[tenants.a]\napi_keys = [\"key-of-a\"]\n[apps.x]\ntenant = \"a\"\n\
             scenario = \"x.wasm\"\ntts_url = \"ftp://tts.example/\"\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            error,
            "apps.x.tts_url: an http:// or https:// URL, not \"ftp://tts.example/\""
        );

        let error = Config::parse("[apps.x]\ntenant = \"b\"\nscenario = 5\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("line 3") && error.contains("scenario"),
            "{error}"
        );
    }

    #[test]
    fn the_environment_fills_in_a_cluster_node() {
        let text = "[server]\ndatabase = \"${DB}\"\npublic_url = \"http://lb/${NODE}\"\n\
                    [cluster]\nnode_id = \"${NODE}\"\ninternal_url = \"http://${NODE}:8080\"\n\
                    secret = \"${SECRET}\"\n";
        let env = |name: &str| {
            let value = match name {
                "DB" => "postgres://sb@127.0.0.1/sb",
                "NODE" => "n2",
                "SECRET" => "a-secret-of-the-nodes",
                _ => return None,
            };
            Some(value.to_owned())
        };
        let config = Config::parse_with_env(text, &env).unwrap();
        assert_eq!(
            config.server.database,
            Database::Postgres("postgres://sb@127.0.0.1/sb".into())
        );
        assert_eq!(config.server.storage(), config.server.database);
        assert_eq!(config.server.public_url.as_deref(), Some("http://lb/n2"));
        let cluster = config.cluster.unwrap();
        assert_eq!((cluster.node_id.as_str(), cluster.lease), ("n2", 10_000));
        assert_eq!(cluster.internal_url, "http://n2:8080");

        let unset = Config::parse_with_env(text, &|name| {
            (name != "SECRET").then(|| env(name)).flatten()
        });
        assert_eq!(
            format!("{:#}", unset.unwrap_err()),
            "line 7: the environment variable SECRET is not set"
        );
        let on_sqlite = text.replace("${DB}", "history.db");
        let error = Config::parse_with_env(&on_sqlite, &env)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("cluster: nodes share their history through PostgreSQL"),
            "{error}"
        );
        let short = Config::parse_with_env(text, &|name| {
            if name == "SECRET" {
                Some("short".into())
            } else {
                env(name)
            }
        });
        assert!(
            short
                .unwrap_err()
                .to_string()
                .starts_with("cluster.secret: ")
        );
    }

    #[test]
    fn sqlite_storage_sits_beside_the_history() {
        let config = Config::parse("[server]\ndatabase = \"/var/lib/sb/history.db\"\n").unwrap();
        assert_eq!(
            config.server.storage(),
            Database::File("/var/lib/sb/history-storage.db".into())
        );
    }
}
