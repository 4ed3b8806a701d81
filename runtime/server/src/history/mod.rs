//! The session history: every session from its start (state `live`) to its
//! record, and its log, for the API to list and read.
//!
//! [`History`] is what the server needs of a backend; [`SqliteHistory`] is
//! the one there is. A start is committed before the session runs, so a
//! crash from then on leaves it `interrupted`, not missing; a finished
//! session's record is held until it is committed, never dropped.

mod sqlite;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use serde::Serialize;
use tokio::sync::oneshot;

use sessionbox_host::log::LogLine;
use sessionbox_host::session::SessionRecord;

pub use sqlite::{MAX_HELD_WRITES, SqliteHistory};

/// What the server needs of a history backend.
pub trait History: Send + Sync {
    /// Whether the history is being written now, and what is held.
    fn health(&self) -> Health;

    /// Records a session that starts (state `live`). The receiver hears
    /// once the row is committed, or why it could not be: a session must
    /// not run (nor its start be announced) unless it is in the history.
    fn started(&self, session: NewSession) -> oneshot::Receiver<Result<(), String>>;

    /// Records a finished session; `then` runs once it is committed (a
    /// write that fails is held and tried again until it is). `session` is
    /// repeated so that the write stands on its own.
    fn finished(
        &self,
        session: NewSession,
        record: Arc<SessionRecord>,
        then: Box<dyn FnOnce() + Send>,
    );

    /// Removes a session that never ran (it failed to start). The receiver
    /// hears once the row is gone, so that a refused start is answered
    /// only when no reader can find it; or, while the disk fails, once the
    /// removal is held (the row then reads as `live` until it is written).
    fn forget(&self, id: &str) -> oneshot::Receiver<()>;

    /// Waits until everything sent so far is committed.
    fn flush(&self);

    /// Commits what is queued (trying for a while if the disk refuses) and
    /// stops writing.
    fn close(&self);

    fn session(&self, id: &str) -> Result<Option<StoredSession>>;

    fn log(&self, id: &str) -> Result<Vec<LogLine>>;

    /// The newest sessions first, as `filter` asks.
    fn list(&self, filter: &SessionFilter) -> Result<Vec<StoredSession>>;
}

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
    /// Its time on the slow lane and how long it was throttled there.
    pub cpu: Option<serde_json::Value>,
    pub dropped_log_lines: u64,
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
