//! Past one node, measured through the path users take: real
//! `sessionbox serve` nodes (release builds), PostgreSQL and HAProxy, all
//! on loopback and all sharing this machine's two cores.
//!
//!   env -u RUST_BACKTRACE cargo bench --bench cluster            # the README's figures
//!   env -u RUST_BACKTRACE cargo bench --bench cluster -- --smoke # a short run, no claims
//!
//! - History writes: sessions started and finished (10 log lines each)
//!   through the history, PostgreSQL beside SQLite, sides taking turns;
//!   sessions written per second, medians of the rounds.
//! - W1 through the API on 1, 2 and 3 nodes: 16 clients each start a
//!   session through HAProxy (Started, 31 bytes of custom data) and end it
//!   on its access URL (`POST /stop`: Terminating, Terminated); sessions
//!   per second, and each node's CPU per session (from /proc). On two
//!   cores this is each node's cost, not a scaling curve: the nodes, the
//!   load balancer, the database and the clients share them.
//! - Forwarding: one access request at a time to a session's own node, and
//!   to another node that forwards it, taking turns; median latencies.
//! - A lost node: a node with a live session is killed (SIGKILL); the time
//!   until a survivor has marked the session interrupted, against the
//!   bound (the lease, plus a survivor's renewal: a third of it).

#[allow(dead_code, unused_imports)]
#[path = "../../../tests/all/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sessionbox::server::history::{History, NewSession};
use sessionbox::server::postgres::Postgres;
use support::history::{new_session, record};
use support::nodes::{Cluster, KEY};

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async {
        history_writes(smoke).await;
        w1_through_the_api(smoke).await;
        forwarding(smoke).await;
        a_lost_node(smoke).await;
    });
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

async fn history_writes(smoke: bool) {
    let (rounds, sessions) = if smoke { (1, 50) } else { (5, 5_000) };
    let mut sqlite = Vec::new();
    let mut postgres = Vec::new();
    for _ in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        let (history, _) =
            History::sqlite(&dir.path().join("history.db"), 30, Arc::default()).unwrap();
        sqlite.push(write_sessions(&history, sessions).await);
        history.close();

        let url = support::postgres::database();
        let shared = Arc::new(Postgres::connect(&url).await.unwrap());
        let (history, _) = History::postgres(shared, "n1", 30, Arc::default())
            .await
            .unwrap();
        postgres.push(write_sessions(&history, sessions).await);
        history.close();
    }
    let (sqlite, postgres) = (median(sqlite), median(postgres));
    println!("\nhistory writes, sessions/s (each started, then finished with 10 log lines)");
    println!("  SQLite      {sqlite:>10.0}");
    println!(
        "  PostgreSQL  {postgres:>10.0}   {:.2}× SQLite",
        postgres / sqlite
    );
}

/// Starts `count` sessions (each start awaited, as the server does, 64 at
/// once), then finishes them all; sessions per second until every record
/// is committed.
async fn write_sessions(history: &History, count: usize) -> f64 {
    let began = Instant::now();
    let sessions: Vec<NewSession> = (0..count)
        .map(|n| new_session(&format!("{n:032x}"), "n1", "a", SystemTime::now()))
        .collect();
    for chunk in sessions.chunks(64) {
        let commits: Vec<_> = chunk
            .iter()
            .map(|session| history.started(session.clone()))
            .collect();
        for commit in commits {
            commit.await.unwrap().unwrap();
        }
    }
    for session in sessions {
        let record = record(&session.id, &LOG);
        history.finished(session, record, Box::new(|| {}));
    }
    history.flush();
    count as f64 / began.elapsed().as_secs_f64()
}

