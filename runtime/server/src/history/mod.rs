//! The session history: every session from its start (state `live`) to its
//! record, and its log, for the API to list and read.
//!
//! [`History`] writes through one [`writer`] whatever keeps it, and reads
//! through its backend: an SQLite file for one node ([`sqlite`]), or
//! PostgreSQL, which nodes share ([`crate::postgres`]). A start is
//! committed before the session runs, so a crash from then on leaves it
//! `interrupted`, not missing; a finished session's record is held until
//! it is committed, never dropped.

mod sqlite;
pub(crate) mod writer;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use serde::Serialize;
use tokio::sync::oneshot;

use sessionbox_host::log::LogLine;
use sessionbox_host::session::SessionRecord;

pub use writer::MAX_HELD_WRITES;
use writer::Writes;

/// A read of the history, awaited.
pub type Read<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// How a backend answers reads.
pub(crate) trait Reader: Send + Sync {
    fn session<'a>(&'a self, id: &'a str) -> Read<'a, Option<StoredSession>>;

    fn log<'a>(&'a self, id: &'a str) -> Read<'a, Vec<LogLine>>;

    /// The newest sessions first, as `filter` asks.
    fn list<'a>(&'a self, filter: &'a SessionFilter) -> Read<'a, Vec<StoredSession>>;
}

/// The history: its writer and its backend's reads.
pub struct History {
    writes: Writes,
    reader: Box<dyn Reader>,
}

impl History {
    pub(crate) fn new(writes: Writes, reader: impl Reader + 'static) -> History {
        History {
            writes,
            reader: Box::new(reader),
        }
    }

    /// Whether the history is being written now, and what is held.
    pub fn health(&self) -> Health {
        self.writes.health()
    }

    /// Records a session that starts (state `live`). The receiver hears
    /// once the row is committed, or why it could not be: a session must
    /// not run (nor its start be announced) unless it is in the history.
    pub fn started(&self, session: NewSession) -> oneshot::Receiver<Result<(), String>> {
        self.writes.started(session)
    }

    /// Records a finished session; `then` runs once it is committed (a
    /// write that fails is held and tried again until it is). `session` is
    /// repeated so that the write stands on its own.
    pub fn finished(
        &self,
        session: NewSession,
        record: Arc<SessionRecord>,
        then: Box<dyn FnOnce() + Send>,
    ) {
        self.writes.finished(session, record, then);
    }

    /// Removes a session that never ran (it failed to start). The receiver
    /// hears once the row is gone, so that a refused start is answered
    /// only when no reader can find it; or, while the database fails, once
    /// the removal is held (the row then reads as `live` until it is
    /// written).
    pub fn forget(&self, id: &str) -> oneshot::Receiver<()> {
        self.writes.forget(id)
    }

    /// Waits until everything sent so far is committed.
    pub fn flush(&self) {
        self.writes.flush();
    }

    /// Commits what is queued (trying for a while if the database refuses)
    /// and stops writing.
    pub fn close(&self) {
        self.writes.close();
    }

    pub async fn session(&self, id: &str) -> Result<Option<StoredSession>> {
        self.reader.session(id).await
    }

    pub async fn log(&self, id: &str) -> Result<Vec<LogLine>> {
        self.reader.log(id).await
    }

    /// The newest sessions first, as `filter` asks.
    pub async fn list(&self, filter: &SessionFilter) -> Result<Vec<StoredSession>> {
        self.reader.list(filter).await
    }
}

/// A session as it starts.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: String,
    /// The node the session runs on.
    pub node: String,
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
    /// Its time on the slow lane and how long it was throttled there.
    pub cpu: Option<serde_json::Value>,
    pub dropped_log_lines: u64,
    /// The node it runs (or ran) on.
    pub node: String,
}

impl StoredSession {
    /// A session that finished with `record`, as the history has it once
    /// the record is written.
    pub fn finished(session: &NewSession, record: &SessionRecord) -> Self {
        StoredSession {
            state: "finished".into(),
            ended_at_ms: Some(unix_ms(record.ended_at)),
            finish_reason: Some(record.finish_reason.label().into()),
            finish_detail: Some(record.finish_reason.to_string()),
            events: serde_json::to_value(&record.events).ok(),
            capabilities: serde_json::to_value(&record.capabilities).ok(),
            cpu: serde_json::to_value(record.cpu).ok(),
            dropped_log_lines: record.log.dropped_lines,
            ..Self::live(session)
        }
    }

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
            cpu: None,
            dropped_log_lines: 0,
            node: session.node.clone(),
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

/// Whether the history is being written.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Health {
    /// The last write's error, while writes fail.
    pub error: Option<String>,
    /// Writes held in memory until the disk takes them.
    pub held_writes: usize,
}

impl Health {
    pub fn is_degraded(&self) -> bool {
        self.error.is_some()
    }
}

/// Unix milliseconds.
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// Sessions that started before this (unix ms) and are no longer live
/// are past the retention.
pub(crate) fn retention_horizon_ms(retention_days: u32) -> u64 {
    unix_ms(SystemTime::now()).saturating_sub(u64::from(retention_days) * 24 * 3600 * 1000)
}
