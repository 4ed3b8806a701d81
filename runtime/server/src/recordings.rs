//! Call recordings, kept with the session history in its database (the
//! SQLite file, or PostgreSQL for every node) and dropped with it at the
//! end of the retention. Each app's recordings take at most its
//! `recording_bytes`: the check and the write are one transaction.
//!
//! A recording is written when it ends, in one piece, apart from the
//! history's writer (whose batches carry small rows): on SQLite through a
//! connection of its own on a blocking thread, on PostgreSQL through the
//! pool. The scenario hears `recording-finished` only once it is committed.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use crate::history::unix_ms;
use crate::postgres::Postgres;
use sessionbox_host::recording::{Recording, RecordingId, RecordingStore};
use sessionbox_host::sync::MutexExt;

/// Where recordings are kept: the history's database.
pub enum Recordings {
    Sqlite(Arc<Mutex<Connection>>),
    Postgres(Arc<Postgres>),
}

/// A recording as the API lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StoredRecording {
    pub n: RecordingId,
    pub call: u32,
    pub channels: u16,
    pub duration_ms: u64,
    pub bytes: u64,
    pub created_at_ms: u64,
}

/// Why a recording was not kept: the app is at its quota.
fn over_quota(app_bytes: u64) -> String {
    format!("the app's recordings are limited to {app_bytes} bytes, and this one would pass that")
}

impl Recordings {
    /// Recordings in the SQLite history at `path` (which has the table).
    pub fn sqlite(path: &Path) -> Result<Recordings> {
        let db = Connection::open(path)
            .with_context(|| format!("the session history database {}", path.display()))?;
        // The history's writer shares the file: wait for its transactions.
        db.busy_timeout(Duration::from_secs(10))?;
        Ok(Recordings::Sqlite(Arc::new(Mutex::new(db))))
    }

