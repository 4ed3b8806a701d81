//! The history in PostgreSQL, shared by the nodes: each node writes its own
//! sessions (with its node id) and reads everyone's.
//!
//! The writer runs on its own thread with a connection of its own, and
//! writes each batch in four statements whatever its size (rows passed as
//! arrays and unnested), so a batch costs a few round trips, not one per
//! row. Opening marks only this node's sessions still `live` as
//! `interrupted`: another node's are that node's (or, once its lease
//! lapses, a survivor's) to mark.

use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, Result};
use tokio_postgres::{Client, NoTls, Row};

use sessionbox_host::log::{LogLine, LogSource};
use sessionbox_host::metrics::Metrics;

use super::{Postgres, text};
use crate::history::writer::{Sink, Write, Writes};
use crate::history::{
    History, Read, Reader, SessionFilter, StoredSession, retention_horizon_ms, unix_ms,
};

impl History {
    /// Opens the history in PostgreSQL for node `node`: marks the sessions
    /// this node had live when it last stopped as `interrupted`, drops
    /// history older than `retention_days`, and starts the writer. Returns how many sessions were marked.
    pub async fn postgres(
        postgres: Arc<Postgres>,
        node: &str,
        retention_days: u32,
        metrics: Arc<Metrics>,
    ) -> Result<(History, usize)> {
        let client = postgres.client().await?;
        let detail = format!("node {node} restarted while the session was live");
        let interrupted = client
            .execute(
                "UPDATE sessions SET state = 'interrupted', finish_reason = 'interrupted',
                     finish_detail = $2, ended_at_ms = $3
                 WHERE state = 'live' AND node = $1",
                &[&node, &detail, &(unix_ms(SystemTime::now()) as i64)],
            )
            .await
            .with_context(|| format!("the session history in {}", postgres.shown()))?;
        // As SQLite's does at open; the writer does it every hour.
        expire(&client, retention_days)
            .await
            .with_context(|| format!("expiring the session history in {}", postgres.shown()))?;
        drop(client);
        let sink = PgSink {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            config: postgres.config().clone(),
            client: None,
        };
        let writes = Writes::start(sink, retention_days, metrics)?;
        Ok((
            History::new(writes, PgReader(postgres)),
            interrupted as usize,
        ))
    }
}

struct PgReader(Arc<Postgres>);

const COLUMNS: &str = "id, tenant, app, scenario_sha256, access_secret_sha256, state,
    started_at_ms, ended_at_ms, finish_reason, finish_detail, events, capabilities,
    dropped_log_lines, cpu, node";

fn stored_session(row: &Row) -> StoredSession {
    let json = |text: Option<String>| text.and_then(|t| serde_json::from_str(&t).ok());
    let ms = |ms: i64| ms as u64;
    StoredSession {
        session_id: row.get(0),
        tenant: row.get(1),
        app: row.get(2),
        scenario_sha256: row.get(3),
        access_secret_sha256: row.get(4),
        state: row.get(5),
        started_at_ms: ms(row.get(6)),
        ended_at_ms: row.get::<_, Option<i64>>(7).map(ms),
        finish_reason: row.get(8),
        finish_detail: row.get(9),
        events: json(row.get(10)),
        capabilities: json(row.get(11)),
        dropped_log_lines: ms(row.get(12)),
        cpu: json(row.get(13)),
        node: row.get(14),
    }
}

impl Reader for PgReader {
    fn session<'a>(&'a self, id: &'a str) -> Read<'a, Option<StoredSession>> {
        Box::pin(async move {
            let client = self.0.client().await?;
            let query = format!("SELECT {COLUMNS} FROM sessions WHERE id = $1");
            let statement = client.prepare_cached(&query).await?;
            let row = client.query_opt(&statement, &[&id]).await?;
            Ok(row.as_ref().map(stored_session))
        })
    }

    fn log<'a>(&'a self, id: &'a str) -> Read<'a, Vec<LogLine>> {
        Box::pin(async move {
            let client = self.0.client().await?;
            let statement = client
                .prepare_cached(
                    "SELECT at_ms, source, text FROM log_lines WHERE session_id = $1 ORDER BY seq",
                )
                .await?;
            let rows = client.query(&statement, &[&id]).await?;
            Ok(rows
                .iter()
                .map(|row| LogLine {
                    at_ms: row.get::<_, i64>(0) as u64,
                    source: LogSource::from_name(row.get(1)),
                    text: row.get(2),
                })
                .collect())
        })
    }

