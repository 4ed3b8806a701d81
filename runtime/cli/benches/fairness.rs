//! Fairness through the server: a healthy session's request latency and
//! throughput over loopback HTTP (one client, requests back to back), alone
//! and beside another tenant's sessions whose handlers spin until the
//! compute limit ends them, each re-triggered as soon as it is cut off: one
//! and two such sessions per core.
//!
//!   env -u RUST_BACKTRACE cargo bench --bench fairness            # 3 rounds of 5 s per setting
//!   env -u RUST_BACKTRACE cargo bench --bench fairness -- --smoke # a short run, no claims
//!
//! `SESSIONBOX_BIN` runs another build of `sessionbox` instead of this one's
//! (to measure a change against what came before it).
//!
//! The settings take turns round by round (this VM's speed drifts over
//! seconds); each figure is its setting's median round. `csv,` lines are
//! for scripts/bench.sh.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The WAT helper of the integration tests, reused here.
#[path = "../../../tests/all/support/wat.rs"]
mod wat;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

const ROUNDS: usize = 3;

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let (rounds, phase) = if smoke {
        (1, Duration::from_millis(500))
    } else {
        (ROUNDS, Duration::from_secs(5))
    };
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let server = Server::start();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async {
        let client = reqwest::Client::new();
        let healthy = server.start_session(&client, "echo").await;
        let settings = [0, cores, 2 * cores];
        let mut results: Vec<Vec<Phase>> = vec![Vec::new(); settings.len()];
        for _ in 0..rounds {
            for (i, &attackers) in settings.iter().enumerate() {
                results[i].push(run_phase(&server, &healthy, attackers, phase).await);
            }
        }
        println!(
            "{:<40} {:>9} {:>9} {:>9} {:>10} {:>9}",
            "healthy requests through the server", "req/s", "p50 µs", "p99 µs", "max µs", "spun out"
        );
        let alone = median(&results[0]);
        for (i, &attackers) in settings.iter().enumerate() {
            let label = match attackers {
                0 => "alone".to_owned(),
                n => format!("beside {n} spinning ({} per core)", n / cores),
            };
            let m = median(&results[i]);
            println!(
                "{label:<40} {:>9.0} {:>9.0} {:>9.0} {:>10.0} {:>9}",
                m.rate, m.p50, m.p99, m.max, m.spun_out
            );
            println!(
                "csv,{attackers},{:.0},{:.0},{:.0},{:.0},{:.3},{:.3}",
                m.rate,
                m.p50,
                m.p99,
                m.max,
                m.p99 / alone.p99,
                m.rate / alone.rate
            );
        }
        for (i, &attackers) in settings.iter().enumerate().skip(1) {
            let m = median(&results[i]);
            println!(
                "{attackers} spinning: p99 {:.2}x alone (target <= 2x), throughput {:.2}x alone (target >= 0.5x)",
                m.p99 / alone.p99,
                m.rate / alone.rate
            );
        }
        if smoke {
            println!("(smoke run: the figures are not measurements)");
        }
    });
}

/// One setting's run: the healthy client's figures.
#[derive(Clone, Copy, Default)]
struct Phase {
    rate: f64,
    p50: f64,
    p99: f64,
    max: f64,
    /// Spinning sessions the compute limit ended during the phase.
    spun_out: u64,
}

/// The round with the median p99.
fn median(rounds: &[Phase]) -> Phase {
    let mut sorted = rounds.to_vec();
    sorted.sort_by(|a, b| a.p99.total_cmp(&b.p99));
    sorted[sorted.len() / 2]
}

async fn run_phase(server: &Server, healthy: &str, attackers: usize, phase: Duration) -> Phase {
    let stop = Arc::new(AtomicBool::new(false));
    let spun_out = Arc::new(AtomicU64::new(0));
    let mut attacks = Vec::new();
    for _ in 0..attackers {
        let (url, stop, spun_out) = (server.url.clone(), Arc::clone(&stop), Arc::clone(&spun_out));
        attacks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                let access = start_session(&client, &url, "spin").await;
                // Spins until the compute limit ends its session: 502.
                let answer = client.get(format!("{access}/spin")).send().await.unwrap();
                assert_eq!(answer.status(), 502, "a spinning session is cut off");
                spun_out.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    if attackers > 0 {
        // Let the attack reach its steady state before measuring.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let client = reqwest::Client::new();
    let url = format!("{healthy}/api/v1/echo");
    let mut latencies = Vec::new();
    let began = Instant::now();
    while began.elapsed() < phase {
        let sent = Instant::now();
        let answer = client.get(&url).body(vec![b'x'; 64]).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        answer.bytes().await.unwrap();
        latencies.push(sent.elapsed().as_secs_f64() * 1e6);
    }
    let elapsed = began.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for attack in attacks {
        attack.await.unwrap();
    }
    latencies.sort_by(f64::total_cmp);
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    Phase {
        rate: latencies.len() as f64 / elapsed,
        p50: at(0.50),
        p99: at(0.99),
        max: at(1.0),
        spun_out: spun_out.load(Ordering::Relaxed),
    }
}

async fn start_session(client: &reqwest::Client, url: &str, app: &str) -> String {
    let key = if app == "spin" { HOSTILE_KEY } else { KEY };
    let answer = client
        .post(format!("{url}/v1/apps/{app}/sessions"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201, "starting a session of {app}");
    let body: serde_json::Value = answer.json().await.unwrap();
    body["access_url"].as_str().unwrap().to_owned()
}

const KEY: &str = "fairness-bench-key";
const HOSTILE_KEY: &str = "hostile-bench-key";

/// `sessionbox serve` with two tenants: `healthy` (app `echo`, the W2
/// guest) and `hostile` (app `spin`, whose http-request loops).
struct Server {
    process: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let spin = wat::scenario(&[("http-request", "(loop (br 0)) unreachable")], "", "");
        std::fs::write(dir.path().join("spin.wasm"), spin).unwrap();
        let echo = repo_root().join("target/guests/bench-echo.wasm");
        assert!(
            echo.exists(),
            "build the guests first: guest-examples/rust/build.sh"
        );
        let config = format!(
            r#"
[server]
listen = "127.0.0.1:0"
database = "{db}"
[tenants.healthy]
api_keys = ["{KEY}"]
[tenants.hostile]
api_keys = ["{HOSTILE_KEY}"]
[apps.echo]
tenant = "healthy"
scenario = "{echo}"
limits = {{ idle_timeout = 600000 }}
[apps.spin]
tenant = "hostile"
scenario = "{spin}"
"#,
            db = dir.path().join("history.db").display(),
            echo = echo.display(),
            spin = dir.path().join("spin.wasm").display(),
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let binary = std::env::var_os("SESSIONBOX_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_sessionbox").into());
        let mut process = Command::new(binary)
            .args(["serve", "--config"])
            .arg(dir.path().join("config.toml"))
            .env_remove("RUST_BACKTRACE")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(process.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        let url = first
            .split_whitespace()
            .find(|word| word.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {first:?}"))
            .to_owned();
        // Keep reading, so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Server {
            process,
            url,
            _dir: dir,
        }
    }

    async fn start_session(&self, client: &reqwest::Client, app: &str) -> String {
        start_session(client, &self.url, app).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
