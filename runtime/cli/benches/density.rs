//! W3 density: idle live sessions, and what each one costs the process.
//!
//!   cargo bench --bench density -- 1000 10000 100000   # the README's figures
//!   cargo bench --bench density -- --bare 10000        # the bare embedding
//!   cargo bench --bench density -- --smoke             # 200 sessions, no claims
//!
//! `--bare` measures the same on the bare embedding (`bare/mod.rs`): stores
//! held in a vector, no task or queue per session. scripts/bench.sh runs each
//! count of each in a process of its own, so that memory one count freed
//! does not hide what the next one takes.
//!
//! For each count, in a fresh runtime whose pool holds exactly that many
//! sessions: one warm-up session, then the sessions are opened (64 starts in
//! flight), each gets Started (custom data of 31 bytes, one log line) and
//! one echoed HttpRequest (which proves it alive and past Started), and
//! then they sit idle. Reported: process RSS and page tables (VmPTE) per
//! session, memory mappings, the rate sessions were opened at, and that one
//! session more is refused cleanly (the pool is full). A line per count
//! also goes to stdout as CSV (`csv,...`) for the plots in docs/.
//!
//! Each live session holds memory mappings, and Linux caps a process's at
//! vm.max_map_count (65,530 by default): 100,000 sessions need about 10^6
//! (`sysctl -w vm.max_map_count=1048576`, which scripts/bench.sh does).
//!
//! The guest is tests/guests/bench-echo (built by guest-examples/rust/build.sh),
//! the baselines' guest shape. Unset RUST_BACKTRACE when measuring.

#[path = "bare/mod.rs"]
mod bare;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bare::{Bare, CUSTOM_DATA, DEADLINE_TICKS};

use sessionbox::bindings::{Header, HttpRequestEvent};
use sessionbox::{EngineConfig, Limits, Runtime, Scenario, StartError, StartOptions};
use tokio::task::JoinSet;

const IN_FLIGHT: usize = 64;

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let bare = std::env::args().any(|a| a == "--bare");
    let counts: Vec<usize> = if smoke {
        vec![200]
    } else {
        let given: Vec<usize> = std::env::args()
            .skip(1)
            .filter_map(|a| a.replace('_', "").parse().ok())
            .collect();
        if given.is_empty() {
            vec![1_000, 10_000]
        } else {
            given
        }
    };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let guest = bare::bench_echo();
    println!(
        "vm.max_map_count = {}",
        std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "{:>9} {:>12} {:>12} {:>12} {:>10} {:>12}  refused at +1",
        "sessions", "RSS KiB/s.", "PTE KiB/s.", "RSS MiB", "maps", "opened/s"
    );
    for n in counts {
        let row = if bare {
            tokio.block_on(bare_density(&guest, n))
        } else {
            tokio.block_on(density(&guest, n))
        };
        println!(
            "{:>9} {:>12.1} {:>12.1} {:>12.0} {:>10} {:>12.0}  {}",
            n,
            row.rss_kib_per_session,
            row.pte_kib_per_session,
            row.rss_after_kib / 1024.0,
            row.maps,
            row.opened_per_s,
            row.refusal
        );
        println!(
            "csv,{},{n},{:.2},{:.2},{:.0},{}",
            if bare { "bare" } else { "sessionbox" },
            row.rss_kib_per_session,
            row.pte_kib_per_session,
            row.opened_per_s,
            row.maps
        );
    }
    if smoke {
        println!("(smoke run: the figures are not measurements)");
    }
}

struct Row {
    rss_kib_per_session: f64,
    pte_kib_per_session: f64,
    rss_after_kib: f64,
    maps: usize,
    opened_per_s: f64,
    /// Whether one session more was refused, and how.
    refusal: String,
}

impl Row {
    /// What `n` sessions opened since `opening` cost, from `before`.
    fn since(n: usize, before: &Footprint, opening: Instant) -> Row {
        let opened_per_s = n as f64 / opening.elapsed().as_secs_f64();
        let after = Footprint::now();
        Row {
            rss_kib_per_session: (after.rss_kib - before.rss_kib) / n as f64,
            pte_kib_per_session: (after.pte_kib - before.pte_kib) / n as f64,
            rss_after_kib: after.rss_kib,
            maps: std::fs::read_to_string("/proc/self/maps")
                .map(|m| m.lines().count())
                .unwrap_or(0),
            opened_per_s,
            refusal: String::new(),
        }
    }
}

/// The process's resident memory and page tables at one moment.
struct Footprint {
    rss_kib: f64,
    pte_kib: f64,
}

impl Footprint {
    fn now() -> Self {
        Footprint {
            rss_kib: status_kib("VmRSS"),
            pte_kib: status_kib("VmPTE"),
        }
    }
}