    fn list<'a>(&'a self, filter: &'a SessionFilter) -> Read<'a, Vec<StoredSession>> {
        Box::pin(async move {
            let client = self.0.client().await?;
            let query = format!(
                "SELECT {COLUMNS} FROM sessions
                 WHERE tenant = $1
                   AND ($2::TEXT IS NULL OR app = $2)
                   AND ($3::TEXT IS NULL OR state = $3)
                   AND ($4::TEXT IS NULL OR finish_reason = $4)
                   AND ($5::BIGINT IS NULL OR started_at_ms >= $5)
                 ORDER BY started_at_ms DESC LIMIT $6"
            );
            let statement = client.prepare_cached(&query).await?;
            let since = filter.since_ms.map(|ms| ms as i64);
            let rows = client
                .query(
                    &statement,
                    &[
                        &filter.tenant,
                        &filter.app,
                        &filter.state,
                        &filter.finish_reason,
                        &since,
                        &i64::from(filter.limit),
                    ],
                )
                .await?;
            Ok(rows.iter().map(stored_session).collect())
        })
    }
}

/// The writer's connection, driven by a runtime of the writer's thread.
struct PgSink {
    runtime: tokio::runtime::Runtime,
    config: tokio_postgres::Config,
    /// Connected on first use, and again after the connection is lost.
    client: Option<Client>,
}

impl PgSink {
    /// Runs `work` on the connection, connecting first if there is none.
    fn with_client<T>(
        &mut self,
        work: impl AsyncFnOnce(&mut Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let (client, connection) = self.runtime.block_on(self.config.connect(NoTls))?;
            self.runtime.spawn(connection);
            self.client = Some(client);
        }
        let client = self.client.as_mut().expect("connected above");
        Ok(self.runtime.block_on(work(client))?)
    }
}

impl Sink for PgSink {
    fn apply(&mut self, batch: &[Write]) -> Result<()> {
        let rows = Rows::of(batch)?;
        self.with_client(async |client| {
            let tx = client.transaction().await?;
            rows.write(&tx).await?;
            tx.commit().await
        })
    }

    fn probe(&mut self) -> Result<()> {
        let now = unix_ms(SystemTime::now()) as i64;
        self.with_client(async |client| {
            client
                .execute(
                    "INSERT INTO write_probe (id, at_ms) VALUES (1, $1)
                     ON CONFLICT (id) DO UPDATE SET at_ms = excluded.at_ms",
                    &[&now],
                )
                .await
        })?;
        Ok(())
    }

    fn expire(&mut self, retention_days: u32) -> Result<()> {
        self.with_client(async |client| expire(client, retention_days).await)?;
        Ok(())
    }
}

/// Drops finished sessions (and their logs and recordings) older than the
/// retention.
async fn expire(client: &Client, retention_days: u32) -> Result<u64, tokio_postgres::Error> {
    let horizon = retention_horizon_ms(retention_days) as i64;
    for table in ["log_lines", "recordings"] {
        client
            .execute(
                &format!(
                    "DELETE FROM {table} WHERE session_id IN
                         (SELECT id FROM sessions WHERE started_at_ms < $1 AND state != 'live')"
                ),
                &[&horizon],
            )
            .await?;
    }
    client
        .execute(
            "DELETE FROM sessions WHERE started_at_ms < $1 AND state != 'live'",
            &[&horizon],
        )
        .await
}

/// A batch as columns: one array per column, one statement per kind of
/// write.
#[derive(Default)]
struct Rows {
    started: Columns,
    finished: Columns,
    lines: LineColumns,
    forgotten: Vec<String>,
}

/// The columns of session rows.
#[derive(Default)]
struct Columns {
    id: Vec<String>,
    node: Vec<String>,
    tenant: Vec<String>,
    app: Vec<String>,
    scenario_sha256: Vec<String>,
    access_secret_sha256: Vec<String>,
    started_at_ms: Vec<i64>,
    ended_at_ms: Vec<i64>,
    finish_reason: Vec<String>,
    finish_detail: Vec<String>,
    events: Vec<String>,
    capabilities: Vec<String>,
    dropped_log_lines: Vec<i64>,
    cpu: Vec<String>,
}

#[derive(Default)]
struct LineColumns {
    session_id: Vec<String>,
    seq: Vec<i32>,
    at_ms: Vec<i64>,
    source: Vec<String>,
    text: Vec<String>,
}

