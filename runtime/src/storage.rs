//! Session history and logs in an embedded SQLite database.
//!
//! Writes go to a thread of their own through a channel, batched into
//! transactions, so event dispatch never waits on the disk. A session is
//! written when it starts (state `live`) and again with its record when it
//! finishes; sessions still `live` when the database is opened were cut off
//! by a crash and are marked `interrupted`.

use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::log::{LogLine, LogSource};
use crate::session::SessionRecord;

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
    dropped_log_lines INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS sessions_by_tenant ON sessions (tenant, started_at_ms);
CREATE TABLE IF NOT EXISTS log_lines (
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    source TEXT NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
";

/// A session as it starts.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: String,
    pub tenant: String,
    pub app: String,
    pub scenario_sha256: String,
    pub access_secret_sha256: String,
    pub started_at: SystemTime,
}

/// A session as the history has it.
#[derive(Debug, Clone, Serialize)]
pub struct StoredSession {
    pub session_id: String,
    #[serde(skip)]
    pub tenant: String,
    pub app: String,
    pub scenario_sha256: String,
    #[serde(skip)]
    pub access_secret_sha256: String,
    /// `live`, `finished` or `interrupted`.
    pub state: String,
    pub started_at_ms: u64,
    pub ended_at_ms: Option<u64>,
    pub finish_reason: Option<String>,
    pub finish_detail: Option<String>,
    pub events: Option<serde_json::Value>,
    pub capabilities: Option<serde_json::Value>,
    pub dropped_log_lines: u64,
}

impl StoredSession {
    /// A session that is running, as far as the history knows it yet.
    pub fn live(session: &NewSession) -> Self {
        StoredSession {
            session_id: session.id.clone(),
            tenant: session.tenant.clone(),
            app: session.app.clone(),
            scenario_sha256: session.scenario_sha256.clone(),
            access_secret_sha256: session.access_secret_sha256.clone(),
            state: "live".into(),
            started_at_ms: unix_ms(session.started_at),
            ended_at_ms: None,
            finish_reason: None,
            finish_detail: None,
            events: None,
            capabilities: None,
            dropped_log_lines: 0,
        }
    }
}

/// Which sessions a listing wants.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    pub tenant: String,
    pub app: Option<String>,
    pub state: Option<String>,
    pub finish_reason: Option<String>,
    pub since_ms: Option<u64>,
    pub limit: u32,
}

enum Write {
    Started(NewSession),
    Finished {
        session: NewSession,
        record: Arc<SessionRecord>,
        /// Runs once the record is committed (e.g. to retire the live entry,
        /// so a reader never finds the session in neither place).
        then: Box<dyn FnOnce() + Send>,
    },
    Forget(String),
    /// Runs once everything before it is committed and has had its
    /// consequences.
    Flush(Box<dyn FnOnce() + Send>),
}

pub struct Storage {
    writes: Mutex<Option<Sender<Write>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    reader: Mutex<Connection>,
}

/// Unix milliseconds.
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

impl Storage {
    /// Opens (or creates) the database, marks sessions that were live when
    /// the last process died as `interrupted`, drops history older than
    /// `retention_days`, and starts the writer. Returns how many sessions
    /// were marked interrupted.
    pub fn open(path: &Path, retention_days: u32) -> Result<(Storage, usize)> {
        let writer_db =
            Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        writer_db.execute_batch(SCHEMA)?;
        let interrupted = writer_db.execute(
            "UPDATE sessions SET state = 'interrupted', finish_reason = 'interrupted',
                 finish_detail = 'the server stopped while the session was live'
             WHERE state = 'live'",
            [],
        )?;
        expire(&writer_db, retention_days)?;
        let reader = Connection::open(path)?;
        let (tx, rx) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("sessionbox-storage".into())
            .spawn(move || write_loop(writer_db, rx, retention_days))?;
        Ok((
            Storage {
                writes: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(writer)),
                reader: Mutex::new(reader),
            },
            interrupted,
        ))
    }

    fn send(&self, write: Write) {
        if let Some(writes) = &*self.writes.lock().unwrap_or_else(|e| e.into_inner()) {
            // The writer only stops when `close` takes the sender.
            let _ = writes.send(write);
        }
    }

    /// Records a session that starts (state `live`). The receiver hears
    /// once the row is committed (or the commit failed, which is logged):
    /// a session whose start is announced after that is in the history
    /// even if the process dies the next moment.
    pub fn started(&self, session: NewSession) -> tokio::sync::oneshot::Receiver<()> {
        self.send(Write::Started(session));
        let (done, committed) = tokio::sync::oneshot::channel();
        self.send(Write::Flush(Box::new(move || {
            let _ = done.send(());
        })));
        committed
    }

    /// Records a finished session. `session` is repeated so that the write
    /// stands on its own, whichever reaches the writer first.
    pub fn finished(
        &self,
        session: NewSession,
        record: Arc<SessionRecord>,
        then: impl FnOnce() + Send + 'static,
    ) {
        self.send(Write::Finished {
            session,
            record,
            then: Box::new(then),
        });
    }

    /// Removes a session that never ran (it failed to start).
    pub fn forget(&self, id: &str) {
        self.send(Write::Forget(id.to_owned()));
    }

    /// Waits until everything sent so far is committed.
    pub fn flush(&self) {
        let (done, wait) = mpsc::sync_channel(1);
        self.send(Write::Flush(Box::new(move || {
            let _ = done.send(());
        })));
        let _ = wait.recv();
    }

    /// Commits what is queued and stops the writer.
    pub fn close(&self) {
        drop(self.writes.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(writer) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = writer.join();
        }
    }

    pub fn session(&self, id: &str) -> Result<Option<StoredSession>> {
        let db = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        Ok(db
            .query_row(
                &format!("SELECT {COLUMNS} FROM sessions WHERE id = ?1"),
                [id],
                stored_session,
            )
            .optional()?)
    }

    pub fn log(&self, id: &str) -> Result<Vec<LogLine>> {
        let db = self.reader.lock().unwrap_or_else(|e| e.into_inner());
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

    pub fn list(&self, filter: &SessionFilter) -> Result<Vec<StoredSession>> {
        let db = self.reader.lock().unwrap_or_else(|e| e.into_inner());
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

impl Drop for Storage {
    fn drop(&mut self) {
        self.close();
    }
}

const COLUMNS: &str = "id, tenant, app, scenario_sha256, access_secret_sha256, state,
    started_at_ms, ended_at_ms, finish_reason, finish_detail, events, capabilities,
    dropped_log_lines";

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
    })
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