/// Starts a session of the remote app at `url` (a node, or the load
/// balancer); the API's answer.
async fn start(client: &reqwest::Client, url: &str, body: &'static str) -> serde_json::Value {
    client
        .post(format!("{url}/v1/apps/remote/sessions"))
        .bearer_auth(KEY)
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A finished session's log, as the history writes it.
const LOG: [&str; 10] = ["a line of the session's log"; 10];

/// CPU time (user and system) of a process so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

async fn w1_through_the_api(smoke: bool) {
    let (clients, run) = if smoke {
        (4, Duration::from_millis(500))
    } else {
        (16, Duration::from_secs(10))
    };
    println!("\nW1 through the API (HAProxy in front), {clients} clients for {run:?}");
    println!("  nodes  sessions/s  node CPU per session (each node)");
    for count in 1..=3 {
        let cluster = Cluster::start(count, 10_000).await;
        let before: Vec<Duration> = cluster
            .nodes
            .iter()
            .map(|n| cpu_time(n.child.id()))
            .collect();
        let lb = cluster.lb.url.clone();
        let began = Instant::now();
        let loops: Vec<_> = (0..clients)
            .map(|_| {
                let lb = lb.clone();
                tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    let mut done = 0u64;
                    while began.elapsed() < run {
                        lifecycle(&client, &lb).await;
                        done += 1;
                    }
                    done
                })
            })
            .collect();
        let mut sessions = 0;
        for each in loops {
            sessions += each.await.unwrap();
        }
        let elapsed = began.elapsed().as_secs_f64();
        let per_node: Vec<String> = cluster
            .nodes
            .iter()
            .zip(&before)
            .map(|(node, before)| {
                let used = cpu_time(node.child.id()) - *before;
                // Each node's share: the sessions it ran, from its metrics
                // would be exact; HAProxy spreads them evenly.
                let share = sessions as f64 / count as f64;
                format!("{} {:.0} µs", node.id, used.as_secs_f64() * 1e6 / share)
            })
            .collect();
        println!(
            "  {count}      {:>10.0}  {}",
            sessions as f64 / elapsed,
            per_node.join(", ")
        );
    }
}

/// One W1 session through the API: start it, end it on its access URL.
async fn lifecycle(client: &reqwest::Client, lb: &str) {
    let started = start(
        client,
        lb,
        r#"{"custom_data":"thirty-one bytes of custom data"}"#,
    )
    .await;
    let access = started["access_url"]
        .as_str()
        .unwrap_or_else(|| panic!("{started}"));
    let stopped = client.post(format!("{access}/stop")).send().await.unwrap();
    assert!(stopped.status().is_success(), "{}", stopped.status());
}

async fn forwarding(smoke: bool) {
    let (rounds, requests) = if smoke { (1, 20) } else { (5, 2_000) };
    let cluster = Cluster::start(2, 10_000).await;
    let client = reqwest::Client::new();
    let started = start(&client, &cluster.nodes[0].url, "").await;
    let token = started["access_url"]
        .as_str()
        .unwrap()
        .rsplit("/s/")
        .next()
        .unwrap()
        .to_owned();
    let mut direct = Vec::new();
    let mut forwarded = Vec::new();
    for _ in 0..rounds {
        for (node, latencies) in [(0, &mut direct), (1, &mut forwarded)] {
            let url = format!("{}/s/{token}/status", cluster.nodes[node].url);
            let mut round = Vec::new();
            for _ in 0..requests {
                let sent = Instant::now();
                let answer = client.get(&url).send().await.unwrap();
                assert!(answer.status().is_success());
                answer.bytes().await.unwrap();
                round.push(sent.elapsed().as_secs_f64() * 1e6);
            }
            latencies.push(median(round));
        }
    }
    let (direct, forwarded) = (median(direct), median(forwarded));
    println!("\nan access request, one at a time: median latency");
    println!("  to the session's node   {direct:>7.0} µs");
    println!(
        "  forwarded by another    {forwarded:>7.0} µs   (+{:.0} µs)",
        forwarded - direct
    );
}

async fn a_lost_node(smoke: bool) {
    let (rounds, lease_ms) = if smoke { (1, 1_500) } else { (3, 3_000) };
    let mut noticed = Vec::new();
    for _ in 0..rounds {
        let mut cluster = Cluster::start(2, lease_ms).await;
        let client = reqwest::Client::new();
        let started = start(&client, &cluster.nodes[1].url, "").await;
        let id = started["session_id"].as_str().unwrap().to_owned();
        let mut lost = cluster.nodes.pop().unwrap();
        lost.child.kill().unwrap();
        let killed = Instant::now();
        lost.child.wait().unwrap();
        let survivor = &cluster.nodes[0].url;
        loop {
            let session: serde_json::Value = client
                .get(format!("{survivor}/v1/sessions/{id}"))
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if session["state"] == "interrupted" {
                break;
            }
            assert!(killed.elapsed() < Duration::from_secs(60), "{session}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        noticed.push(killed.elapsed().as_secs_f64() * 1e3);
    }
    let bound = lease_ms as f64 * 4.0 / 3.0;
    println!("\na node killed (lease {lease_ms} ms): its sessions marked interrupted after");
    println!(
        "  median {:.0} ms (rounds: {:?} ms), bound {bound:.0} ms",
        median(noticed.clone()),
        noticed.iter().map(|ms| ms.round()).collect::<Vec<_>>()
    );
}
