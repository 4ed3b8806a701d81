//! Apps' key-value storage in an embedded SQLite database, the default
//! backend.
//!
//! One thread owns the database: every operation is a request to it, and
//! it runs the requests that queued up meanwhile in one transaction, so
//! concurrent writers share a commit (and its fsync: the database runs with
//! `synchronous = FULL`, so an answered write survives a crash of the
//! process or the machine). Because that thread applies every write in
//! order, it also keeps a cache of values in memory that is never stale: a
//! get of a cached key answers at once, without a trip to the thread.
//!
//! The database is opened in exclusive locking mode: a second process on
//! the same file fails at start instead of writing behind the cache.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use tokio::sync::oneshot;

use super::{
    KeyPage, KeyValue, Pending, Quota, StorageError, Usage, expires_at, incremented, now_ms, room,
};
use crate::metrics::{AppLabels, Metrics};
use crate::sync::MutexExt;

/// The tables, and the triggers that keep each app's usage next to its
/// keys: whatever writes a key (a session, the API, the expiry sweep)
/// keeps the count exact.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    app TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    expires_at_ms INTEGER,
    PRIMARY KEY (app, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires_at_ms) WHERE expires_at_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS kv_usage (
    app TEXT PRIMARY KEY,
    keys INTEGER NOT NULL,
    bytes INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS kv_inserted AFTER INSERT ON kv BEGIN
    INSERT INTO kv_usage (app, keys, bytes)
    VALUES (new.app, 1, length(CAST(new.key AS BLOB)) + length(new.value))
    ON CONFLICT (app) DO UPDATE SET keys = keys + 1, bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER IF NOT EXISTS kv_deleted AFTER DELETE ON kv BEGIN
    UPDATE kv_usage
    SET keys = keys - 1, bytes = bytes - length(CAST(old.key AS BLOB)) - length(old.value)
    WHERE app = old.app;
END;
CREATE TRIGGER IF NOT EXISTS kv_updated AFTER UPDATE OF value ON kv BEGIN
    UPDATE kv_usage SET bytes = bytes + length(new.value) - length(old.value)
    WHERE app = new.app;
END;
";

/// Requests run in one transaction at most.
const BATCH: usize = 256;
/// How often expired keys are deleted.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Values the cache holds at most, in bytes of keys and values.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// Opens (creating if need be) a storage database as the backend uses it:
/// WAL, `synchronous = FULL`, the schema applied. Errors name the file.
pub fn open_database(path: &Path) -> Result<Connection> {
    let open = || -> Result<Connection> {
        let db = Connection::open(path)?;
        // The file has one owner: a busy one is held by another process,
        // and waiting would not free it.
        db.busy_timeout(Duration::ZERO)?;
        db.pragma_update(None, "journal_mode", "wal")?;
        db.pragma_update(None, "synchronous", "full")?;
        db.execute_batch(SCHEMA)?;
        Ok(db)
    };
    open().with_context(|| format!("opening the storage database {}", path.display()))
}

pub struct SqliteKeyValue {
    requests: Sender<Request>,
    cache: Arc<Mutex<Cache>>,
    /// The database's thread, joined on drop: once the store is gone, so
    /// is its hold on the file.
    owner: Option<JoinHandle<()>>,
}

impl SqliteKeyValue {
    /// Opens the database at `path` and starts its thread. A file that is
    /// not a database, or one another process holds, is an error here.
    pub fn open(path: &Path, cache_bytes: usize, metrics: Arc<Metrics>) -> Result<Self> {
        let db = open_database(path)?;
        // Taken by the first write, then held: no other process writes
        // behind the cache.
        db.pragma_update(None, "locking_mode", "exclusive")?;
        db.execute_batch("BEGIN IMMEDIATE; COMMIT;")
            .with_context(|| format!("locking the storage database {}", path.display()))?;
        let cache = Arc::new(Mutex::new(Cache::new(cache_bytes)));
        let (requests, received) = mpsc::channel();
        let owner = Owner {
            db,
            cache: Arc::clone(&cache),
            metrics,
        };
        let owner = std::thread::Builder::new()
            .name("sessionbox-storage".into())
            .spawn(move || owner.run(received))
            .context("starting the storage thread")?;
        Ok(SqliteKeyValue {
            requests,
            cache,
            owner: Some(owner),
        })
    }

    /// Sends `op` to the database's thread; `pick` takes the answer's value.
    fn ask<T: Send + 'static>(&self, app: &str, op: Op, pick: fn(Answer) -> T) -> Pending<T> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            app: app.to_owned(),
            op,
            reply,
        };
        let sent = self.requests.send(request);
        Box::pin(async move {
            sent.map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())?.map(pick)
        })
    }
}

