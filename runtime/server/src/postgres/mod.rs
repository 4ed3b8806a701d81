//! PostgreSQL, which several nodes share: the session history
//! ([`history`]), the apps' storage ([`keyvalue`]) and the nodes' leases
//! ([`nodes`]), in one database.
//!
//! Each node opens one pool for its reads, its storage and its leases; the
//! history's writer keeps a connection of its own on its own thread. The
//! schema is migrated at start, under an advisory lock, so that nodes
//! starting together do not race.

pub mod history;
pub mod keyvalue;
pub mod nodes;

use std::str::FromStr;

use anyhow::{Context, Result};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

/// Connections a node's pool holds at most: reads and storage operations
/// beyond that wait their turn.
const POOL_SIZE: usize = 16;

/// The schema, one step per version: a database made by an earlier
/// version is brought up to date by the steps it lacks.
const MIGRATIONS: &[&str] = &[
    // 1: the history, the nodes' leases and the apps' storage.
    r#"
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        node TEXT NOT NULL,
        tenant TEXT NOT NULL,
        app TEXT NOT NULL,
        scenario_sha256 TEXT NOT NULL,
        access_secret_sha256 TEXT NOT NULL,
        state TEXT NOT NULL,
        started_at_ms BIGINT NOT NULL,
        ended_at_ms BIGINT,
        finish_reason TEXT,
        finish_detail TEXT,
        events TEXT,
        capabilities TEXT,
        dropped_log_lines BIGINT NOT NULL DEFAULT 0,
        cpu TEXT
    );
    CREATE INDEX sessions_by_tenant ON sessions (tenant, started_at_ms);
    CREATE INDEX live_sessions_by_node ON sessions (node) WHERE state = 'live';
    CREATE TABLE log_lines (
        session_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        at_ms BIGINT NOT NULL,
        source TEXT NOT NULL,
        text TEXT NOT NULL,
        PRIMARY KEY (session_id, seq)
    );
    CREATE TABLE write_probe (id INTEGER PRIMARY KEY, at_ms BIGINT NOT NULL);
    CREATE TABLE nodes (
        node_id TEXT PRIMARY KEY,
        internal_url TEXT NOT NULL,
        public_url TEXT NOT NULL,
        lease_until TIMESTAMPTZ NOT NULL,
        draining BOOLEAN NOT NULL DEFAULT false,
        live_sessions INTEGER NOT NULL DEFAULT 0,
        max_sessions INTEGER NOT NULL
    );
    -- Keys compare as bytes ("C"), as SQLite's do: listings page in byte order.
    CREATE TABLE kv (
        app TEXT NOT NULL,
        key TEXT COLLATE "C" NOT NULL,
        value BYTEA NOT NULL,
        expires_at_ms BIGINT,
        PRIMARY KEY (app, key)
    );
    CREATE INDEX kv_expiry ON kv (expires_at_ms) WHERE expires_at_ms IS NOT NULL;
    CREATE TABLE kv_usage (
        app TEXT PRIMARY KEY,
        keys BIGINT NOT NULL,
        bytes BIGINT NOT NULL
    );
    -- Whatever writes a key (a session, the API, the expiry sweep) keeps
    -- its app's usage exact.
    CREATE FUNCTION kv_track_usage() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO kv_usage (app, keys, bytes)
            VALUES (NEW.app, 1, octet_length(NEW.key) + octet_length(NEW.value))
            ON CONFLICT (app) DO UPDATE
            SET keys = kv_usage.keys + 1, bytes = kv_usage.bytes + excluded.bytes;
        ELSIF TG_OP = 'DELETE' THEN
            UPDATE kv_usage
            SET keys = keys - 1, bytes = bytes - octet_length(OLD.key) - octet_length(OLD.value)
            WHERE app = OLD.app;
        ELSE
            UPDATE kv_usage SET bytes = bytes + octet_length(NEW.value) - octet_length(OLD.value)
            WHERE app = NEW.app;
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER kv_usage_kept AFTER INSERT OR DELETE OR UPDATE OF value ON kv
    FOR EACH ROW EXECUTE FUNCTION kv_track_usage();
    "#,
    // 2: call recordings, kept with their session's history.
    r#"
    CREATE TABLE recordings (
        session_id TEXT NOT NULL,
        n INTEGER NOT NULL,
        app TEXT NOT NULL,
        call BIGINT NOT NULL,
        channels INTEGER NOT NULL,
        duration_ms BIGINT NOT NULL,
        bytes BIGINT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        wav BYTEA NOT NULL,
        PRIMARY KEY (session_id, n)
    );
    CREATE INDEX recordings_by_app ON recordings (app);
    "#,
];

/// Taken while migrating: one node migrates, the others wait and find the
/// schema up to date.
const MIGRATION_LOCK: i64 = 0x5e55_10b0;

/// A node's way to its PostgreSQL database.
pub struct Postgres {
    pool: Pool,
    config: tokio_postgres::Config,
    /// The URL without its password, for messages.
    shown: String,
}

impl Postgres {
    /// Connects to the database at `url` and brings its schema up to date.
    /// Errors name the database (never its password).
    pub async fn connect(url: &str) -> Result<Postgres> {
        let shown = without_password(url);
        let config = tokio_postgres::Config::from_str(url)
            .with_context(|| format!("the database URL {shown}"))?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .context("building the database pool")?;
        let postgres = Postgres {
            pool,
            config,
            shown,
        };
        postgres
            .migrate()
            .await
            .with_context(|| format!("the database {}", postgres.shown))?;
        Ok(postgres)
    }

    /// A connection from the pool.
    pub async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool
            .get()
            .await
            .with_context(|| format!("connecting to the database {}", self.shown))
    }

    /// Where a connection of its own (the history's writer) connects.
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The database's URL without its password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    async fn migrate(&self) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            .await?;
        let version: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_version",
                &[],
            )
            .await?
            .get(0);
        let known = MIGRATIONS.len() as i64;
        if version > known {
            anyhow::bail!(
                "its schema is version {version}, newer than this Sessionbox knows ({known}): \
                 upgrade this node"
            );
        }
        for (step, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.batch_execute(migration)
                .await
                .with_context(|| format!("migrating the schema to version {}", step + 1))?;
        }
        tx.execute("DELETE FROM schema_version", &[]).await?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&(known as i32)],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// `url` with its password, if any, replaced by `***`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or_default();
            let hidden = if credentials.contains(':') {
                ":***"
            } else {
                ""
            };
            format!("{scheme}://{user}{hidden}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// Text as PostgreSQL stores it: it refuses NUL characters, which a log
/// line may hold.
fn text(value: &str) -> std::borrow::Cow<'_, str> {
    if value.contains('\0') {
        value.replace('\0', "\u{fffd}").into()
    } else {
        value.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            without_password("postgres://sb:hunter2@db:5432/sb"),
            "postgres://sb:***@db:5432/sb"
        );
        assert_eq!(
            without_password("postgres://sb@db/sb"),
            "postgres://sb@db/sb"
        );
        assert_eq!(
            without_password("postgres:///sb?host=/tmp"),
            "postgres:///sb?host=/tmp"
        );
    }
}
