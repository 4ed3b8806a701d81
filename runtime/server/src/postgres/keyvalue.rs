//! The apps' storage in PostgreSQL, shared by the nodes: a counter that
//! sessions on every node increment ends at the sum of their increments.
//!
//! Every write takes its app's usage row `FOR UPDATE` first, so an app's
//! writes are serialized (the quota check and the write are one
//! transaction) while other apps' go on in parallel, and every transaction
//! takes its locks in the same order (usage, then key): no deadlocks.
//! Nothing is cached: another node may write any key at any moment.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::GenericClient;
use tokio_postgres::Transaction;
use tokio_postgres::error::SqlState;

use sessionbox_host::keyvalue::{
    KeyPage, KeyValue, Pending, Quota, StorageError, Usage, expires_at, incremented, now_ms, room,
};

use super::Postgres;

/// How often expired keys are deleted.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

pub struct PgKeyValue {
    postgres: Arc<Postgres>,
}

impl PgKeyValue {
    /// The storage in `postgres`; deletes expired keys every minute for as
    /// long as it lives.
    pub fn new(postgres: Arc<Postgres>) -> Arc<PgKeyValue> {
        let store = Arc::new(PgKeyValue { postgres });
        let weak = Arc::downgrade(&store);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SWEEP_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(store) = weak.upgrade() else { return };
                if let Err(error) = sweep(&store.postgres).await {
                    tracing::warn!("deleting expired storage keys failed: {error}");
                }
            }
        });
        store
    }
}

async fn client(postgres: &Postgres) -> Result<deadpool_postgres::Object, StorageError> {
    postgres
        .client()
        .await
        .map_err(|e| StorageError::Unavailable(format!("{e:#}")))
}

/// Runs a write of `key`: `decide` sees the key's live value and says
/// what to write (a value and expiry) and what to answer. The write is
/// made only if the app's quota has room; expired keys are deleted
/// first when it has not.
async fn write<T: Send>(
    postgres: &Postgres,
    app: &str,
    key: &str,
    quota: Quota,
    decide: impl FnOnce(Option<&Found>) -> Result<Decision<T>, StorageError> + Send,
) -> Result<T, StorageError> {
    let mut client = client(postgres).await?;
    let tx = client.transaction().await.map_err(failure)?;
    let now = now_ms();
    let mut used = lock_usage(&tx, app).await?;
    let mut old = found(&tx, app, key).await?;
    let (value, expires_at_ms, answer) = match decide(live(&old, now))? {
        Decision::Answer(answer) => return Ok(answer),
        Decision::Write {
            value,
            expires_at_ms,
            answer,
        } => (value, expires_at_ms, answer),
    };
    let old_value = |old: &Option<Found>| old.as_ref().map(|found| found.value.clone());
    let mut fits = room(used, key, old_value(&old).as_deref(), &value, quota);
    if fits.is_err() {
        let purged = tx
            .execute(
                "DELETE FROM kv WHERE app = $1 AND expires_at_ms <= $2",
                &[&app, &now],
            )
            .await
            .map_err(failure)?;
        if purged > 0 {
            used = usage_of(&tx, app).await?;
            old = found(&tx, app, key).await?;
            fits = room(used, key, old_value(&old).as_deref(), &value, quota);
        }
    }
    fits?;
    tx.execute(
        "INSERT INTO kv (app, key, value, expires_at_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (app, key) DO UPDATE
             SET value = excluded.value, expires_at_ms = excluded.expires_at_ms",
        &[&app, &key, &value, &expires_at_ms],
    )
    .await
    .map_err(failure)?;
    tx.commit().await.map_err(failure)?;
    Ok(answer)
}

/// Deletes every app's expired keys, one app at a time under its lock.
async fn sweep(postgres: &Postgres) -> Result<(), StorageError> {
    let apps: Vec<String> = {
        let client = client(postgres).await?;
        client
            .query(
                "SELECT DISTINCT app FROM kv WHERE expires_at_ms <= $1",
                &[&now_ms()],
            )
            .await
            .map_err(failure)?
            .iter()
            .map(|row| row.get(0))
            .collect()
    };
    for app in apps {
        let mut client = client(postgres).await?;
        let tx = client.transaction().await.map_err(failure)?;
        lock_usage(&tx, &app).await?;
        tx.execute(
            "DELETE FROM kv WHERE app = $1 AND expires_at_ms <= $2",
            &[&app, &now_ms()],
        )
        .await
        .map_err(failure)?;
        tx.commit().await.map_err(failure)?;
    }
    Ok(())
}

/// What a write does, given the key's live value.
enum Decision<T> {
    /// Nothing to write: answer this.
    Answer(T),
    Write {
        value: Vec<u8>,
        expires_at_ms: Option<i64>,
        answer: T,
    },
}

/// A key's row: its value and expiry, expired or not.
struct Found {
    value: Vec<u8>,
    expires_at_ms: Option<i64>,
}

fn live(found: &Option<Found>, now: i64) -> Option<&Found> {
    found
        .as_ref()
        .filter(|found| found.expires_at_ms.is_none_or(|at| at > now))
}

/// Takes the app's usage row (creating it): the app's writes queue here.
async fn lock_usage(tx: &Transaction<'_>, app: &str) -> Result<Usage, StorageError> {
    tx.execute(
        "INSERT INTO kv_usage (app, keys, bytes) VALUES ($1, 0, 0) ON CONFLICT (app) DO NOTHING",
        &[&app],
    )
    .await
    .map_err(failure)?;
    let row = tx
        .query_one(
            "SELECT keys, bytes FROM kv_usage WHERE app = $1 FOR UPDATE",
            &[&app],
        )
        .await
        .map_err(failure)?;
    Ok(usage(&row))
}