fn write_loop(mut db: Connection, writes: Receiver<Write>, retention_days: u32) {
    let mut next_expiry = std::time::Instant::now() + EXPIRY_INTERVAL;
    loop {
        let wait = next_expiry.saturating_duration_since(std::time::Instant::now());
        let first = match writes.recv_timeout(wait) {
            Ok(write) => write,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(e) = expire(&db, retention_days) {
                    tracing::error!("expiring session history failed: {e:#}");
                }
                next_expiry += EXPIRY_INTERVAL;
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = vec![first];
        batch.extend(writes.try_iter().take(BATCH - 1));
        let mut after = Vec::new();
        let mut flushes = Vec::new();
        if let Err(e) = apply(&mut db, batch, &mut after, &mut flushes) {
            tracing::error!("writing session history failed: {e:#}");
        }
        for then in after {
            then();
        }
        // A flush answers once everything before it is committed and has
        // had its consequences.
        for done in flushes {
            done();
        }
    }
}

/// Applies a batch in one transaction; what must follow the commit is
/// collected in `after` (it runs even if the write failed: a reader that
/// finds nothing is better than a session that never retires), flushes to
/// answer in `flushes`.
fn apply(
    db: &mut Connection,
    batch: Vec<Write>,
    after: &mut Vec<Box<dyn FnOnce() + Send>>,
    flushes: &mut Vec<Box<dyn FnOnce() + Send>>,
) -> Result<()> {
    let tx = db.transaction()?;
    for write in batch {
        match write {
            Write::Started(s) => {
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
                session: s,
                record,
                then,
            } => {
                after.push(then);
                tx.prepare_cached(
                    "INSERT INTO sessions
                     (id, tenant, app, scenario_sha256, access_secret_sha256, state, started_at_ms,
                      ended_at_ms, finish_reason, finish_detail, events, capabilities,
                      dropped_log_lines)
                     VALUES (?1, ?8, ?9, ?10, ?11, 'finished', ?12, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (id) DO UPDATE SET state = 'finished', ended_at_ms = ?2,
                         finish_reason = ?3, finish_detail = ?4, events = ?5,
                         capabilities = ?6, dropped_log_lines = ?7",
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
            Write::Forget(id) => {
                tx.prepare_cached("DELETE FROM sessions WHERE id = ?1")?
                    .execute([id])?;
            }
            Write::Flush(done) => flushes.push(done),
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
        let (storage, interrupted) = Storage::open(&path, 30).unwrap();
        assert_eq!(interrupted, 0);
        let committed = storage.started(NewSession {
            id: "s1".into(),
            tenant: "t".into(),
            app: "a".into(),
            scenario_sha256: "00".into(),
            access_secret_sha256: "11".into(),
            started_at: SystemTime::now(),
        });
        committed.blocking_recv().unwrap();
        assert_eq!(storage.session("s1").unwrap().unwrap().state, "live");
        // The process "dies": nothing finishes the session.
        drop(storage);

        let (storage, interrupted) = Storage::open(&path, 30).unwrap();
        assert_eq!(interrupted, 1);
        let session = storage.session("s1").unwrap().unwrap();
        assert_eq!(session.state, "interrupted");
        assert_eq!(session.finish_reason.as_deref(), Some("interrupted"));
    }

    #[test]
    fn history_past_the_retention_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        let (storage, _) = Storage::open(&path, 30).unwrap();
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
        let (storage, _) = Storage::open(&path, 30).unwrap();
        drop(storage);
        let (storage, _) = Storage::open(&path, 30).unwrap();
        assert!(storage.session("old").unwrap().is_none());
        assert!(storage.session("recent").unwrap().is_some());
    }
}
