//! The history in an embedded SQLite database: one node's.
//!
//! Sessions still `live` when the database is opened were cut off by a
//! crash (no other process writes this file) and are marked `interrupted`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension, params};

use sessionbox_host::log::{LogLine, LogSource};
use sessionbox_host::metrics::Metrics;
use sessionbox_host::sync::MutexExt;

use super::writer::{Sink, Write, Writes};
use super::{History, Read, Reader, SessionFilter, StoredSession, retention_horizon_ms, unix_ms};

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
    cpu TEXT,
    node TEXT NOT NULL DEFAULT ''
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
CREATE TABLE IF NOT EXISTS recordings (
    session_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    app TEXT NOT NULL,
    call INTEGER NOT NULL,
    channels INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    wav BLOB NOT NULL,
    PRIMARY KEY (session_id, n)
);
CREATE INDEX IF NOT EXISTS recordings_by_app ON recordings (app);
";

impl History {
    /// Opens (or creates) the SQLite history, marks sessions that were live
    /// when the last process died as `interrupted`, drops history older
    /// than `retention_days`, and starts the writer. Returns how many
    /// sessions were marked interrupted. Errors name the database.
    pub fn sqlite(
        path: &Path,
        retention_days: u32,
        metrics: Arc<Metrics>,
    ) -> Result<(History, usize)> {
        open(path, retention_days, metrics)
            .with_context(|| format!("the session history database {}", path.display()))
    }
}

fn open(path: &Path, retention_days: u32, metrics: Arc<Metrics>) -> Result<(History, usize)> {
    let db = Connection::open(path)?;
    db.execute_batch(SCHEMA)?;
    migrate(&db)?;
    let interrupted = db.execute(
        "UPDATE sessions SET state = 'interrupted', finish_reason = 'interrupted',
             finish_detail = 'the server stopped while the session was live'
         WHERE state = 'live'",
        [],
    )?;
    let mut sink = SqliteSink(db);
    sink.expire(retention_days)?;
    let reader = SqliteReader(Mutex::new(Connection::open(path)?));
    let writes = Writes::start(sink, retention_days, metrics)?;
    Ok((History::new(writes, reader), interrupted))
}

/// Reads share one connection: each read is short, and SQLite serves them
/// from the page cache.
struct SqliteReader(Mutex<Connection>);

impl Reader for SqliteReader {
    fn session<'a>(&'a self, id: &'a str) -> Read<'a, Option<StoredSession>> {
        let db = self.0.locked();
        let found = db
            .query_row(
                &format!("SELECT {COLUMNS} FROM sessions WHERE id = ?1"),
                [id],
                stored_session,
            )
            .optional();
        Box::pin(std::future::ready(found.map_err(Into::into)))
    }

    fn log<'a>(&'a self, id: &'a str) -> Read<'a, Vec<LogLine>> {
        let db = self.0.locked();
        let read = || -> Result<Vec<LogLine>> {
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
        };
        Box::pin(std::future::ready(read()))
    }

    fn list<'a>(&'a self, filter: &'a SessionFilter) -> Read<'a, Vec<StoredSession>> {
        let db = self.0.locked();
        let read = || -> Result<Vec<StoredSession>> {
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
        };
        Box::pin(std::future::ready(read()))
    }
}

const COLUMNS: &str = "id, tenant, app, scenario_sha256, access_secret_sha256, state,
    started_at_ms, ended_at_ms, finish_reason, finish_detail, events, capabilities,
    dropped_log_lines, cpu, node";

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
        node: row.get(14)?,
    })
}

/// Brings a database made by an earlier version up to this schema.
fn migrate(db: &Connection) -> Result<()> {
    for (column, definition) in [("cpu", "TEXT"), ("node", "TEXT NOT NULL DEFAULT ''")] {
        let present: bool = db.query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info('sessions') WHERE name = ?1",
            [column],
            |row| row.get(0),
        )?;
        if !present {
            db.execute_batch(&format!(
                "ALTER TABLE sessions ADD COLUMN {column} {definition}"
            ))?;
        }
    }
    Ok(())
}

/// The writer's connection.
struct SqliteSink(Connection);

impl Sink for SqliteSink {
    fn apply(&mut self, batch: &[Write]) -> Result<()> {
        apply(&mut self.0, batch)
    }

    fn probe(&mut self) -> Result<()> {
        self.0.execute(
            "INSERT OR REPLACE INTO write_probe (id, at_ms) VALUES (1, ?1)",
            [unix_ms(SystemTime::now())],
        )?;
        Ok(())
    }

    fn expire(&mut self, retention_days: u32) -> Result<()> {
        let horizon = retention_horizon_ms(retention_days);
        for table in ["log_lines", "recordings"] {
            self.0.execute(
                &format!(
                    "DELETE FROM {table} WHERE session_id IN
                         (SELECT id FROM sessions WHERE started_at_ms < ?1 AND state != 'live')"
                ),
                [horizon],
            )?;
        }
        self.0.execute(
            "DELETE FROM sessions WHERE started_at_ms < ?1 AND state != 'live'",
            [horizon],
        )?;
        Ok(())
    }

    #[cfg(test)]
    fn refuse_writes(&mut self, refuse: bool) {
        self.0.pragma_update(None, "query_only", refuse).unwrap();
    }
}

