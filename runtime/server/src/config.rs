//! The server's configuration file (TOML): server settings, tenants and
//! their API keys, and apps (a scenario, its tenant, its limits).
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:8080"
//! database = "sessionbox.db"
//!
//! [tenants.acme]
//! api_keys = ["acme-secret-key"]
//!
//! [apps.support-line]
//! tenant = "acme"
//! scenario = "scenarios/support.wasm"   # relative to this file
//! limits = { idle_timeout = 30000 }      # milliseconds; see `Limits`
//!
//! [sip]                                  # off unless present
//! listen = "127.0.0.1:5060"              # UDP and TCP
//! routes = [{ number = "^1000$", app = "support-line" }]
//! trunk = { address = "sip.example.net:5060", username = "u", password = "p" }
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

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
    /// The SQLite database of session history and logs.
    pub database: PathBuf,
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
            database: PathBuf::from("sessionbox.db"),
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
}

/// The `scenario` value that names the scenario built into the binary.
pub const BUNDLED: &str = "bundled:remote-control";

impl Config {
    /// Reads and checks a config file. Errors name the file, the key and
    /// the line.
    pub fn load(path: &Path) -> Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut config = Config::parse(&text).with_context(|| format!("{}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for app in config.apps.values_mut() {
            if app.scenario.is_relative() && app.scenario.as_os_str() != BUNDLED {
                app.scenario = base.join(&app.scenario);
            }
        }
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        config.check()?;
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
        for (app, settings) in &self.apps {
            if !self.tenants.contains_key(&settings.tenant) {
                bail!(
                    "apps.{app}.tenant: there is no tenant named {:?}",
                    settings.tenant
                );
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

        let error = Config::parse("[apps.x]\ntenant = \"b\"\nscenario = 5\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("line 3") && error.contains("scenario"),
            "{error}"
        );
    }
}