    /// Keeps `recording` of `session` of `app`, unless the app's
    /// recordings would pass `app_bytes`.
    pub async fn keep(
        &self,
        app: &str,
        session: &str,
        recording: Recording,
        app_bytes: u64,
    ) -> Result<(), String> {
        let bytes = recording.wav.len() as u64;
        let now = unix_ms(SystemTime::now());
        match self {
            Recordings::Sqlite(db) => {
                let (db, app, session) = (Arc::clone(db), app.to_owned(), session.to_owned());
                let kept = tokio::task::spawn_blocking(move || -> Result<bool> {
                    let mut db = db.locked();
                    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    let used: u64 = tx.query_row(
                        "SELECT COALESCE(SUM(bytes), 0) FROM recordings WHERE app = ?1",
                        [&app],
                        |row| row.get(0),
                    )?;
                    if used + bytes > app_bytes {
                        return Ok(false);
                    }
                    tx.execute(
                        "INSERT INTO recordings
                         (session_id, n, app, call, channels, duration_ms, bytes, created_at_ms, wav)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                        params![
                            session,
                            recording.id,
                            app,
                            recording.call,
                            recording.channels,
                            recording.duration.as_millis() as u64,
                            bytes,
                            now,
                            recording.wav
                        ],
                    )?;
                    tx.commit()?;
                    Ok(true)
                })
                .await
                .map_err(|e| e.to_string())?;
                match kept {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(over_quota(app_bytes)),
                    Err(error) => Err(format!("the history's database refused it: {error}")),
                }
            }
            Recordings::Postgres(postgres) => {
                let kept = async {
                    let mut client = postgres.client().await?;
                    let tx = client.transaction().await?;
                    // One app's writes queue here, so two nodes cannot both
                    // take the last room.
                    tx.execute(
                        "SELECT pg_advisory_xact_lock(hashtext('recordings ' || $1))",
                        &[&app],
                    )
                    .await?;
                    let used: i64 = tx
                        .query_one(
                            "SELECT COALESCE(SUM(bytes), 0)::BIGINT FROM recordings WHERE app = $1",
                            &[&app],
                        )
                        .await?
                        .get(0);
                    if used as u64 + bytes > app_bytes {
                        return Ok(false);
                    }
                    tx.execute(
                        "INSERT INTO recordings
                         (session_id, n, app, call, channels, duration_ms, bytes, created_at_ms, wav)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                        &[
                            &session,
                            &(recording.id as i32),
                            &app,
                            &i64::from(recording.call),
                            &i32::from(recording.channels),
                            &(recording.duration.as_millis() as i64),
                            &(bytes as i64),
                            &(now as i64),
                            &recording.wav,
                        ],
                    )
                    .await?;
                    tx.commit().await?;
                    anyhow::Ok(true)
                };
                match kept.await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(over_quota(app_bytes)),
                    Err(error) => Err(format!("the history's database refused it: {error:#}")),
                }
            }
        }
    }

    /// The recordings of `session`, in order.
    pub async fn list(&self, session: &str) -> Result<Vec<StoredRecording>> {
        const COLUMNS: &str = "n, call, channels, duration_ms, bytes, created_at_ms";
        match self {
            Recordings::Sqlite(db) => {
                let db = Arc::clone(db);
                let session = session.to_owned();
                tokio::task::spawn_blocking(move || {
                    let db = db.locked();
                    let mut query = db.prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM recordings WHERE session_id = ?1 ORDER BY n"
                    ))?;
                    let rows = query.query_map([session], |row| {
                        Ok(StoredRecording {
                            n: row.get(0)?,
                            call: row.get(1)?,
                            channels: row.get(2)?,
                            duration_ms: row.get(3)?,
                            bytes: row.get(4)?,
                            created_at_ms: row.get(5)?,
                        })
                    })?;
                    Ok(rows.collect::<Result<_, _>>()?)
                })
                .await?
            }
            Recordings::Postgres(postgres) => {
                let client = postgres.client().await?;
                let rows = client
                    .query(
                        &format!(
                            "SELECT {COLUMNS} FROM recordings WHERE session_id = $1 ORDER BY n"
                        ),
                        &[&session],
                    )
                    .await?;
                Ok(rows
                    .iter()
                    .map(|row| StoredRecording {
                        n: row.get::<_, i32>(0) as u32,
                        call: row.get::<_, i64>(1) as u32,
                        channels: row.get::<_, i32>(2) as u16,
                        duration_ms: row.get::<_, i64>(3) as u64,
                        bytes: row.get::<_, i64>(4) as u64,
                        created_at_ms: row.get::<_, i64>(5) as u64,
                    })
                    .collect())
            }
        }
    }

    /// Recording `n` of `session`: its WAV.
    pub async fn wav(&self, session: &str, n: RecordingId) -> Result<Option<Vec<u8>>> {
        match self {
            Recordings::Sqlite(db) => {
                let db = Arc::clone(db);
                let session = session.to_owned();
                tokio::task::spawn_blocking(move || {
                    let db = db.locked();
                    let wav = db
                        .query_row(
                            "SELECT wav FROM recordings WHERE session_id = ?1 AND n = ?2",
                            params![session, n],
                            |row| row.get(0),
                        )
                        .optional()?;
                    Ok(wav)
                })
                .await?
            }
            Recordings::Postgres(postgres) => {
                let client = postgres.client().await?;
                let row = client
                    .query_opt(
                        "SELECT wav FROM recordings WHERE session_id = $1 AND n = $2",
                        &[&session, &(n as i32)],
                    )
                    .await?;
                Ok(row.map(|row| row.get(0)))
            }
        }
    }
}

/// One app's recordings: what its sessions keep theirs in.
pub struct AppRecordings {
    pub app: String,
    pub recordings: Arc<Recordings>,
}

impl RecordingStore for AppRecordings {
    fn keep(
        &self,
        session: &str,
        recording: Recording,
        app_bytes: u64,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
        let (recordings, app) = (Arc::clone(&self.recordings), self.app.clone());
        let session = session.to_owned();
        Box::pin(async move { recordings.keep(&app, &session, recording, app_bytes).await })
    }
}
