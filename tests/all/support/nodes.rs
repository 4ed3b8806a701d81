//! Sessionbox nodes sharing one PostgreSQL, behind HAProxy (HTTP) and
//! Kamailio (SIP): each node the real binary, as a platform runs it, with
//! a config of its own; everything on loopback.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::support::haproxy::HaProxy;
use crate::support::kamailio::Kamailio;
use crate::support::{guest_path, postgres};

pub const KEY: &str = "cluster-tenant-key";
pub const ADMIN: &str = "cluster-operator-key";
const SECRET: &str = "the-nodes-shared-secret";
/// How long a drained node lets its sessions run on their own.
pub const DRAIN_MS: u64 = 1_500;

/// One node: the real binary, as a platform runs it.
pub struct Node {
    pub id: String,
    pub child: Child,
    /// Its own address (the internal URL), bypassing the load balancer.
    pub url: String,
    pub sip: SocketAddr,
}

impl Drop for Node {
    /// A failing test must not leave a node running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_tcp() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn free_udp() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Three nodes behind HAProxy and Kamailio.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub lb: HaProxy,
    pub sip: Kamailio,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `count` nodes (`n1`, `n2`, ...), each lease `lease_ms` long.
    pub async fn start(count: usize, lease_ms: u64) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let database = postgres::database();
        let addresses: Vec<(String, SocketAddr, SocketAddr)> = (1..=count)
            .map(|n| (format!("n{n}"), free_tcp(), free_udp()))
            .collect();
        // The load balancer first: the nodes' access URLs name it.
        let lb = HaProxy::start(
            &addresses
                .iter()
                .map(|(id, http, _)| (id.clone(), *http))
                .collect::<Vec<_>>(),
        )
        .await;
        let mut nodes = Vec::new();
        for (index, (id, http, sip)) in addresses.into_iter().enumerate() {
            let rtp = 42_000 + 1_000 * index as u16;
            let config = dir.path().join(format!("{id}.toml"));
            std::fs::write(
                &config,
                format!(
                    r#"
                    [server]
                    listen = "{http}"
                    public_url = "{lb}/{id}"
                    database = "{database}"
                    admin_key = "{ADMIN}"
                    drain_deadline = {DRAIN_MS}
                    shutdown_deadline = 2000
                    cache_dir = "{cache}"
                    [cluster]
                    node_id = "{id}"
                    internal_url = "http://{http}"
                    secret = "{SECRET}"
                    lease = {lease_ms}
                    [tenants.t]
                    api_keys = ["{KEY}"]
                    quota = {{ starts_per_second = 100000 }}
                    [apps.remote]
                    tenant = "t"
                    scenario = "bundled:remote-control"
                    [apps.visits]
                    tenant = "t"
                    scenario = "{visits}"
                    [apps.probe]
                    tenant = "t"
                    scenario = "{probe}"
                    limits = {{ idle_timeout = 200 }}
                    [sip]
                    listen = "{sip}"
                    rtp_ports = [{rtp}, {rtp_high}]
                    routes = [{{ number = "^[a-z]+$", app = "probe" }}]
                    "#,
                    lb = lb.url,
                    cache = dir.path().join("cache").display(),
                    visits = guest_path("visit-counter").display(),
                    probe = guest_path("sip-probe").display(),
                    rtp_high = rtp + 999,
                ),
            )
            .unwrap();
            nodes.push(spawn_node(&id, &config, http, sip));
        }
        let ids: Vec<&str> = nodes.iter().map(|node| node.id.as_str()).collect();
        lb.until_rotation(&ids, &[]).await;
        let sip = Kamailio::start(&nodes.iter().map(|node| node.sip).collect::<Vec<_>>()).await;
        sip.until_nodes(&nodes.iter().map(|node| node.sip).collect::<Vec<_>>(), &[])
            .await;
        Cluster {
            nodes,
            lb,
            sip,
            _dir: dir,
        }
    }

    pub fn node(&self, id: &str) -> &Node {
        self.nodes.iter().find(|node| node.id == id).unwrap()
    }
}

/// Starts a node and waits until it serves.
fn spawn_node(id: &str, config: &Path, http: SocketAddr, sip: SocketAddr) -> Node {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sessionbox"))
        .args(["serve", "--config"])
        .arg(config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(
        first.starts_with("sessionbox listening on "),
        "node {id}: {first:?}"
    );
    Node {
        id: id.to_owned(),
        child,
        url: format!("http://{http}"),
        sip,
    }
}
