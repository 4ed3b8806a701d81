//! The history in an embedded SQLite database.
//!
//! Writes go to a thread of their own through a channel, batched into
//! transactions, so event dispatch never waits on the disk. A session is
//! written when it starts (state `live`) and again with its record when it
//! finishes; sessions still `live` when the database is opened were cut off
//! by a crash and are marked `interrupted`. Writes the disk refuses are held
//! in memory (at most [`MAX_HELD_WRITES`]) and tried again every second.

use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension, params};

use sessionbox_host::log::{LogLine, LogSource};
use sessionbox_host::metrics::Metrics;
use sessionbox_host::session::SessionRecord;
use sessionbox_host::sync::MutexExt;

use super::{Health, History, NewSession, SessionFilter, StoredSession, unix_ms};

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    app TEXT NOT NULL,
    scenario_sha256 TEXT NOT NULL,
    access_secret_sha256 TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at_ms INTEGER NOT NULL,
    ended_at_ms INTEGER,
    finish_reason TEXT,
    finish_detail TEXT,
    events TEXT,
    capabilities TEXT,
    dropped_log_lines INTEGER NOT NULL DEFAULT 0,
    cpu TEXT
);
CREATE INDEX IF NOT EXISTS sessions_by_tenant ON sessions (tenant, started_at_ms);
CREATE TABLE IF NOT EXISTS write_probe (id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS log_lines (
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    source TEXT NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
";

enum Write {
    /// A session that starts; told whether its row was committed.
    Started {
        session: NewSession,
        committed: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
    Finished {
        session: NewSession,
        record: Arc<SessionRecord>,
        /// Runs once the record is committed (e.g. to retire the live entry,
        /// so a reader never finds the session in neither place).
        then: Box<dyn FnOnce() + Send>,
    },
    /// A session that never ran; `forgotten` hears once its row is gone,
    /// or once its removal is held for want of a disk.
    Forget {
        id: String,
        forgotten: Option<tokio::sync::oneshot::Sender<()>>,
    },
    /// Runs once everything before it is committed and has had its
    /// consequences.
    Flush(Box<dyn FnOnce() + Send>),
    /// Changes the writer's connection (tests: a disk that fills).
    #[cfg(test)]
    Configure(Box<dyn FnOnce(&Connection) + Send>),
}

/// Writes held in memory for want of a disk, at most: past this, starts are
/// refused at once (every held write is a finished session's record, or
/// the removal of one that failed to start, so the sessions live when the
/// disk failed bound it in practice).
pub const MAX_HELD_WRITES: usize = 10_000;

/// How often held writes are tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// How long closing keeps trying to write what is held.
const CLOSE_PATIENCE: Duration = Duration::from_secs(5);

pub struct SqliteHistory {
    writes: Mutex<Option<Sender<Write>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    reader: Mutex<Connection>,
    health: Arc<Mutex<Health>>,
}

impl SqliteHistory {
    /// Opens (or creates) the database, marks sessions that were live when
    /// the last process died as `interrupted`, drops history older than
    /// `retention_days`, and starts the writer. Returns how many sessions
    /// were marked interrupted. Errors name the database.
    pub fn open(
        path: &Path,
        retention_days: u32,
        metrics: Arc<Metrics>,
    ) -> Result<(SqliteHistory, usize)> {
        Self::open_inner(path, retention_days, metrics)
            .with_context(|| format!("the session history database {}", path.display()))
    }

    fn open_inner(
        path: &Path,
        retention_days: u32,
        metrics: Arc<Metrics>,
    ) -> Result<(SqliteHistory, usize)> {
        let db = Connection::open(path)?;
        db.execute_batch(SCHEMA)?;
        migrate(&db)?;
        let interrupted = db.execute(
            "UPDATE sessions SET state = 'interrupted', finish_reason = 'interrupted',
                 finish_detail = 'the server stopped while the session was live'
             WHERE state = 'live'",
            [],
        )?;
        expire(&db, retention_days)?;
        let reader = Connection::open(path)?;
        let (tx, rx) = mpsc::channel();
        let health = Arc::new(Mutex::new(Health::default()));
        let writer = Writer {
            db,
            held: Vec::new(),
            failures: 0,
            health: Arc::clone(&health),
            metrics,
        };
        let writer = std::thread::Builder::new()
            .name("sessionbox-storage".into())
            .spawn(move || writer.run(rx, retention_days))?;
        Ok((
            SqliteHistory {
                writes: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(writer)),
                reader: Mutex::new(reader),
                health,
            },
            interrupted,
        ))
    }

    fn send(&self, write: Write) {
        if let Some(writes) = &*self.writes.locked() {
            // The writer only stops when `close` takes the sender.
            let _ = writes.send(write);
        }
    }
}

impl History for SqliteHistory {
    fn health(&self) -> Health {
        self.health.locked().clone()
    }

    fn started(&self, session: NewSession) -> tokio::sync::oneshot::Receiver<Result<(), String>> {
        let (committed, outcome) = tokio::sync::oneshot::channel();
        let held = self.health().held_writes;
        if held >= MAX_HELD_WRITES {
            let _ = committed.send(Err(format!(
                "{held} writes are waiting for the disk, the most held"
            )));
        } else {
            self.send(Write::Started { session, committed });
        }
        outcome
    }

    fn finished(
        &self,
        session: NewSession,
        record: Arc<SessionRecord>,
        then: Box<dyn FnOnce() + Send>,
    ) {
        self.send(Write::Finished {
            session,
            record,
            then,
        });
    }

    fn forget(&self, id: &str) -> tokio::sync::oneshot::Receiver<()> {
        let (forgotten, outcome) = tokio::sync::oneshot::channel();
        self.send(Write::Forget {
            id: id.to_owned(),
            forgotten: Some(forgotten),
        });
        outcome
    }

    fn flush(&self) {
        let (done, wait) = mpsc::sync_channel(1);
        self.send(Write::Flush(Box::new(move || {
            let _ = done.send(());
        })));
        let _ = wait.recv();
    }

    fn close(&self) {
        drop(self.writes.locked().take());
        if let Some(writer) = self.writer.locked().take() {
            let _ = writer.join();
        }
    }

    fn session(&self, id: &str) -> Result<Option<StoredSession>> {
        let db = self.reader.locked();
        Ok(db
            .query_row(
                &format!("SELECT {COLUMNS} FROM sessions WHERE id = ?1"),
                [id],
                stored_session,
            )
            .optional()?)
    }

    fn log(&self, id: &str) -> Result<Vec<LogLine>> {
        let db = self.reader.locked();
        let mut query = db.prepare_cached(
            "SELECT at_ms, source, text FROM log_lines WHERE session_id = ?1 ORDER BY seq",
        )?;
        let lines = query.query_map([id], |row| {
            Ok(LogLine {
                at_ms: row.get(0)?,
                source: LogSource::from_name(&row.get::<_, String>(1)?),
                text: row.get(2)?,
            })
        })?;
        Ok(lines.collect::<Result<_, _>>()?)
    }

    fn list(&self, filter: &SessionFilter) -> Result<Vec<StoredSession>> {
        let db = self.reader.locked();
        let mut query = db.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM sessions
             WHERE tenant = ?1
               AND (?2 IS NULL OR app = ?2)
               AND (?3 IS NULL OR state = ?3)
               AND (?4 IS NULL OR finish_reason = ?4)
               AND (?5 IS NULL OR started_at_ms >= ?5)
             ORDER BY started_at_ms DESC LIMIT ?6"
        ))?;
        let rows = query.query_map(
            params![
                filter.tenant,
                filter.app,
                filter.state,
                filter.finish_reason,
                filter.since_ms,
                filter.limit
            ],
            stored_session,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl Drop for SqliteHistory {
    fn drop(&mut self) {
        self.close();
    }
}

const COLUMNS: &str = "id, tenant, app, scenario_sha256, access_secret_sha256, state,
    started_at_ms, ended_at_ms, finish_reason, finish_detail, events, capabilities,
    dropped_log_lines, cpu";

fn stored_session(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredSession> {
    let json = |text: Option<String>| text.and_then(|t| serde_json::from_str(&t).ok());
    Ok(StoredSession {
        session_id: row.get(0)?,
        tenant: row.get(1)?,
        app: row.get(2)?,
        scenario_sha256: row.get(3)?,
        access_secret_sha256: row.get(4)?,
        state: row.get(5)?,
        started_at_ms: row.get(6)?,
        ended_at_ms: row.get(7)?,
        finish_reason: row.get(8)?,
        finish_detail: row.get(9)?,
        events: json(row.get(10)?),
        capabilities: json(row.get(11)?),
        dropped_log_lines: row.get(12)?,
        cpu: json(row.get(13)?),
    })
}

/// Brings a database made by an earlier version up to this schema.
fn migrate(db: &Connection) -> Result<()> {
    let has_cpu: bool = db.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('sessions') WHERE name = 'cpu'",
        [],
        |row| row.get(0),
    )?;
    if !has_cpu {
        db.execute_batch("ALTER TABLE sessions ADD COLUMN cpu TEXT")?;
    }
    Ok(())
}

/// Writes per transaction at most; more wait for the next one.
const BATCH: usize = 256;

/// How often a long-running server drops expired history.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(3600);

/// Drops finished sessions (and their logs) older than the retention.
fn expire(db: &Connection, retention_days: u32) -> Result<()> {
    let horizon =
        unix_ms(SystemTime::now()).saturating_sub(u64::from(retention_days) * 24 * 3600 * 1000);
    db.execute(
        "DELETE FROM log_lines WHERE session_id IN
             (SELECT id FROM sessions WHERE started_at_ms < ?1 AND state != 'live')",
        [horizon],
    )?;
    db.execute(
        "DELETE FROM sessions WHERE started_at_ms < ?1 AND state != 'live'",
        [horizon],
    )?;
    Ok(())
}

/// The writer thread's side: the database, and the writes it could not
/// commit yet.
struct Writer {
    db: Connection,
    /// Writes that failed, in order, tried again before anything new.
    held: Vec<Write>,
    /// Failed attempts since the last success.
    failures: u64,
    health: Arc<Mutex<Health>>,
    metrics: Arc<Metrics>,
}

impl Writer {
    fn run(mut self, writes: Receiver<Write>, retention_days: u32) {
        let mut next_expiry = std::time::Instant::now() + EXPIRY_INTERVAL;
        loop {
            let retrying = !self.held.is_empty() || self.failures > 0;
            let wait = if retrying {
                RETRY_EVERY
            } else {
                next_expiry.saturating_duration_since(std::time::Instant::now())
            };
            let batch = match writes.recv_timeout(wait) {
                Ok(write) => {
                    let mut batch = vec![write];
                    batch.extend(writes.try_iter().take(BATCH - 1));
                    batch
                }
                Err(mpsc::RecvTimeoutError::Timeout) if retrying => Vec::new(),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Err(e) = expire(&self.db, retention_days) {
                        tracing::error!("expiring session history failed: {e:#}");
                    }
                    next_expiry += EXPIRY_INTERVAL;
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return self.close(),
            };
            self.commit(batch);
        }
    }

    /// Commits what is held, then `batch`, each in one transaction. What
    /// fails is held for the next try, except starts: they are told, and
    /// their sessions do not run. While writes fail and nothing is held, a
    /// small write probes the disk, so the history reads as healthy again
    /// only once the disk takes writes.
    fn commit(&mut self, batch: Vec<Write>) {
        #[cfg(test)]
        let batch: Vec<Write> = batch
            .into_iter()
            .filter_map(|write| match write {
                Write::Configure(configure) => {
                    configure(&self.db);
                    None
                }
                write => Some(write),
            })
            .collect();
        let mut wrote = None;
        // Answered once the health is up to date, so that whoever hears
        // back reads the history's state as it is after this commit.
        let mut done = Vec::new();
        let mut refused = Vec::new();
        let mut held_forgets = Vec::new();
        if !self.held.is_empty() {
            let held = std::mem::take(&mut self.held);
            match apply(&mut self.db, &held) {
                Ok(()) => {
                    done.extend(held);
                    wrote = Some(true);
                }
                Err(error) => {
                    self.held = held;
                    self.failed(&error);
                    wrote = Some(false);
                }
            }
        }
        // A flush answers only once everything before it is in: while
        // older writes are held, it waits with them.
        let (batch, flushes): (Vec<Write>, Vec<Write>) = if self.held.is_empty() {
            (batch, Vec::new())
        } else {
            batch
                .into_iter()
                .partition(|write| !matches!(write, Write::Flush(_)))
        };
        if !batch.is_empty() {
            match apply(&mut self.db, &batch) {
                Ok(()) => {
                    done.extend(batch);
                    wrote = Some(true);
                }
                Err(error) => {
                    self.failed(&error);
                    wrote = Some(false);
                    for write in batch {
                        match write {
                            Write::Started { committed, .. } => {
                                refused.push((committed, format!("{error:#}")));
                            }
                            Write::Forget { id, forgotten } => {
                                held_forgets.extend(forgotten);
                                self.held.push(Write::Forget {
                                    id,
                                    forgotten: None,
                                });
                            }
                            write => self.held.push(write),
                        }
                    }
                }
            }
        }
        self.held.extend(flushes);
        if wrote.is_none() && self.failures > 0 {
            match probe(&self.db) {
                Ok(()) => wrote = Some(true),
                Err(error) => self.failed(&error),
            }
        }
        if wrote == Some(true) && self.held.is_empty() && self.failures > 0 {
            tracing::info!(
                failed_attempts = self.failures,
                "the session history is written again; every held write is committed"
            );
            self.failures = 0;
            self.health.locked().error = None;
        }
        self.health.locked().held_writes = self.held.len();
        self.metrics.history_held_writes.set(self.held.len() as i64);
        for (committed, error) in refused {
            let _ = committed.send(Err(error));
        }
        for forgotten in held_forgets {
            let _ = forgotten.send(());
        }
        consequences(done);
    }

    fn failed(&mut self, error: &anyhow::Error) {
        self.failures += 1;
        self.metrics.history_write_failures.inc();
        self.health.locked().error = Some(format!("{error:#}"));
        // Once when it starts, then once a minute: not a line per try.
        if self.failures == 1 || self.failures.is_multiple_of(60) {
            tracing::error!(
                failed_attempts = self.failures,
                held_writes = self.held.len(),
                "writing the session history failed, holding the writes and trying again \
                 every {} s: {error:#}",
                RETRY_EVERY.as_secs()
            );
        }
    }

    /// The last commits before the process stops: what the disk still
    /// refuses after a while is lost, and its sessions will read as
    /// interrupted.
    fn close(mut self) {
        let give_up = std::time::Instant::now() + CLOSE_PATIENCE;
        self.commit(Vec::new());
        while !self.held.is_empty() && std::time::Instant::now() < give_up {
            std::thread::sleep(RETRY_EVERY.min(CLOSE_PATIENCE));
            self.commit(Vec::new());
        }
        if !self.held.is_empty() {
            tracing::error!(
                writes = self.held.len(),
                "session history writes could not be committed before the process stopped; \
                 their sessions will read as interrupted"
            );
        }
    }
}

/// What follows a batch's commit, in order: starts are answered, finished
/// sessions retired, flushes answered last.
fn consequences(batch: Vec<Write>) {
    let mut flushes = Vec::new();
    for write in batch {
        match write {
            Write::Started { committed, .. } => {
                let _ = committed.send(Ok(()));
            }
            Write::Finished { then, .. } => then(),
            Write::Forget { forgotten, .. } => {
                if let Some(forgotten) = forgotten {
                    let _ = forgotten.send(());
                }
            }
            Write::Flush(done) => flushes.push(done),
            #[cfg(test)]
            Write::Configure(_) => unreachable!("applied before the batch"),
        }
    }
    for done in flushes {
        done();
    }
}

/// A write that needs room on the disk, to learn whether it has some.
fn probe(db: &Connection) -> Result<()> {
    db.execute(
        "INSERT OR REPLACE INTO write_probe (id, at_ms) VALUES (1, ?1)",
        [unix_ms(SystemTime::now())],
    )?;
    Ok(())
}

/// Applies a batch in one transaction.
fn apply(db: &mut Connection, batch: &[Write]) -> Result<()> {
    let tx = db.transaction()?;
    for write in batch {
        match write {
            Write::Started { session: s, .. } => {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO sessions
                     (id, tenant, app, scenario_sha256, access_secret_sha256, state, started_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'live', ?6)",
                )?
                .execute(params![
                    s.id,
                    s.tenant,
                    s.app,
                    s.scenario_sha256,
                    s.access_secret_sha256,
                    unix_ms(s.started_at)
                ])?;
            }
            Write::Finished {
                session: s, record, ..
            } => {
                tx.prepare_cached(
                    "INSERT INTO sessions
                     (id, tenant, app, scenario_sha256, access_secret_sha256, state, started_at_ms,
                      ended_at_ms, finish_reason, finish_detail, events, capabilities,
                      dropped_log_lines, cpu)
                     VALUES (?1, ?8, ?9, ?10, ?11, 'finished', ?12, ?2, ?3, ?4, ?5, ?6, ?7, ?13)
                     ON CONFLICT (id) DO UPDATE SET state = 'finished', ended_at_ms = ?2,
                         finish_reason = ?3, finish_detail = ?4, events = ?5,
                         capabilities = ?6, dropped_log_lines = ?7, cpu = ?13",
                )?
                .execute(params![
                    record.id,
                    unix_ms(record.ended_at),
                    record.finish_reason.label(),
                    record.finish_reason.to_string(),
                    serde_json::to_string(&record.events)?,
                    serde_json::to_string(&record.capabilities)?,
                    record.log.dropped_lines,
                    s.tenant,
                    s.app,
                    s.scenario_sha256,
                    s.access_secret_sha256,
                    unix_ms(s.started_at),
                    serde_json::to_string(&record.cpu)?,
                ])?;
                let mut insert = tx.prepare_cached(
                    "INSERT OR REPLACE INTO log_lines (session_id, seq, at_ms, source, text)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for (seq, line) in record.log.lines.iter().enumerate() {
                    insert.execute(params![
                        record.id,
                        seq,
                        line.at_ms,
                        line.source.name(),
                        line.text
                    ])?;
                }
            }
            Write::Forget { id, .. } => {
                tx.prepare_cached("DELETE FROM sessions WHERE id = ?1")?
                    .execute([id])?;
            }
            Write::Flush(_) => {}
            #[cfg(test)]
            Write::Configure(_) => unreachable!("applied before the batch"),
        }
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_sessions_of_a_dead_process_are_marked_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        let (storage, interrupted) = SqliteHistory::open(&path, 30, Arc::default()).unwrap();
        assert_eq!(interrupted, 0);
        let committed = storage.started(NewSession {
            id: "s1".into(),
            tenant: "t".into(),
            app: "a".into(),
            scenario_sha256: "00".into(),
            access_secret_sha256: "11".into(),
            started_at: SystemTime::now(),
        });
        committed.blocking_recv().unwrap().unwrap();
        assert_eq!(storage.session("s1").unwrap().unwrap().state, "live");
        // The process "dies": nothing finishes the session.
        drop(storage);

        let (storage, interrupted) = SqliteHistory::open(&path, 30, Arc::default()).unwrap();
        assert_eq!(interrupted, 1);
        let session = storage.session("s1").unwrap().unwrap();
        assert_eq!(session.state, "interrupted");
        assert_eq!(session.finish_reason.as_deref(), Some("interrupted"));
    }

    #[test]
    fn history_past_the_retention_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        let (storage, _) = SqliteHistory::open(&path, 30, Arc::default()).unwrap();
        let day = Duration::from_secs(24 * 3600);
        for (id, age) in [("old", 31), ("recent", 29)] {
            storage.started(NewSession {
                id: id.into(),
                tenant: "t".into(),
                app: "a".into(),
                scenario_sha256: "00".into(),
                access_secret_sha256: "11".into(),
                started_at: SystemTime::now() - day * age,
            });
        }
        storage.close();
        // Both were live: the reopen marks them interrupted, and expires
        // only what is finished and old.
        let (storage, _) = SqliteHistory::open(&path, 30, Arc::default()).unwrap();
        drop(storage);
        let (storage, _) = SqliteHistory::open(&path, 30, Arc::default()).unwrap();
        assert!(storage.session("old").unwrap().is_none());
        assert!(storage.session("recent").unwrap().is_some());
    }

    fn new_session(id: &str) -> NewSession {
        NewSession {
            id: id.into(),
            tenant: "t".into(),
            app: "a".into(),
            scenario_sha256: "00".into(),
            access_secret_sha256: "11".into(),
            started_at: SystemTime::now(),
        }
    }

    fn record(id: &str, lines: usize) -> Arc<SessionRecord> {
        use sessionbox_host::log::LogContents;
        use sessionbox_host::session::{FinishReason, TerminateCauseName};
        Arc::new(SessionRecord {
            id: id.into(),
            scenario: "a".into(),
            started_at: SystemTime::now(),
            ended_at: SystemTime::now(),
            finish_reason: FinishReason::Terminated {
                cause: TerminateCauseName::Host,
            },
            events: Default::default(),
            capabilities: Default::default(),
            cpu: Default::default(),
            log: LogContents {
                lines: (0..lines)
                    .map(|n| LogLine {
                        at_ms: n as u64,
                        source: LogSource::Scenario,
                        text: format!("line {n}"),
                    })
                    .collect(),
                dropped_lines: 0,
            },
        })
    }

    /// Makes every write of the writer fail (`true`) or work again.
    fn refuse_writes(storage: &SqliteHistory, refuse: bool) {
        storage.send(Write::Configure(Box::new(move |db| {
            db.pragma_update(None, "query_only", refuse).unwrap();
        })));
    }

    #[test]
    fn failed_writes_refuse_starts_hold_records_and_land_once_the_disk_takes_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        let metrics = Arc::new(Metrics::default());
        let (storage, _) = SqliteHistory::open(&path, 30, Arc::clone(&metrics)).unwrap();
        let started = storage.started(new_session("before"));
        started.blocking_recv().unwrap().unwrap();

        refuse_writes(&storage, true);
        let retired = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let then = {
            let retired = Arc::clone(&retired);
            move || retired.store(true, std::sync::atomic::Ordering::SeqCst)
        };
        storage.finished(new_session("before"), record("before", 50), Box::new(then));
        let refused = storage
            .started(new_session("refused"))
            .blocking_recv()
            .unwrap();
        let error = refused.expect_err("a start whose row cannot be written is refused");
        assert!(error.contains("readonly"), "{error}");
        let health = storage.health();
        assert!(health.is_degraded(), "{health:?}");
        assert_eq!(health.held_writes, 1, "the finished record is held");
        assert!(!retired.load(std::sync::atomic::Ordering::SeqCst));
        assert!(metrics.render().contains("history_held_writes 1"));

        refuse_writes(&storage, false);
        // A flush waits for what is held before it.
        storage.flush();
        assert!(retired.load(std::sync::atomic::Ordering::SeqCst));
        assert!(!storage.health().is_degraded());
        let before = storage.session("before").unwrap().unwrap();
        assert_eq!(before.state, "finished");
        assert_eq!(storage.log("before").unwrap().len(), 50);
        assert!(storage.session("refused").unwrap().is_none());
        assert!(metrics.render().contains("history_held_writes 0"));
    }

    #[test]
    fn forget_answers_once_the_row_is_gone_or_its_removal_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        let (storage, _) = SqliteHistory::open(&path, 30, Arc::default()).unwrap();
        for id in ["gone", "held"] {
            let started = storage.started(new_session(id));
            started.blocking_recv().unwrap().unwrap();
        }
        storage.forget("gone").blocking_recv().unwrap();
        assert!(storage.session("gone").unwrap().is_none());

        refuse_writes(&storage, true);
        storage.forget("held").blocking_recv().unwrap();
        assert_eq!(storage.health().held_writes, 1);
        assert!(storage.session("held").unwrap().is_some(), "until written");
        refuse_writes(&storage, false);
        storage.flush();
        assert!(storage.session("held").unwrap().is_none());
    }

    #[test]
    fn a_database_that_is_not_one_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        std::fs::write(&path, vec![7u8; 8192]).unwrap();
        let error = SqliteHistory::open(&path, 30, Arc::default())
            .err()
            .unwrap();
        let text = format!("{error:#}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("not a database"), "{text}");
    }
}
