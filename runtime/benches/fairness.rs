//! Fairness: the event latency of healthy sessions, alone and beside
//! sessions whose handlers spin until the compute limit stops them (two
//! attackers per core, as many as tokio has workers times two).
//!
//!   env -u RUST_BACKTRACE cargo bench --bench fairness            # 5 s per phase
//!   env -u RUST_BACKTRACE cargo bench --bench fairness -- --smoke # a short run, no claims
//!
//! A spinning guest is suspended at every epoch tick (10 ms), so a healthy
//! event waits at most for the spinners queued ahead of it on its worker.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sessionbox::bindings::{Header, HttpRequestEvent};
use sessionbox::{EngineConfig, Limits, Runtime, StartOptions};

/// The WAT helper of the integration tests, reused here.
#[path = "../../tests/support/wat.rs"]
mod wat;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

const WORKERS: usize = 2;
const HEALTHY: usize = 8;
const ATTACKERS: usize = 2 * WORKERS;

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let phase = if smoke {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(5)
    };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async {
        let runtime = Arc::new(
            Runtime::new(EngineConfig {
                max_sessions: 64,
                ..EngineConfig::default()
            })
            .unwrap(),
        );
        let alone = healthy_latencies(&runtime, phase, 0).await;
        let beside = healthy_latencies(&runtime, phase, ATTACKERS).await;
        println!(
            "{:<28} {:>9} {:>9} {:>9} {:>10}",
            "healthy HttpRequest latency", "events", "p50 µs", "p99 µs", "max µs"
        );
        report("alone", &alone);
        report(&format!("beside {ATTACKERS} spinning sessions"), &beside);
        println!(
            "p99 ratio (beside / alone): {:.2}x",
            percentile(&beside, 0.99) / percentile(&alone, 0.99)
        );
        if smoke {
            println!("(smoke run: the figures are not measurements)");
        }
    });
}

fn report(label: &str, latencies: &[f64]) {
    println!(
        "{label:<28} {:>9} {:>9.0} {:>9.0} {:>10.0}",
        latencies.len(),
        percentile(latencies, 0.50),
        percentile(latencies, 0.99),
        latencies.last().copied().unwrap_or(0.0)
    );
}

/// `latencies` sorted ascending, in µs.
fn percentile(latencies: &[f64], p: f64) -> f64 {
    latencies[((latencies.len() - 1) as f64 * p) as usize]
}

/// Runs `HEALTHY` sessions sending events back to back for `phase`, with
/// `attackers` spinning sessions running beside them; returns every
/// healthy event's round-trip latency in µs, sorted.
async fn healthy_latencies(runtime: &Arc<Runtime>, phase: Duration, attackers: usize) -> Vec<f64> {
    let guest = std::fs::read(repo_root().join("target/guests/bench-echo.wasm"))
        .expect("build the guests first: guest-examples/rust/build.sh");
    let echo = runtime
        .load("bench-echo", &guest, Limits::default())
        .unwrap();
    let spin = wat::scenario(&[("http-request", "(loop (br 0)) unreachable")], "", "");
    let spinner = runtime.load("spinner", &spin, Limits::default()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));

    let mut attacks = Vec::new();
    for _ in 0..attackers {
        let (runtime, spinner, stop) =
            (Arc::clone(runtime), Arc::clone(&spinner), Arc::clone(&stop));
        attacks.push(tokio::spawn(async move {
            // Each attack spins until the compute limit ends its session;
            // then the next one starts.
            while !stop.load(Ordering::Relaxed) {
                let session = runtime
                    .start(&spinner, StartOptions::default())
                    .await
                    .unwrap();
                let _ = session.http_request(request()).await;
            }
        }));
    }

    let mut healthy = Vec::new();
    for _ in 0..HEALTHY {
        let (runtime, echo) = (Arc::clone(runtime), Arc::clone(&echo));
        healthy.push(tokio::spawn(async move {
            let session = runtime.start(&echo, StartOptions::default()).await.unwrap();
            let until = Instant::now() + phase;
            let mut latencies = Vec::new();
            while Instant::now() < until {
                let began = Instant::now();
                let response = session.http_request(request()).await.unwrap();
                assert_eq!(response.status, 200);
                latencies.push(began.elapsed().as_secs_f64() * 1e6);
            }
            session.terminate().unwrap();
            session.finished().await.unwrap();
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in healthy {
        latencies.extend(task.await.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    for attack in attacks {
        attack.await.unwrap();
    }
    latencies.sort_by(f64::total_cmp);
    latencies
}

fn request() -> HttpRequestEvent {
    HttpRequestEvent {
        method: "GET".into(),
        path: "/api/v1/echo".into(),
        headers: vec![Header {
            name: "X-Tenant".into(),
            value: "t1".into(),
        }],
        body: (0..64u8).collect(),
    }
}