async fn density(guest: &[u8], n: usize) -> Row {
    let runtime = Arc::new(
        Runtime::new(EngineConfig {
            max_sessions: n as u32,
            ..EngineConfig::default()
        })
        .unwrap(),
    );
    let limits = Limits {
        // Idle is the point: nothing ends them but the benchmark.
        idle_timeout: Duration::from_secs(3_600),
        ..Limits::default()
    };
    let scenario = runtime.load("bench-echo", guest, limits).unwrap();
    let warm_up = runtime
        .start(&scenario, StartOptions::default())
        .await
        .unwrap();
    echo(&warm_up).await;
    warm_up.terminate().unwrap();
    warm_up.finished().await.unwrap();

    let before = Footprint::now();
    let opening = Instant::now();
    let sessions = open(&runtime, &scenario, n).await;
    let mut row = Row::since(n, &before, opening);
    row.refusal = match runtime.start(&scenario, StartOptions::default()).await {
        Err(e @ StartError::AtCapacity { .. }) => format!("yes: {e}"),
        Err(e) => format!("NOT CLEANLY: {e}"),
        Ok(_) => "no: the pool is larger than asked".to_owned(),
    };
    // Every session is still alive and answers.
    let mut closing = JoinSet::new();
    for session in sessions {
        closing.spawn(async move {
            echo(&session).await;
            session.terminate().unwrap();
            assert!(session.finished().await.unwrap().finish_reason.is_normal());
        });
    }
    while let Some(done) = closing.join_next().await {
        done.unwrap();
    }
    row
}

/// The same on the bare embedding: `n` instances, each past Started and one
/// echo, held as stores in a vector.
async fn bare_density(guest: &[u8], n: usize) -> Row {
    let bare = Arc::new(Bare::new(guest, n as u32));
    let before = Footprint::now();
    let opening = Instant::now();
    let mut held = Vec::with_capacity(n);
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        if tasks.len() >= IN_FLIGHT
            && let Some(done) = tasks.join_next().await
        {
            held.push(done.unwrap());
        }
        let bare = Arc::clone(&bare);
        tasks.spawn(async move {
            let (mut store, instance, _) = bare.open().await;
            Bare::started(&mut store, &instance).await;
            store.set_epoch_deadline(DEADLINE_TICKS);
            let response = instance
                .sessionbox_scenario0_2_0_app_events()
                .call_http_request(&mut store, &echo_request())
                .await
                .unwrap();
            assert!(response.status == 200 && response.body == [7; 64]);
            (store, instance)
        });
    }
    while let Some(done) = tasks.join_next().await {
        held.push(done.unwrap());
    }
    let mut row = Row::since(n, &before, opening);
    row.refusal = match bare.try_open().await {
        Err(e) => format!("yes: {e}"),
        Ok(_) => "no: the pool is larger than asked".to_owned(),
    };
    drop(held);
    row
}

/// Opens `n` sessions, `IN_FLIGHT` at a time, each past Started and one
/// echo.
async fn open(
    runtime: &Arc<Runtime>,
    scenario: &Arc<Scenario>,
    n: usize,
) -> Vec<sessionbox::SessionHandle> {
    let mut sessions = Vec::with_capacity(n);
    let mut opening = JoinSet::new();
    for _ in 0..n {
        if opening.len() >= IN_FLIGHT
            && let Some(done) = opening.join_next().await
        {
            sessions.push(done.unwrap());
        }
        let (runtime, scenario) = (Arc::clone(runtime), Arc::clone(scenario));
        opening.spawn(async move {
            let options = StartOptions {
                custom_data: CUSTOM_DATA.into(),
                ..StartOptions::default()
            };
            let session = runtime.start(&scenario, options).await.unwrap();
            echo(&session).await;
            session
        });
    }
    while let Some(done) = opening.join_next().await {
        sessions.push(done.unwrap());
    }
    sessions
}

/// The baselines' request, echoed.
async fn echo(session: &sessionbox::SessionHandle) {
    let response = session.http_request(echo_request()).await.unwrap();
    assert!(response.status == 200 && response.body == [7; 64]);
}

fn echo_request() -> HttpRequestEvent {
    HttpRequestEvent {
        method: "GET".into(),
        path: "/api/v1/echo".into(),
        headers: vec![
            Header {
                name: "X-Tenant".into(),
                value: "t1".into(),
            },
            Header {
                name: "X-Trace".into(),
                value: "abc".into(),
            },
        ],
        body: vec![7; 64],
    }
}

/// A `/proc/self/status` field, in KiB.
fn status_kib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0)
}
