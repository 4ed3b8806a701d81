//! This node among several: its lease, the survivors' duty to mark a lost
//! node's sessions interrupted, and requests forwarded to the node that
//! owns a session.
//!
//! A session lives on the node that started it. Whatever reaches another
//! node for it (an action through the load balancer, an access URL
//! misrouted) is forwarded there over internal HTTP, once: a forwarded
//! request carries the nodes' shared secret, and is answered where it
//! lands.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::Server;
use crate::config::ClusterConfig;
use crate::error::ApiError;
use crate::live::constant_time_eq;
use crate::postgres::Postgres;
use crate::postgres::nodes::{Leases, Load, Node};
use sessionbox_host::metrics::Metrics;

/// The header that marks a request forwarded by another node; its value
/// is the nodes' shared secret.
pub const FORWARDED: &str = "x-sessionbox-cluster";

/// How long a forwarded request may take, at most: as long as the longest
/// request a node holds (`log?wait=true`), and then some.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(40);

pub(crate) struct Cluster {
    leases: Leases,
    secret: HeaderValue,
    lease: Duration,
    client: Client<HttpConnector, Body>,
    metrics: Arc<Metrics>,
    /// When this process started, for `renewed_ms`.
    epoch: Instant,
    /// When the lease was last renewed (ms since `epoch`).
    renewed_ms: AtomicU64,
}

impl Cluster {
    /// Joins the cluster: takes this node's lease (a database that cannot
    /// be reached stops the start).
    pub async fn join(
        settings: &ClusterConfig,
        public_url: &str,
        postgres: Arc<Postgres>,
        load: &Load,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Cluster> {
        let node = Node {
            node_id: settings.node_id.clone(),
            internal_url: settings.internal_url.trim_end_matches('/').to_owned(),
            public_url: public_url.to_owned(),
        };
        let lease = Duration::from_millis(settings.lease);
        let leases = Leases::new(postgres, node, lease);
        leases.renew(load).await?;
        let mut secret = HeaderValue::from_str(&settings.secret)
            .map_err(|_| anyhow::anyhow!("cluster.secret: not a valid header value"))?;
        secret.set_sensitive(true);
        Ok(Cluster {
            leases,
            secret,
            lease,
            client: Client::builder(TokioExecutor::new()).build_http(),
            metrics,
            epoch: Instant::now(),
            renewed_ms: AtomicU64::new(0),
        })
    }

    /// Whether this node's lease still holds, as far as it knows: past
    /// its lease without a renewal, the others may have marked its
    /// sessions interrupted, and it takes no new ones.
    pub fn lease_holds(&self) -> bool {
        let since =
            self.epoch.elapsed().as_millis() as u64 - self.renewed_ms.load(Ordering::Relaxed);
        since < self.lease.as_millis() as u64
    }

    /// Whether `headers` say another node of this cluster forwarded the
    /// request.
    pub fn is_forwarded(&self, headers: &HeaderMap) -> bool {
        headers
            .get(FORWARDED)
            .is_some_and(|value| constant_time_eq(value.as_bytes(), self.secret.as_bytes()))
    }

    /// The other node a live session of `tenant`'s (any tenant's, for an
    /// access URL: None) runs on.
    pub async fn owner(
        &self,
        session_id: &str,
        tenant: Option<&str>,
    ) -> anyhow::Result<Option<Node>> {
        self.leases.owner(session_id, tenant).await
    }

    /// Another node with room for a new session.
    pub async fn with_room(&self) -> anyhow::Result<Option<Node>> {
        self.leases.with_room().await
    }

    /// Sends `request` to `node` and answers with its answer; a node that
    /// cannot be reached is a 502 that names it.
    pub async fn forward(&self, node: &Node, mut request: Request) -> Response {
        let target = request
            .uri()
            .path_and_query()
            .map_or("/", |target| target.as_str());
        let uri = match format!("{}{target}", node.internal_url).parse::<Uri>() {
            Ok(uri) => uri,
            Err(error) => {
                return ApiError::internal(format!("node {}: {error}", node.node_id))
                    .into_response();
            }
        };
        *request.uri_mut() = uri;
        request.headers_mut().remove(axum::http::header::HOST);
        request.headers_mut().insert(FORWARDED, self.secret.clone());
        self.metrics.forwarded_requests.inc();
        match tokio::time::timeout(FORWARD_TIMEOUT, self.client.request(request)).await {
            Ok(Ok(response)) => response.map(Body::new),
            Ok(Err(error)) => unreachable_node(node, &error.to_string()),
            Err(_) => unreachable_node(node, "it did not answer in time"),
        }
    }

    /// Renews this node's lease every third of it, reporting its load, and
    /// then marks the sessions of nodes whose lease lapsed as interrupted.
    pub fn keep_lease(&self, server: Weak<Server>) {
        let every = self.lease / 3;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failures = 0u64;
            loop {
                tick.tick().await;
                let Some(server) = server.upgrade() else {
                    return;
                };
                let Some(cluster) = &server.cluster else {
                    return;
                };
                match cluster.renew(&server).await {
                    Ok(()) => failures = 0,
                    Err(error) => {
                        failures += 1;
                        cluster.metrics.lease_renewal_failures.inc();
                        // Once when it starts, then now and then.
                        if failures == 1 || failures.is_multiple_of(30) {
                            tracing::error!(
                                failures,
                                "renewing this node's lease failed: {error:#}"
                            );
                        }
                    }
                }
            }
        });
    }

    /// One round of [`keep_lease`](Self::keep_lease).
    pub async fn renew(&self, server: &Server) -> anyhow::Result<()> {
        let started = self.epoch.elapsed().as_millis() as u64;
        self.leases.renew(&server.load()).await?;
        self.renewed_ms.store(started, Ordering::Relaxed);
        for (node, sessions) in self.leases.reap().await? {
            self.metrics.lost_sessions_interrupted.inc_by(sessions);
            tracing::warn!(
                node = %node,
                sessions,
                "node {node} was lost (its lease lapsed): its live sessions are marked interrupted"
            );
        }
        Ok(())
    }

    /// Gives this node's lease up, at a clean stop.
    pub async fn leave(&self) {
        if let Err(error) = self.leases.release().await {
            tracing::warn!("giving up this node's lease failed: {error:#}");
        }
    }
}

fn unreachable_node(node: &Node, why: &str) -> Response {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        format!(
            "the session's node {} could not be reached: {why}",
            node.node_id
        ),
    )
    .into_response()
}