impl Rows {
    fn of(batch: &[Write]) -> Result<Rows> {
        let mut rows = Rows::default();
        for write in batch {
            match write {
                Write::Started { session, .. } => {
                    rows.started.push_session(session);
                }
                Write::Finished {
                    session, record, ..
                } => {
                    let finished = &mut rows.finished;
                    finished.push_session(session);
                    finished.ended_at_ms.push(unix_ms(record.ended_at) as i64);
                    finished
                        .finish_reason
                        .push(record.finish_reason.label().into());
                    finished
                        .finish_detail
                        .push(text(&record.finish_reason.to_string()).into_owned());
                    finished.events.push(serde_json::to_string(&record.events)?);
                    finished
                        .capabilities
                        .push(serde_json::to_string(&record.capabilities)?);
                    finished
                        .dropped_log_lines
                        .push(record.log.dropped_lines as i64);
                    finished.cpu.push(serde_json::to_string(&record.cpu)?);
                    for (seq, line) in record.log.lines.iter().enumerate() {
                        let lines = &mut rows.lines;
                        lines.session_id.push(record.id.clone());
                        lines.seq.push(seq as i32);
                        lines.at_ms.push(line.at_ms as i64);
                        lines.source.push(line.source.name().into());
                        lines.text.push(text(&line.text).into_owned());
                    }
                }
                Write::Forget { id, .. } => rows.forgotten.push(id.clone()),
                Write::Flush(_) => {}
                #[cfg(test)]
                Write::RefuseWrites(_) => unreachable!("applied before the batch"),
            }
        }
        Ok(rows)
    }

    /// Starts first, then finishes (which may finish a start of this very
    /// batch), then forgets (of sessions whose start came earlier).
    async fn write(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
    ) -> Result<(), tokio_postgres::Error> {
        let started = &self.started;
        if !started.id.is_empty() {
            tx.execute(
                "INSERT INTO sessions (id, node, tenant, app, scenario_sha256,
                     access_secret_sha256, state, started_at_ms)
                 SELECT id, node, tenant, app, scenario, secret, 'live', started
                 FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
                             $6::TEXT[], $7::BIGINT[])
                     AS s(id, node, tenant, app, scenario, secret, started)
                 ON CONFLICT (id) DO NOTHING",
                &[
                    &started.id,
                    &started.node,
                    &started.tenant,
                    &started.app,
                    &started.scenario_sha256,
                    &started.access_secret_sha256,
                    &started.started_at_ms,
                ],
            )
            .await?;
        }
        let finished = &self.finished;
        if !finished.id.is_empty() {
            tx.execute(
                "INSERT INTO sessions (id, node, tenant, app, scenario_sha256,
                     access_secret_sha256, state, started_at_ms, ended_at_ms, finish_reason,
                     finish_detail, events, capabilities, dropped_log_lines, cpu)
                 SELECT id, node, tenant, app, scenario, secret, 'finished', started, ended,
                     reason, detail, events, capabilities, dropped, cpu
                 FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
                             $6::TEXT[], $7::BIGINT[], $8::BIGINT[], $9::TEXT[], $10::TEXT[],
                             $11::TEXT[], $12::TEXT[], $13::BIGINT[], $14::TEXT[])
                     AS f(id, node, tenant, app, scenario, secret, started, ended, reason,
                          detail, events, capabilities, dropped, cpu)
                 ON CONFLICT (id) DO UPDATE SET state = 'finished',
                     ended_at_ms = excluded.ended_at_ms, finish_reason = excluded.finish_reason,
                     finish_detail = excluded.finish_detail, events = excluded.events,
                     capabilities = excluded.capabilities,
                     dropped_log_lines = excluded.dropped_log_lines, cpu = excluded.cpu",
                &[
                    &finished.id,
                    &finished.node,
                    &finished.tenant,
                    &finished.app,
                    &finished.scenario_sha256,
                    &finished.access_secret_sha256,
                    &finished.started_at_ms,
                    &finished.ended_at_ms,
                    &finished.finish_reason,
                    &finished.finish_detail,
                    &finished.events,
                    &finished.capabilities,
                    &finished.dropped_log_lines,
                    &finished.cpu,
                ],
            )
            .await?;
        }
        let lines = &self.lines;
        if !lines.session_id.is_empty() {
            tx.execute(
                "INSERT INTO log_lines (session_id, seq, at_ms, source, text)
                 SELECT * FROM UNNEST($1::TEXT[], $2::INTEGER[], $3::BIGINT[], $4::TEXT[],
                                      $5::TEXT[])
                 ON CONFLICT (session_id, seq) DO NOTHING",
                &[
                    &lines.session_id,
                    &lines.seq,
                    &lines.at_ms,
                    &lines.source,
                    &lines.text,
                ],
            )
            .await?;
        }
        if !self.forgotten.is_empty() {
            tx.execute(
                "DELETE FROM sessions WHERE id = ANY($1)",
                &[&self.forgotten],
            )
            .await?;
        }
        Ok(())
    }
}

impl Columns {
    fn push_session(&mut self, session: &crate::history::NewSession) {
        self.id.push(session.id.clone());
        self.node.push(session.node.clone());
        self.tenant.push(session.tenant.clone());
        self.app.push(session.app.clone());
        self.scenario_sha256.push(session.scenario_sha256.clone());
        self.access_secret_sha256
            .push(session.access_secret_sha256.clone());
        self.started_at_ms.push(unix_ms(session.started_at) as i64);
    }
}
