//! `storage`: the app's key-value store, shared by all its sessions.
//!
//! The capability checks what one operation may carry (the key, value and
//! TTL limits, the operations a handler may make) and passes it to the
//! app's backend, which enforces the app's quota and answers once the
//! write is durable. Its host functions are async: a session waits for the
//! database on its own fiber, never on a tokio worker. Allowed while running
//! and terminating (saving the final state is what Terminating is for).

use std::sync::Arc;
use wasmtime::component::{HasData, Linker};

use super::gate::refusal_kind_name;
use super::{Common, Factor, Gate, Phases, Refused, SessionContext, WasiStore};
use crate::bindings::scenario::storage::{self, KeyPage};
use crate::bindings::{Capability, Refusal, RefusalKind};
use crate::keyvalue::{KeyValue, Pending, Quota, StorageError};
use crate::limits::Limits;
use crate::metrics::{Metrics, StorageLabels};

const PHASES: Phases = Phases::UntilTerminated;

/// Keys one `list-keys` call returns at most.
pub const MAX_LIST_KEYS: u32 = 1_000;

/// An app's store: the backend, and the app whose keys it reaches.
#[derive(Clone)]
pub struct AppStorage {
    pub app: Arc<str>,
    pub backend: Arc<dyn KeyValue>,
}

pub struct Storage {
    store: Option<AppStorage>,
    limits: Arc<Limits>,
    /// Operations the running handler made.
    ops_in_handler: usize,
    metrics: Arc<Metrics>,
}

pub struct StorageView<'a> {
    storage: &'a mut Storage,
    gate: &'a Gate,
}

impl HasData for Storage {
    type Data<'a> = StorageView<'a>;
}

impl Factor for Storage {
    type View = Storage;

    fn new(cx: &SessionContext<'_>) -> Self {
        Storage {
            store: cx.app.storage.clone(),
            limits: Arc::clone(cx.limits),
            ops_in_handler: 0,
            metrics: Arc::clone(cx.metrics),
        }
    }

    fn view<'a>(&'a mut self, common: Common<'a>) -> StorageView<'a> {
        StorageView {
            storage: self,
            gate: common.gate,
        }
    }

    fn link<T: WasiStore>(
        linker: &mut Linker<T>,
        get: fn(&mut T) -> StorageView<'_>,
    ) -> wasmtime::Result<()> {
        storage::add_to_linker::<T, Storage>(linker, get)
    }

    fn handler_begins(&mut self) {
        self.ops_in_handler = 0;
    }
}

impl Storage {
    /// The store, if one more operation in this handler is allowed.
    fn next_op(&mut self) -> Result<&AppStorage, Refused> {
        let store = self.store.as_ref().ok_or_else(|| Refused {
            kind: RefusalKind::Unavailable,
            reason: "this node has no storage configured".into(),
        })?;
        let most = self.limits.storage_ops_per_handler;
        if self.ops_in_handler >= most {
            return Err(Refused::rule(format!(
                "a handler may make {most} storage operations; this one made them all"
            )));
        }
        self.ops_in_handler += 1;
        Ok(store)
    }
}

/// The rules one operation's arguments must keep, shared by the scenario's
/// capability and the operators' API.
pub mod rules {
    use std::time::Duration;

    use super::{MAX_LIST_KEYS, Refused};
    use crate::keyvalue::Quota;
    use crate::limits::Limits;

    /// What the app's store may hold.
    pub fn quota(limits: &Limits) -> Quota {
        Quota {
            keys: limits.storage_keys,
            bytes: limits.storage_bytes,
        }
    }

    fn rule(reason: String) -> Refused {
        Refused::rule(reason)
    }

    pub fn check_key(limits: &Limits, key: &str) -> Result<(), Refused> {
        let most = limits.storage_key_bytes;
        if key.is_empty() {
            Err(rule("a key cannot be empty".into()))
        } else if key.contains('\0') {
            // PostgreSQL's text cannot hold it: refused on every backend alike.
            Err(rule("a key cannot contain a NUL character".into()))
        } else if key.len() > most {
            Err(rule(format!(
                "keys are limited to {most} bytes (got {})",
                key.len()
            )))
        } else {
            Ok(())
        }
    }

    pub fn check_value(limits: &Limits, value: &[u8]) -> Result<(), Refused> {
        let most = limits.storage_value_bytes;
        if value.len() > most {
            return Err(rule(format!(
                "values are limited to {most} bytes (got {})",
                value.len()
            )));
        }
        Ok(())
    }

    /// What a write carries: its key, its value and its TTL (returned).
    pub fn check_write(
        limits: &Limits,
        key: &str,
        value: &[u8],
        ttl_seconds: Option<u32>,
    ) -> Result<Option<Duration>, Refused> {
        check_key(limits, key)?;
        check_value(limits, value)?;
        ttl(limits, ttl_seconds)
    }

