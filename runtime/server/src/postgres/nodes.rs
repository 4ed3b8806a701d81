//! The nodes' leases: each node holds a row it renews; a node whose lease
//! lapses is gone, and a survivor marks its live sessions `interrupted`.
//!
//! Lease times are PostgreSQL's clock (`now()`), never a node's, so nodes
//! whose clocks disagree still agree on whose lease has lapsed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use super::Postgres;
use crate::history::unix_ms;

/// Another node, as the leases know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub node_id: String,
    /// Where its API takes forwarded requests.
    pub internal_url: String,
    /// The base of its access URLs.
    pub public_url: String,
}

/// This node's lease, and what it reads of the others'.
pub struct Leases {
    postgres: Arc<Postgres>,
    node: Node,
    lease: Duration,
}

/// What a renewal reports of this node.
pub struct Load {
    pub live_sessions: usize,
    pub max_sessions: u32,
    pub draining: bool,
}

impl Leases {
    pub fn new(postgres: Arc<Postgres>, node: Node, lease: Duration) -> Leases {
        Leases {
            postgres,
            node,
            lease,
        }
    }

    /// Takes or renews this node's lease, reporting its load.
    pub async fn renew(&self, load: &Load) -> Result<()> {
        let client = self.postgres.client().await?;
        let lease_ms = self.lease.as_millis() as i64;
        client
            .execute(
                "INSERT INTO nodes (node_id, internal_url, public_url, lease_until, draining,
                     live_sessions, max_sessions)
                 VALUES ($1, $2, $3, now() + $4::BIGINT * INTERVAL '1 millisecond', $5, $6, $7)
                 ON CONFLICT (node_id) DO UPDATE SET internal_url = excluded.internal_url,
                     public_url = excluded.public_url, lease_until = excluded.lease_until,
                     draining = excluded.draining, live_sessions = excluded.live_sessions,
                     max_sessions = excluded.max_sessions",
                &[
                    &self.node.node_id,
                    &self.node.internal_url,
                    &self.node.public_url,
                    &lease_ms,
                    &load.draining,
                    &(load.live_sessions as i32),
                    &(load.max_sessions as i32),
                ],
            )
            .await?;
        Ok(())
    }

    /// Gives the lease up (a clean stop): nothing is forwarded here any more.
    pub async fn release(&self) -> Result<()> {
        let client = self.postgres.client().await?;
        client
            .execute(
                "UPDATE nodes SET lease_until = now(), live_sessions = 0 WHERE node_id = $1",
                &[&self.node.node_id],
            )
            .await?;
        Ok(())
    }

    /// Marks the live sessions of every node whose lease has lapsed as
    /// `interrupted`, naming the node; how many, by node.
    pub async fn reap(&self) -> Result<Vec<(String, u64)>> {
        let client = self.postgres.client().await?;
        let rows = client
            .query(
                "WITH lapsed AS (
                     SELECT node_id, lease_until FROM nodes
                     WHERE lease_until < now() AND node_id <> $1
                 ), marked AS (
                     UPDATE sessions s SET state = 'interrupted', finish_reason = 'interrupted',
                         finish_detail = 'node ' || s.node || ' was lost: its lease lapsed at '
                             || to_char(l.lease_until AT TIME ZONE 'UTC',
                                        'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
                         ended_at_ms = $2
                     FROM lapsed l
                     WHERE s.state = 'live' AND s.node = l.node_id
                     RETURNING s.node
                 )
                 SELECT node, COUNT(*) FROM marked GROUP BY node",
                &[
                    &self.node.node_id,
                    &(unix_ms(std::time::SystemTime::now()) as i64),
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| (row.get(0), row.get::<_, i64>(1) as u64))
            .collect())
    }

    /// The node a live session runs on, if that is another node whose
    /// lease holds (and, given a tenant, the session is the tenant's; an
    /// access URL's owner checks its secret instead).
    pub async fn owner(&self, session_id: &str, tenant: Option<&str>) -> Result<Option<Node>> {
        let client = self.postgres.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT n.node_id, n.internal_url, n.public_url
                 FROM sessions s JOIN nodes n ON n.node_id = s.node
                 WHERE s.id = $1 AND ($2::TEXT IS NULL OR s.tenant = $2) AND s.state = 'live'
                   AND n.node_id <> $3 AND n.lease_until > now()",
            )
            .await?;
        let row = client
            .query_opt(&statement, &[&session_id, &tenant, &self.node.node_id])
            .await?;
        Ok(row.map(|row| node(&row)))
    }

    /// Another node with room for a session: its lease holds, it is not
    /// draining, and of those it has the most free places.
    pub async fn with_room(&self) -> Result<Option<Node>> {
        let client = self.postgres.client().await?;
        let row = client
            .query_opt(
                "SELECT node_id, internal_url, public_url FROM nodes
                 WHERE lease_until > now() AND NOT draining AND live_sessions < max_sessions
                   AND node_id <> $1
                 ORDER BY max_sessions - live_sessions DESC, node_id LIMIT 1",
                &[&self.node.node_id],
            )
            .await?;
        Ok(row.map(|row| node(&row)))
    }
}

fn node(row: &tokio_postgres::Row) -> Node {
    Node {
        node_id: row.get(0),
        internal_url: row.get(1),
        public_url: row.get(2),
    }
}