impl Drop for SqliteKeyValue {
    fn drop(&mut self) {
        // Hanging up is what ends the thread, after the requests queued.
        drop(std::mem::replace(&mut self.requests, mpsc::channel().0));
        if let Some(owner) = self.owner.take() {
            let _ = owner.join();
        }
    }
}

fn stopped() -> StorageError {
    StorageError::Unavailable("the storage thread stopped".into())
}

impl KeyValue for SqliteKeyValue {
    fn get(&self, app: &str, key: &str) -> Pending<Option<Vec<u8>>> {
        if let Some(value) = self.cache.locked().get(app, key, now_ms()) {
            return Box::pin(std::future::ready(Ok(value)));
        }
        let op = Op::Get {
            key: key.to_owned(),
        };
        self.ask(app, op, |answer| match answer {
            Answer::Value(value) => value,
            _ => unreachable!("a get answers with a value"),
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
        let op = Op::Set {
            key: key.to_owned(),
            value,
            ttl,
            quota,
        };
        self.ask(app, op, |_| ())
    }

    fn delete(&self, app: &str, key: &str) -> Pending<bool> {
        let op = Op::Delete {
            key: key.to_owned(),
        };
        self.ask(app, op, Answer::into_bool)
    }

    fn increment(&self, app: &str, key: &str, delta: i64, quota: Quota) -> Pending<i64> {
        let op = Op::Increment {
            key: key.to_owned(),
            delta,
            quota,
        };
        self.ask(app, op, |answer| match answer {
            Answer::Sum(sum) => sum,
            _ => unreachable!("an increment answers with the sum"),
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
        let op = Op::CompareAndSet {
            key: key.to_owned(),
            expected,
            value,
            ttl,
            quota,
        };
        self.ask(app, op, Answer::into_bool)
    }

    fn list(&self, app: &str, prefix: &str, after: Option<&str>, limit: u32) -> Pending<KeyPage> {
        let op = Op::List {
            prefix: prefix.to_owned(),
            after: after.map(str::to_owned),
            limit,
        };
        self.ask(app, op, |answer| match answer {
            Answer::Page(page) => page,
            _ => unreachable!("a list answers with a page"),
        })
    }

    fn usage(&self, app: &str) -> Pending<Usage> {
        self.ask(app, Op::Usage, |answer| match answer {
            Answer::Usage(usage) => usage,
            _ => unreachable!("a usage request answers with the usage"),
        })
    }
}

struct Request {
    app: String,
    op: Op,
    reply: oneshot::Sender<Result<Answer, StorageError>>,
}

enum Op {
    Get {
        key: String,
    },
    Set {
        key: String,
        value: Vec<u8>,
        ttl: Option<Duration>,
        quota: Quota,
    },
    Delete {
        key: String,
    },
    Increment {
        key: String,
        delta: i64,
        quota: Quota,
    },
    CompareAndSet {
        key: String,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        ttl: Option<Duration>,
        quota: Quota,
    },
    List {
        prefix: String,
        after: Option<String>,
        limit: u32,
    },
    Usage,
}

impl Op {
    fn writes(&self) -> bool {
        !matches!(self, Op::Get { .. } | Op::List { .. } | Op::Usage)
    }
}

enum Answer {
    Value(Option<Vec<u8>>),
    Done,
    Bool(bool),
    Sum(i64),
    Page(KeyPage),
    Usage(Usage),
}

impl Answer {
    fn into_bool(self) -> bool {
        match self {
            Answer::Bool(answer) => answer,
            _ => unreachable!("a delete or compare-and-set answers yes or no"),
        }
    }
}

/// What an applied operation leaves the cache knowing about its key.
struct Learned {
    key: String,
    value: Option<Vec<u8>>,
    expires_at_ms: Option<i64>,
}

/// An operation's outcome: its answer (or why it did nothing), and what
/// the cache learns once the transaction commits.
type Applied = (Result<Answer, StorageError>, Option<Learned>);

/// The database's one thread.
struct Owner {
    db: Connection,
    cache: Arc<Mutex<Cache>>,
    /// Where each app's usage is shown, after each write.
    metrics: Arc<Metrics>,
}

impl Owner {
    fn run(mut self, requests: Receiver<Request>) {
        let mut next_sweep = Instant::now() + SWEEP_EVERY;
        loop {
            let wait = next_sweep.saturating_duration_since(Instant::now());
            match requests.recv_timeout(wait) {
                Ok(first) => {
                    let mut batch = vec![first];
                    batch.extend(requests.try_iter().take(BATCH - 1));
                    self.run_batch(batch);
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(e) = self.sweep() {
                        tracing::warn!("deleting expired storage keys failed: {e}");
                    }
                    next_sweep = Instant::now() + SWEEP_EVERY;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Runs a batch in one transaction. If the database fails it (a full
    /// disk, say), each request runs again alone, so that one failing write
    /// does not fail the reads and smaller writes queued beside it.
    fn run_batch(&mut self, batch: Vec<Request>) {
        let now = now_ms();
        match self.transaction(&batch, now) {
            Ok(applied) => self.answer(batch, applied),
            Err(_) if batch.len() > 1 => {
                for request in batch {
                    let alone = self.transaction(std::slice::from_ref(&request), now);
                    match alone {
                        Ok(applied) => self.answer(vec![request], applied),
                        Err(error) => {
                            let _ = request.reply.send(Err(error));
                        }
                    }
                }
            }
            Err(error) => {
                for request in batch {
                    let _ = request.reply.send(Err(error.clone()));
                }
            }
        }
    }

    fn transaction(&mut self, batch: &[Request], now: i64) -> Result<Vec<Applied>, StorageError> {
        let tx = self.db.transaction().map_err(failure)?;
        let applied = batch
            .iter()
            .map(|request| apply(&tx, &request.app, &request.op, now))
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(failure)?;
        tx.commit().map_err(failure)?;
        Ok(applied)
    }

    /// Tells the cache, then the requesters (whoever hears back reads what
    /// was written), then the metrics.
    fn answer(&self, batch: Vec<Request>, mut applied: Vec<Applied>) {
        let mut written = Vec::new();
        {
            let mut cache = self.cache.locked();
            for (request, (_, learned)) in batch.iter().zip(&mut applied) {
                if let Some(learned) = learned.take() {
                    cache.learn(&request.app, learned);
                }
                if request.op.writes() && !written.contains(&request.app) {
                    written.push(request.app.clone());
                }
            }
        }
        for (request, (answer, _)) in batch.into_iter().zip(applied) {
            let _ = request.reply.send(answer);
        }
        for app in written {
            if let Ok(used) = usage_row(&self.db, &app) {
                self.show_usage(app, used);
            }
        }
    }

    fn show_usage(&self, app: String, used: Usage) {
        let labels = AppLabels { app };
        let metrics = &self.metrics;
        let bytes = metrics.storage_bytes.get_or_create(&labels);
        bytes.set(used.bytes as i64);
        let keys = metrics.storage_keys.get_or_create(&labels);
        keys.set(used.keys as i64);
    }

    /// Deletes the expired keys of every app.
    fn sweep(&mut self) -> rusqlite::Result<()> {
        let swept = self
            .db
            .execute("DELETE FROM kv WHERE expires_at_ms <= ?1", [now_ms()])?;
        if swept > 0 {
            let mut statement = self.db.prepare("SELECT app, keys, bytes FROM kv_usage")?;
            let rows = statement.query_map([], |r| {
                let used = Usage {
                    keys: r.get(1)?,
                    bytes: r.get(2)?,
                };
                Ok((r.get(0)?, used))
            })?;
            for row in rows {
                let (app, used) = row?;
                self.show_usage(app, used);
            }
        }
        Ok(())
    }
}

/// A database failure as the storage's callers see it.
fn failure(error: rusqlite::Error) -> StorageError {
    match error.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => StorageError::Full,
        _ => StorageError::Unavailable(error.to_string()),
    }
}

/// A key's value and expiry, if the row is there (expired or not).
type Row = (Vec<u8>, Option<i64>);

fn row(db: &Connection, app: &str, key: &str) -> rusqlite::Result<Option<Row>> {
    db.prepare_cached("SELECT value, expires_at_ms FROM kv WHERE app = ?1 AND key = ?2")?
        .query_row(params![app, key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

/// The row, if it has not expired.
fn live(row: &Option<Row>, now: i64) -> Option<&Row> {
    row.as_ref()
        .filter(|(_, expires)| expires.is_none_or(|at| at > now))
}

impl Learned {
    /// The key as the cache should know it: `found` if it is live.
    fn of(key: &str, found: Option<&Row>) -> Self {
        Learned {
            key: key.to_owned(),
            value: found.map(|(value, _)| value.clone()),
            expires_at_ms: found.and_then(|(_, expires)| *expires),
        }
    }
}

fn apply(db: &Connection, app: &str, op: &Op, now: i64) -> rusqlite::Result<Applied> {
    Ok(match op {
        Op::Get { key } => {
            let old = row(db, app, key)?;
            let found = live(&old, now);
            let value = found.map(|(value, _)| value.clone());
            (Ok(Answer::Value(value)), Some(Learned::of(key, found)))
        }
        Op::Set {
            key,
            value,
            ttl,
            quota,
        } => {
            let old = row(db, app, key)?;
            let write = Write {
                key,
                value,
                expires_at_ms: expires_at(now, *ttl),
            };
            let (written, learned) = write.apply(db, app, old, *quota, now)?;
            (written.map(|()| Answer::Done), learned)
        }
        Op::Delete { key } => {
            let existed = live(&row(db, app, key)?, now).is_some();
            db.prepare_cached("DELETE FROM kv WHERE app = ?1 AND key = ?2")?
                .execute(params![app, key])?;
            (Ok(Answer::Bool(existed)), Some(Learned::of(key, None)))
        }
        Op::Increment { key, delta, quota } => {
            let old = row(db, app, key)?;
            let found = live(&old, now);
            let expires_at_ms = found.and_then(|(_, expires)| *expires);
            let sum = incremented(key, found.map(|(value, _)| value.as_slice()), *delta);
            match sum {
                Ok(sum) => {
                    let value = sum.to_string().into_bytes();
                    let write = Write {
                        key,
                        value: &value,
                        expires_at_ms,
                    };
                    let (written, learned) = write.apply(db, app, old, *quota, now)?;
                    (written.map(|()| Answer::Sum(sum)), learned)
                }
                Err(error) => (Err(error), None),
            }
        }
        Op::CompareAndSet {
            key,
            expected,
            value,
            ttl,
            quota,
        } => {
            let old = row(db, app, key)?;
            let current = live(&old, now);
            if current.map(|(value, _)| value) != expected.as_ref() {
                (Ok(Answer::Bool(false)), Some(Learned::of(key, current)))
            } else {
                let write = Write {
                    key,
                    value,
                    expires_at_ms: expires_at(now, *ttl),
                };
                let (written, learned) = write.apply(db, app, old, *quota, now)?;
                (written.map(|()| Answer::Bool(true)), learned)
            }
        }
        Op::List {
            prefix,
            after,
            limit,
        } => (
            list(db, app, prefix, after.as_deref(), *limit, now).map(Answer::Page),
            None,
        ),
        Op::Usage => (usage(db, app).map(Answer::Usage), None),
    })
}

/// A key's new value and expiry.
struct Write<'a> {
    key: &'a str,
    value: &'a [u8],
    expires_at_ms: Option<i64>,
}

impl Write<'_> {
    /// Writes it over `old` (the key's row as the caller read it, expired or
    /// not), if the app's quota has room: expired keys count until they are
    /// deleted, which a full quota does first.
    fn apply(
        &self,
        db: &Connection,
        app: &str,
        mut old: Option<Row>,
        quota: Quota,
        now: i64,
    ) -> rusqlite::Result<(Result<(), StorageError>, Option<Learned>)> {
        let mut room = self.fits(db, app, &old, quota)?;
        if room.is_err() {
            let purged = db
                .prepare_cached("DELETE FROM kv WHERE app = ?1 AND expires_at_ms <= ?2")?
                .execute(params![app, now])?;
            if purged > 0 {
                old = row(db, app, self.key)?;
                room = self.fits(db, app, &old, quota)?;
            }
        }
        if let Err(error) = room {
            return Ok((Err(error), None));
        }
        db.prepare_cached(
            "INSERT INTO kv (app, key, value, expires_at_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (app, key) DO UPDATE
             SET value = excluded.value, expires_at_ms = excluded.expires_at_ms",
        )?
        .execute(params![app, self.key, self.value, self.expires_at_ms])?;
        let learned = Learned {
            key: self.key.to_owned(),
            value: Some(self.value.to_vec()),
            expires_at_ms: self.expires_at_ms,
        };
        Ok((Ok(()), Some(learned)))
    }

    /// Whether the app's store has room for it, replacing `old`.
    fn fits(
        &self,
        db: &Connection,
        app: &str,
        old: &Option<Row>,
        quota: Quota,
    ) -> rusqlite::Result<Result<(), StorageError>> {
        let used = usage_row(db, app)?;
        let old = old.as_ref().map(|(value, _)| value.as_slice());
        Ok(room(used, self.key, old, self.value, quota))
    }
}

fn list(
    db: &Connection,
    app: &str,
    prefix: &str,
    after: Option<&str>,
    limit: u32,
    now: i64,
) -> Result<KeyPage, StorageError> {
    let page = || -> rusqlite::Result<Vec<String>> {
        // `key >= prefix AND substr(key, 1, len) = prefix` uses the primary
        // key's order, and compares bytes, not LIKE patterns.
        let mut statement = db.prepare_cached(
            "SELECT key FROM kv
             WHERE app = ?1 AND key >= ?2 AND substr(key, 1, length(?2)) = ?2
               AND key > coalesce(?3, '')
               AND (expires_at_ms IS NULL OR expires_at_ms > ?4)
             ORDER BY key LIMIT ?5",
        )?;
        let rows = statement.query_map(
            params![app, prefix, after, now, i64::from(limit) + 1],
            |r| r.get(0),
        )?;
        rows.collect()
    };
    let mut keys = page().map_err(failure)?;
    let next = (keys.len() > limit as usize).then(|| {
        keys.truncate(limit as usize);
        keys.last().cloned().unwrap_or_default()
    });
    Ok(KeyPage { keys, next })
}

fn usage(db: &Connection, app: &str) -> Result<Usage, StorageError> {
    usage_row(db, app).map_err(failure)
}

fn usage_row(db: &Connection, app: &str) -> rusqlite::Result<Usage> {
    let mut statement = db.prepare_cached("SELECT keys, bytes FROM kv_usage WHERE app = ?1")?;
    let used = statement
        .query_row([app], |r| {
            Ok(Usage {
                keys: r.get(0)?,
                bytes: r.get(1)?,
            })
        })
        .optional()?;
    Ok(used.unwrap_or_default())
}

/// Values as the database holds them, per app then key; absent keys too.
/// Only the database's thread writes it.
struct Cache {
    apps: HashMap<String, HashMap<String, Cached>>,
    bytes: usize,
    limit: usize,
}

struct Cached {
    value: Option<Vec<u8>>,
    expires_at_ms: Option<i64>,
}

/// What a cached key costs beyond its bytes: the maps' entry, the two
/// allocations' headers. A guess on the high side, so that a flood of
/// short keys known absent cannot hold much more than the limit.
const ENTRY_OVERHEAD: usize = 96;

impl Cached {
    fn size(&self, key: &str) -> usize {
        ENTRY_OVERHEAD + key.len() + self.value.as_ref().map_or(0, Vec::len)
    }
}

impl Cache {
    fn new(limit: usize) -> Self {
        Cache {
            apps: HashMap::new(),
            bytes: 0,
            limit,
        }
    }

    /// The value of `key` if the cache knows it: `Some(None)` for a key
    /// known to be absent (or expired).
    fn get(&self, app: &str, key: &str, now: i64) -> Option<Option<Vec<u8>>> {
        let cached = self.apps.get(app)?.get(key)?;
        let expired = cached.expires_at_ms.is_some_and(|at| at <= now);
        Some(if expired { None } else { cached.value.clone() })
    }

    fn learn(&mut self, app: &str, learned: Learned) {
        let cached = Cached {
            value: learned.value,
            expires_at_ms: learned.expires_at_ms,
        };
        let added = cached.size(&learned.key);
        if self.bytes + added > self.limit {
            self.shrink(self.limit / 2);
        }
        if !self.apps.contains_key(app) {
            self.apps.insert(app.to_owned(), HashMap::new());
        }
        let keys = self.apps.get_mut(app).expect("inserted above");
        if let Some(old) = keys.get(&learned.key) {
            self.bytes -= old.size(&learned.key);
        }
        keys.insert(learned.key, cached);
        self.bytes += added;
    }

    /// Forgets values until at most `target` bytes are cached, in the
    /// maps' (arbitrary) order: a forgotten key costs one read.
    fn shrink(&mut self, target: usize) {
        for keys in self.apps.values_mut() {
            keys.retain(|key, cached| {
                if self.bytes <= target {
                    return true;
                }
                self.bytes -= cached.size(key);
                false
            });
        }
        self.apps.retain(|_, keys| !keys.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOMY: Quota = Quota {
        keys: 100,
        bytes: 10_000,
    };

    fn open(dir: &tempfile::TempDir) -> SqliteKeyValue {
        SqliteKeyValue::open(&dir.path().join("kv.db"), 1 << 20, Arc::default()).unwrap()
    }

    fn block<T>(pending: Pending<T>) -> Result<T, StorageError> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(pending)
    }

    #[test]
    fn apps_keep_their_own_keys_and_values_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let kv = open(&dir);
            block(kv.set("a", "k", b"of a".to_vec(), None, ROOMY)).unwrap();
            block(kv.set("b", "k", b"of b".to_vec(), None, ROOMY)).unwrap();
            assert_eq!(block(kv.get("a", "k")).unwrap().unwrap(), b"of a");
            assert_eq!(block(kv.get("c", "k")).unwrap(), None);
            assert!(block(kv.delete("b", "k")).unwrap());
            assert!(!block(kv.delete("b", "k")).unwrap());
            assert_eq!(block(kv.get("a", "k")).unwrap().unwrap(), b"of a");
        }
        // Dropping the store let go of the file.
        let kv = open(&dir);
        assert_eq!(block(kv.get("a", "k")).unwrap().unwrap(), b"of a");
        assert_eq!(block(kv.get("b", "k")).unwrap(), None);
    }

    #[test]
    fn a_second_process_cannot_open_a_database_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let _kv = open(&dir);
        let error = SqliteKeyValue::open(&dir.path().join("kv.db"), 1, Arc::default())
            .err()
            .expect("the file is held");
        assert!(format!("{error:#}").contains("locked"), "{error:#}");
    }

    #[test]
    fn increments_count_and_refuse_what_is_not_an_integer() {
        let dir = tempfile::tempdir().unwrap();
        let kv = open(&dir);
        assert_eq!(block(kv.increment("a", "n", 5, ROOMY)).unwrap(), 5);
        assert_eq!(block(kv.increment("a", "n", -7, ROOMY)).unwrap(), -2);
        assert_eq!(block(kv.get("a", "n")).unwrap().unwrap(), b"-2");
        block(kv.set("a", "t", b"text".to_vec(), None, ROOMY)).unwrap();
        let error = block(kv.increment("a", "t", 1, ROOMY)).unwrap_err();
        assert!(matches!(error, StorageError::NotApplicable(_)), "{error}");
        block(kv.set("a", "m", i64::MAX.to_string().into(), None, ROOMY)).unwrap();
        let error = block(kv.increment("a", "m", 1, ROOMY)).unwrap_err();
        assert!(error.to_string().contains("overflows"), "{error}");
    }

    #[test]
    fn compare_and_set_loses_for_a_stale_writer() {
        let dir = tempfile::tempdir().unwrap();
        let kv = open(&dir);
        let cas = |expected: Option<&[u8]>, value: &[u8]| {
            let expected = expected.map(<[u8]>::to_vec);
            block(kv.compare_and_set("a", "lock", expected, value.to_vec(), None, ROOMY)).unwrap()
        };
        assert!(cas(None, b"one"));
        assert!(!cas(None, b"two"), "only when absent");
        assert!(cas(Some(b"one"), b"three"));
        assert!(!cas(Some(b"one"), b"four"), "a stale writer loses");
        assert_eq!(block(kv.get("a", "lock")).unwrap().unwrap(), b"three");
    }

    #[test]
    fn expired_keys_are_never_returned_and_make_room() {
        let dir = tempfile::tempdir().unwrap();
        let kv = open(&dir);
        let quota = Quota {
            keys: 2,
            bytes: 100,
        };
        let soon = Some(Duration::from_millis(50));
        block(kv.set("a", "short", b"x".to_vec(), soon, quota)).unwrap();
        block(kv.set("a", "long", b"y".to_vec(), None, quota)).unwrap();
        let full = block(kv.set("a", "third", b"z".to_vec(), None, quota)).unwrap_err();
        assert!(matches!(full, StorageError::Quota(_)), "{full}");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(block(kv.get("a", "short")).unwrap(), None);
        let page = block(kv.list("a", "", None, 10)).unwrap();
        assert_eq!(page.keys, ["long"]);
        // The expired key no longer counts once the quota needs its room.
        block(kv.set("a", "third", b"z".to_vec(), None, quota)).unwrap();
        assert_eq!(block(kv.usage("a")).unwrap(), Usage { keys: 2, bytes: 11 });
    }

    #[test]
    fn the_byte_quota_counts_keys_and_values_and_replacements() {
        let dir = tempfile::tempdir().unwrap();
        let kv = open(&dir);
        let quota = Quota {
            keys: 10,
            bytes: 10,
        };
        block(kv.set("a", "k", vec![0; 9], None, quota)).unwrap();
        // Replacing a value counts the difference.
        block(kv.set("a", "k", vec![0; 8], None, quota)).unwrap();
        let over = block(kv.set("a", "j", vec![0; 1], None, quota)).unwrap_err();
        assert!(over.to_string().contains("its quota is 10"), "{over}");
        assert_eq!(block(kv.usage("a")).unwrap(), Usage { keys: 1, bytes: 9 });
        assert_eq!(block(kv.usage("b")).unwrap(), Usage::default());
    }

    #[test]
    fn keys_are_listed_by_prefix_in_pages() {
        let dir = tempfile::tempdir().unwrap();
        let kv = open(&dir);
        for key in ["menu/1", "menu/2", "menu/3", "menus", "other", "men%"] {
            block(kv.set("a", key, b"v".to_vec(), None, ROOMY)).unwrap();
        }
        block(kv.set("b", "menu/9", b"v".to_vec(), None, ROOMY)).unwrap();
        let first = block(kv.list("a", "menu/", None, 2)).unwrap();
        assert_eq!(first.keys, ["menu/1", "menu/2"]);
        assert_eq!(first.next.as_deref(), Some("menu/2"));
        let second = block(kv.list("a", "menu/", first.next.as_deref(), 2)).unwrap();
        assert_eq!(
            second,
            KeyPage {
                keys: vec!["menu/3".into()],
                next: None
            }
        );
        let percent = block(kv.list("a", "men%", None, 10)).unwrap();
        assert_eq!(percent.keys, ["men%"], "a prefix is bytes, not a pattern");
    }

    #[test]
    fn the_cache_holds_at_most_its_limit_and_forgets_to_stay_under_it() {
        let mut cache = Cache::new(4_096);
        for n in 0..1_000 {
            let learned = Learned {
                key: format!("key{n}"),
                value: (n % 2 == 0).then(|| vec![0; 100]),
                expires_at_ms: None,
            };
            cache.learn("a", learned);
            assert!(cache.bytes <= cache.limit, "{} after {n}", cache.bytes);
        }
        let known = cache.apps["a"].len();
        assert!((10..1_000).contains(&known), "{known} keys cached");
        assert_eq!(
            cache.get("a", "key999", 0),
            Some(None),
            "the last one learned"
        );
        let counted: usize = cache.apps["a"].iter().map(|(k, c)| c.size(k)).sum();
        assert_eq!(counted, cache.bytes);
    }

    #[test]
    fn a_database_that_is_not_one_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.db");
        std::fs::write(&path, vec![7u8; 8192]).unwrap();
        let error = SqliteKeyValue::open(&path, 1, Arc::default())
            .err()
            .unwrap();
        let text = format!("{error:#}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("not a database"), "{text}");
    }
}
