//! The apps a server runs: each a scenario owned by a tenant, and the API
//! keys that say which tenant a request acts for.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use anyhow::{Context, Result};

use crate::config::{AppConfig, BUNDLED, Config, TenantConfig};
use crate::recordings::{AppRecordings, Recordings};
use sessionbox_host::capabilities::AppState;
use sessionbox_host::capabilities::storage::AppStorage;
use sessionbox_host::keyvalue::KeyValue;
use sessionbox_host::runtime::Runtime;
use sessionbox_host::scenario::Scenario;
use sessionbox_host::sync::RwLockExt;

/// The scenario `serve` runs when it is given no config: the
/// remote-control example (guest-examples/rust/remote-control), built.
pub const BUNDLED_SCENARIO: &[u8] = include_bytes!("../../assets/remote-control.wasm");

#[derive(Clone)]
pub(crate) struct App {
    pub tenant: String,
    pub scenario: Arc<Scenario>,
    /// What its sessions share: its storage and variables.
    pub state: AppState,
    /// The file the scenario was loaded from and its modification time,
    /// watched for changes (None for the bundled scenario).
    file: Option<(PathBuf, Option<SystemTime>)>,
}

pub(crate) struct Apps {
    apps: RwLock<BTreeMap<String, App>>,
    /// API key -> tenant.
    keys: HashMap<String, String>,
}

impl Apps {
    /// Loads every app's scenario (each validated; a bad one is an error
    /// that names it). Each app's store is its own in `storage`, and its
    /// recordings its own in `recordings`.
    pub fn load(
        config: &Config,
        runtime: &Runtime,
        storage: &Arc<dyn KeyValue>,
        recordings: &Arc<Recordings>,
    ) -> Result<Apps> {
        let mut apps = BTreeMap::new();
        for (name, app) in &config.apps {
            let file = (app.scenario.as_os_str() != BUNDLED)
                .then(|| (app.scenario.clone(), modified(&app.scenario)));
            let scenario = load_app(runtime, name, app)?;
            apps.insert(
                name.clone(),
                App {
                    tenant: app.tenant.clone(),
                    scenario,
                    state: AppState {
                        storage: Some(AppStorage {
                            app: name.as_str().into(),
                            backend: Arc::clone(storage),
                        }),
                        variables: Arc::clone(&app.resolved_variables),
                        recordings: Some(Arc::new(AppRecordings {
                            app: name.clone(),
                            recordings: Arc::clone(recordings),
                        })),
                        tts_url: app.tts_url.as_deref().map(Arc::from),
                    },
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
        Ok(Apps {
            apps: RwLock::new(apps),
            keys,
        })
    }

    /// The tenant an API key acts for.
    pub fn tenant_of(&self, key: &str) -> Option<&str> {
        self.keys.get(key).map(String::as_str)
    }

    /// The tenant's app named `name` (another tenant's app is not found).
    pub fn of_tenant(&self, tenant: &str, name: &str) -> Option<App> {
        let apps = self.apps.read_locked();
        apps.get(name).filter(|app| app.tenant == tenant).cloned()
    }

    /// The app named `name`, whatever its tenant (SIP routes name apps).
    pub fn named(&self, name: &str) -> Option<App> {
        self.apps.read_locked().get(name).cloned()
    }

    /// The content hash of the scenario `app` runs now.
    pub fn scenario_hash(&self, app: &str) -> Option<String> {
        let apps = self.apps.read_locked();
        apps.get(app)
            .map(|app| app.scenario.content_hash().to_owned())
    }

    /// Validates a new scenario for an app and swaps it in: new sessions
    /// get it, live ones keep the one they started with.
    pub fn replace_scenario(
        &self,
        runtime: &Runtime,
        name: &str,
        bytes: &[u8],
    ) -> Result<Arc<Scenario>> {
        let limits = {
            let apps = self.apps.read_locked();
            apps[name].scenario.limits().clone()
        };
        let scenario = runtime.load(name, bytes, limits)?;
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
    pub fn reload_changed(&self, runtime: &Runtime) -> Vec<String> {
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
                .and_then(|bytes| self.replace_scenario(runtime, &name, &bytes));
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
}

fn modified(path: &Path) -> Option<SystemTime> {
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