    pub fn check_listing(limits: &Limits, prefix: &str, limit: u32) -> Result<(), Refused> {
        let most = limits.storage_key_bytes;
        if prefix.len() > most {
            return Err(rule(format!(
                "a prefix is the start of a key: at most {most} bytes (got {})",
                prefix.len()
            )));
        }
        if !(1..=MAX_LIST_KEYS).contains(&limit) {
            return Err(rule(format!(
                "list-keys returns 1 to {MAX_LIST_KEYS} keys at a time (asked for {limit})"
            )));
        }
        Ok(())
    }

    fn ttl(limits: &Limits, ttl_seconds: Option<u32>) -> Result<Option<Duration>, Refused> {
        let Some(seconds) = ttl_seconds else {
            return Ok(None);
        };
        let most = limits.storage_max_ttl;
        let ttl = Duration::from_secs(seconds.into());
        if seconds == 0 {
            Err(rule("a TTL is at least 1 second".into()))
        } else if ttl > most {
            Err(rule(format!(
                "TTLs are limited to {} seconds ({} days; got {seconds})",
                most.as_secs(),
                most.as_secs() / 86_400
            )))
        } else {
            Ok(Some(ttl))
        }
    }
}

impl From<StorageError> for Refused {
    fn from(error: StorageError) -> Self {
        let kind = match &error {
            StorageError::Quota(_) => RefusalKind::Quota,
            StorageError::NotApplicable(_) => RefusalKind::Rule,
            StorageError::Full => RefusalKind::Full,
            StorageError::Unavailable(_) => RefusalKind::Unavailable,
        };
        Refused {
            kind,
            reason: error.to_string(),
        }
    }
}

impl StorageView<'_> {
    /// One operation: the phase, then what `checked` found of its
    /// arguments, then the handler's count; then the backend. The outcome is
    /// booked, and counted by kind.
    async fn run<A, T>(
        &mut self,
        op: &'static str,
        checked: Result<A, Refused>,
        call: impl FnOnce(&AppStorage, Quota, A) -> Pending<T>,
    ) -> wasmtime::Result<Result<T, Refusal>> {
        let quota = rules::quota(&self.storage.limits);
        let admitted = self
            .gate
            .check(PHASES)
            .and(checked)
            .and_then(|args| Ok(call(self.storage.next_op()?, quota, args)));
        let outcome = match admitted {
            Ok(pending) => pending.await.map_err(Refused::from),
            Err(refused) => Err(refused),
        };
        let labels = StorageLabels {
            op,
            outcome: outcome
                .as_ref()
                .map_or_else(|refused| refusal_kind_name(refused.kind), |_| "ok"),
        };
        let operations = &self.storage.metrics.storage_operations;
        operations.get_or_create(&labels).inc();
        Ok(self.gate.book(Capability::Storage, outcome))
    }
}

impl storage::Host for StorageView<'_> {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, Refusal>> {
        let checked = rules::check_key(&self.storage.limits, &key);
        self.run("get", checked, |store, _, ()| {
            store.backend.get(&store.app, &key)
        })
        .await
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_seconds: Option<u32>,
    ) -> wasmtime::Result<Result<(), Refusal>> {
        let checked = rules::check_write(&self.storage.limits, &key, &value, ttl_seconds);
        self.run("set", checked, |store, quota, ttl| {
            store.backend.set(&store.app, &key, value, ttl, quota)
        })
        .await
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, Refusal>> {
        let checked = rules::check_key(&self.storage.limits, &key);
        self.run("delete", checked, |store, _, ()| {
            store.backend.delete(&store.app, &key)
        })
        .await
    }

    async fn increment(
        &mut self,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, Refusal>> {
        let checked = rules::check_key(&self.storage.limits, &key);
        self.run("increment", checked, |store, quota, ()| {
            store.backend.increment(&store.app, &key, delta, quota)
        })
        .await
    }

    async fn compare_and_set(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        ttl_seconds: Option<u32>,
    ) -> wasmtime::Result<Result<bool, Refusal>> {
        let checked = rules::check_write(&self.storage.limits, &key, &value, ttl_seconds);
        self.run("compare-and-set", checked, |store, quota, ttl| {
            let backend = &store.backend;
            backend.compare_and_set(&store.app, &key, expected, value, ttl, quota)
        })
        .await
    }

    async fn list_keys(
        &mut self,
        prefix: String,
        after: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<KeyPage, Refusal>> {
        let checked = rules::check_listing(&self.storage.limits, &prefix, limit);
        let page = self
            .run("list-keys", checked, |store, _, ()| {
                let backend = &store.backend;
                backend.list(&store.app, &prefix, after.as_deref(), limit)
            })
            .await?;
        Ok(page.map(|page| KeyPage {
            keys: page.keys,
            next: page.next,
        }))
    }
}