/// Applies a batch in one transaction.
fn apply(db: &mut Connection, batch: &[Write]) -> Result<()> {
    let tx = db.transaction()?;
    for write in batch {
        match write {
            Write::Started { session: s, .. } => {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO sessions
                     (id, tenant, app, scenario_sha256, access_secret_sha256, state, started_at_ms,
                      node)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'live', ?6, ?7)",
                )?
                .execute(params![
                    s.id,
                    s.tenant,
                    s.app,
                    s.scenario_sha256,
                    s.access_secret_sha256,
                    unix_ms(s.started_at),
                    s.node
                ])?;
            }
            Write::Finished {
                session: s, record, ..
            } => {
                tx.prepare_cached(
                    "INSERT INTO sessions
                     (id, tenant, app, scenario_sha256, access_secret_sha256, state, started_at_ms,
                      ended_at_ms, finish_reason, finish_detail, events, capabilities,
                      dropped_log_lines, cpu, node)
                     VALUES (?1, ?8, ?9, ?10, ?11, 'finished', ?12, ?2, ?3, ?4, ?5, ?6, ?7, ?13,
                             ?14)
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
                    s.node,
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
            Write::RefuseWrites(_) => unreachable!("applied before the batch"),
        }
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::history::NewSession;
    use sessionbox_host::session::SessionRecord;

    #[test]
    fn live_sessions_of_a_dead_process_are_marked_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        let (storage, interrupted) = History::sqlite(&path, 30, Arc::default()).unwrap();
        assert_eq!(interrupted, 0);
        let committed = storage.started(NewSession {
            id: "s1".into(),
            tenant: "t".into(),
            app: "a".into(),
            scenario_sha256: "00".into(),
            access_secret_sha256: "11".into(),
            node: "n1".into(),
            started_at: SystemTime::now(),
        });
        committed.blocking_recv().unwrap().unwrap();
        assert_eq!(wait(storage.session("s1")).unwrap().unwrap().state, "live");
        // The process "dies": nothing finishes the session.
        drop(storage);

        let (storage, interrupted) = History::sqlite(&path, 30, Arc::default()).unwrap();
        assert_eq!(interrupted, 1);
        let session = wait(storage.session("s1")).unwrap().unwrap();
        assert_eq!(session.state, "interrupted");
        assert_eq!(session.finish_reason.as_deref(), Some("interrupted"));
    }

    #[test]
    fn history_past_the_retention_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        let (storage, _) = History::sqlite(&path, 30, Arc::default()).unwrap();
        let day = Duration::from_secs(24 * 3600);
        for (id, age) in [("old", 31), ("recent", 29)] {
            storage.started(NewSession {
                id: id.into(),
                node: "n1".into(),
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
        let (storage, _) = History::sqlite(&path, 30, Arc::default()).unwrap();
        drop(storage);
        let (storage, _) = History::sqlite(&path, 30, Arc::default()).unwrap();
        assert!(wait(storage.session("old")).unwrap().is_none());
        assert!(wait(storage.session("recent")).unwrap().is_some());
    }

    fn new_session(id: &str) -> NewSession {
        NewSession {
            id: id.into(),
            tenant: "t".into(),
            app: "a".into(),
            scenario_sha256: "00".into(),
            access_secret_sha256: "11".into(),
            node: "n1".into(),
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
    fn refuse_writes(storage: &History, refuse: bool) {
        storage.writes.refuse_writes(refuse);
    }

    /// A read's answer (SQLite's are ready at once).
    fn wait<T>(read: impl std::future::Future<Output = T>) -> T {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(read)
    }

    #[test]
    fn failed_writes_refuse_starts_hold_records_and_land_once_the_disk_takes_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        let metrics = Arc::new(Metrics::default());
        let (storage, _) = History::sqlite(&path, 30, Arc::clone(&metrics)).unwrap();
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
        let before = wait(storage.session("before")).unwrap().unwrap();
        assert_eq!(before.state, "finished");
        assert_eq!(wait(storage.log("before")).unwrap().len(), 50);
        assert!(wait(storage.session("refused")).unwrap().is_none());
        assert!(metrics.render().contains("history_held_writes 0"));
    }

    #[test]
    fn forget_answers_once_the_row_is_gone_or_its_removal_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        let (storage, _) = History::sqlite(&path, 30, Arc::default()).unwrap();
        for id in ["gone", "held"] {
            let started = storage.started(new_session(id));
            started.blocking_recv().unwrap().unwrap();
        }
        storage.forget("gone").blocking_recv().unwrap();
        assert!(wait(storage.session("gone")).unwrap().is_none());

        refuse_writes(&storage, true);
        storage.forget("held").blocking_recv().unwrap();
        assert_eq!(storage.health().held_writes, 1);
        assert!(
            wait(storage.session("held")).unwrap().is_some(),
            "until written"
        );
        refuse_writes(&storage, false);
        storage.flush();
        assert!(wait(storage.session("held")).unwrap().is_none());
    }

    #[test]
    fn a_database_that_is_not_one_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        std::fs::write(&path, vec![7u8; 8192]).unwrap();
        let error = History::sqlite(&path, 30, Arc::default()).err().unwrap();
        let text = format!("{error:#}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("not a database"), "{text}");
    }
}