async fn usage_of(client: &impl GenericClient, app: &str) -> Result<Usage, StorageError> {
    let row = client
        .query_opt("SELECT keys, bytes FROM kv_usage WHERE app = $1", &[&app])
        .await
        .map_err(failure)?;
    Ok(row.as_ref().map(usage).unwrap_or_default())
}

fn usage(row: &tokio_postgres::Row) -> Usage {
    Usage {
        keys: row.get::<_, i64>(0) as u64,
        bytes: row.get::<_, i64>(1) as u64,
    }
}

async fn found(
    client: &impl GenericClient,
    app: &str,
    key: &str,
) -> Result<Option<Found>, StorageError> {
    let row = client
        .query_opt(
            "SELECT value, expires_at_ms FROM kv WHERE app = $1 AND key = $2",
            &[&app, &key],
        )
        .await
        .map_err(failure)?;
    Ok(row.map(|row| Found {
        value: row.get(0),
        expires_at_ms: row.get(1),
    }))
}

/// A database failure as the storage's callers see it.
fn failure(error: tokio_postgres::Error) -> StorageError {
    match error.code() {
        Some(code) if *code == SqlState::DISK_FULL => StorageError::Full,
        _ => StorageError::Unavailable(error.to_string()),
    }
}

impl KeyValue for PgKeyValue {
    fn get(&self, app: &str, key: &str) -> Pending<Option<Vec<u8>>> {
        let (store, app, key) = (Arc::clone(&self.postgres), app.to_owned(), key.to_owned());
        Box::pin(async move {
            let client = client(&store).await?;
            let row = client
                .query_opt(
                    "SELECT value FROM kv WHERE app = $1 AND key = $2
                         AND (expires_at_ms IS NULL OR expires_at_ms > $3)",
                    &[&app, &key, &now_ms()],
                )
                .await
                .map_err(failure)?;
            Ok(row.map(|row| row.get(0)))
        })
    }

    fn set(
        &self,
        app: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
        quota: Quota,
    ) -> Pending<()> {
        let (store, app, key) = (Arc::clone(&self.postgres), app.to_owned(), key.to_owned());
        Box::pin(async move {
            write(&store, &app, &key, quota, |_| {
                Ok(Decision::Write {
                    value,
                    expires_at_ms: expires_at(now_ms(), ttl),
                    answer: (),
                })
            })
            .await
        })
    }

    fn delete(&self, app: &str, key: &str) -> Pending<bool> {
        let (store, app, key) = (Arc::clone(&self.postgres), app.to_owned(), key.to_owned());
        Box::pin(async move {
            let mut client = client(&store).await?;
            let tx = client.transaction().await.map_err(failure)?;
            lock_usage(&tx, &app).await?;
            let deleted = tx
                .query_opt(
                    "DELETE FROM kv WHERE app = $1 AND key = $2 RETURNING expires_at_ms",
                    &[&app, &key],
                )
                .await
                .map_err(failure)?;
            tx.commit().await.map_err(failure)?;
            let now = now_ms();
            Ok(deleted.is_some_and(|row| row.get::<_, Option<i64>>(0).is_none_or(|at| at > now)))
        })
    }

    fn increment(&self, app: &str, key: &str, delta: i64, quota: Quota) -> Pending<i64> {
        let (store, app, key) = (Arc::clone(&self.postgres), app.to_owned(), key.to_owned());
        Box::pin(async move {
            write(&store, &app, &key.clone(), quota, |current| {
                let value = current.map(|found| found.value.as_slice());
                let sum = incremented(&key, value, delta)?;
                Ok(Decision::Write {
                    value: sum.to_string().into_bytes(),
                    // An increment keeps the key's expiry.
                    expires_at_ms: current.and_then(|found| found.expires_at_ms),
                    answer: sum,
                })
            })
            .await
        })
    }

    fn compare_and_set(
        &self,
        app: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        ttl: Option<Duration>,
        quota: Quota,
    ) -> Pending<bool> {
        let (store, app, key) = (Arc::clone(&self.postgres), app.to_owned(), key.to_owned());
        Box::pin(async move {
            write(&store, &app, &key, quota, |current| {
                if current.map(|found| &found.value) != expected.as_ref() {
                    return Ok(Decision::Answer(false));
                }
                Ok(Decision::Write {
                    value,
                    expires_at_ms: expires_at(now_ms(), ttl),
                    answer: true,
                })
            })
            .await
        })
    }

    fn list(&self, app: &str, prefix: &str, after: Option<&str>, limit: u32) -> Pending<KeyPage> {
        let (store, app, prefix) = (
            Arc::clone(&self.postgres),
            app.to_owned(),
            prefix.to_owned(),
        );
        let after = after.map(str::to_owned);
        Box::pin(async move {
            let client = client(&store).await?;
            let rows = client
                .query(
                    "SELECT key FROM kv
                     WHERE app = $1 AND key >= $2 AND left(key, char_length($2)) = $2
                       AND key > coalesce($3, '')
                       AND (expires_at_ms IS NULL OR expires_at_ms > $4)
                     ORDER BY key LIMIT $5",
                    &[&app, &prefix, &after, &now_ms(), &(i64::from(limit) + 1)],
                )
                .await
                .map_err(failure)?;
            let mut keys: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
            let next = (keys.len() > limit as usize).then(|| {
                keys.truncate(limit as usize);
                keys.last().cloned().unwrap_or_default()
            });
            Ok(KeyPage { keys, next })
        })
    }

    fn usage(&self, app: &str) -> Pending<Usage> {
        let (store, app) = (Arc::clone(&self.postgres), app.to_owned());
        Box::pin(async move {
            let client = client(&store).await?;
            usage_of(&client, &app).await
        })
    }
}
