//! Session lifecycle (W1) and HttpRequest dispatch (W2) throughput, through
//! Sessionbox's real paths, beside a bare wasmtime embedding of the same
//! guest on the same tuned engine: the ratio is what Sessionbox's machinery
//! (queues, phases, metering, records) costs.
//!
//!   cargo bench --bench sessions            # full: median of 5 runs of >= 1 s
//!   cargo bench --bench sessions -- --smoke # one short run each, no claims
//!   cargo bench --bench sessions -- --sweep # also the scaling curves, as
//!                                           # `csv,...` lines (docs/perf)
//!   cargo bench --bench sessions -- w2      # only W2 (or w1), e.g. to profile
//!
//! Unset RUST_BACKTRACE when measuring (`env -u RUST_BACKTRACE cargo bench
//! ...`): wasmtime captures a backtrace for every error it builds.
//! The guest is tests/guests/bench-echo (built by guest-examples/rust/build.sh).

#[path = "bare/mod.rs"]
mod bare;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bare::{Bare, CUSTOM_DATA, DEADLINE_TICKS};
use sessionbox::bindings::{Header, HttpRequestEvent};
use sessionbox::engine::EngineConfig;
use sessionbox::{Limits, Runtime, Scenario, StartOptions};
use tokio::task::JoinSet;

const IN_FLIGHT: usize = 64;
const MANY_SESSIONS: usize = 64;
/// The scaling curves' x values: sessions in flight (W1), live (W2).
const SWEEP: [usize; 5] = [1, 4, 16, 64, 256];
const POOL: u32 = 1_024;

struct Settings {
    runs: usize,
    min_run: Duration,
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let sweep = std::env::args().any(|a| a == "--sweep");
    let only = std::env::args().find(|a| a == "w1" || a == "w2");
    let settings = if smoke {
        Settings {
            runs: 1,
            min_run: Duration::from_millis(50),
        }
    } else {
        Settings {
            runs: 5,
            min_run: Duration::from_secs(1),
        }
    };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(bench(settings, smoke, sweep, only.as_deref()));
}

async fn bench(settings: Settings, smoke: bool, sweep: bool, only: Option<&str>) {
    let guest = bare::bench_echo();
    let sessionbox = Arc::new(Sessionbox::new(&guest));
    let bare = Arc::new(Bare::new(&guest, POOL));

    println!(
        "{:<34} {:>14} {:>14} {:>8}",
        "workload (median)", "sessionbox", "bare wasmtime", "ratio"
    );
    let w1 = |in_flight: usize| {
        let (sessionbox, bare, settings) = (&sessionbox, &bare, &settings);
        medians(settings, move |side, n| {
            let (s, b) = (Arc::clone(sessionbox), Arc::clone(bare));
            per_second(n, async move {
                match side {
                    Side::Sessionbox => s.lifecycles(n, in_flight).await,
                    Side::Bare => b.lifecycles(n, in_flight).await,
                }
            })
        })
    };
    let w2 = |sessions: usize| {
        let (sessionbox, bare, settings) = (&sessionbox, &bare, &settings);
        medians(settings, move |side, n| {
            let (s, b) = (Arc::clone(sessionbox), Arc::clone(bare));
            async move {
                let elapsed = match side {
                    Side::Sessionbox => s.dispatch(sessions, n).await,
                    Side::Bare => b.dispatch(sessions, n).await,
                };
                (n, elapsed)
            }
        })
    };
    if only.is_none_or(|w| w == "w1") {
        let [(s, s_latency), (b, b_latency)] = w1(IN_FLIGHT).await;
        report("W1 lifecycle, sessions/s", (s, b));
        for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
            let (s, b) = (percentile_us(&s_latency, p), percentile_us(&b_latency, p));
            report(&format!("W1 latency {label}, µs"), (s, b));
        }
    }
    if only.is_none_or(|w| w == "w2") {
        for sessions in [1, MANY_SESSIONS] {
            let label = format!("W2 dispatch, {sessions} session(s), events/s");
            let [(s, _), (b, _)] = w2(sessions).await;
            report(&label, (s, b));
        }
    }
    if sweep {
        for x in SWEEP {
            let [(s, _), (b, _)] = w1(x).await;
            println!("csv,w1,{x},{s:.0},{b:.0}");
        }
        for x in SWEEP {
            let [(s, _), (b, _)] = w2(x).await;
            println!("csv,w2,{x},{s:.0},{b:.0}");
        }
    }
    if smoke {
        println!("(smoke run: one short run each; the figures are not measurements)");
    }
}

/// A row of the table, and the same as a `csv,table,...` line for
/// scripts/bench.sh's summary.
fn report(label: &str, (sessionbox, bare): (f64, f64)) {
    println!(
        "{label:<34} {sessionbox:>14.0} {bare:>14.0} {:>7.2}x",
        sessionbox / bare
    );
    println!("csv,table,{sessionbox:.0},{bare:.0},{label}");
}

async fn per_second(n: usize, work: impl Future<Output = ()>) -> (usize, Duration) {
    let start = Instant::now();
    work.await;
    (n, start.elapsed())
}

#[derive(Clone, Copy)]
enum Side {
    Sessionbox,
    Bare,
}

/// Each side's median rate over `settings.runs` runs of `batch`, and the
/// per-task latencies of its last run. The two sides take turns, run by
/// run: this kind of VM speeds up and slows down over seconds, and a side
/// measured all at once would catch a slow spell alone. A run lasts at
/// least `min_run`; each side's batch grows until it does (shorter runs are
/// warm-up).
async fn medians<F, Fut>(settings: &Settings, mut batch: F) -> [(f64, Vec<Duration>); 2]
where
    F: FnMut(Side, usize) -> Fut,
    Fut: Future<Output = (usize, Duration)>,
{
    let sides = [Side::Sessionbox, Side::Bare];
    let mut n = [64; 2];
    let mut rates = [Vec::new(), Vec::new()];
    let mut latencies = [Vec::new(), Vec::new()];
    while rates.iter().any(|done| done.len() < settings.runs) {
        for (i, side) in sides.into_iter().enumerate() {
            if rates[i].len() == settings.runs {
                continue;
            }
            let (done, elapsed) = batch(side, n[i]).await;
            if elapsed < settings.min_run {
                let scale = settings.min_run.as_secs_f64() / elapsed.as_secs_f64().max(1e-6);
                n[i] = ((n[i] as f64) * scale.clamp(1.5, 100.0)) as usize;
                continue;
            }
            rates[i].push(done as f64 / elapsed.as_secs_f64());
            latencies[i] = last_latencies();
        }
    }
    let median = |mut rates: Vec<f64>| {
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let [s, b] = rates;
    let [s_latency, b_latency] = latencies;
    [(median(s), s_latency), (median(b), b_latency)]
}

fn echo_request() -> HttpRequestEvent {
    let header = |name: &str, value: &str| Header {
        name: name.into(),
        value: value.into(),
    };
    HttpRequestEvent {
        method: "GET".into(),
        path: "/api/v1/echo".into(),
        headers: vec![header("X-Tenant", "t1"), header("X-Trace", "abc")],
        body: (0..64u8).collect(),
    }
}

/// The latency of each task of the last `in_flight` batch, measured inside
/// the task from its first poll to its end: service time, not queueing.
static LATENCIES: Mutex<Vec<Duration>> = Mutex::new(Vec::new());

fn last_latencies() -> Vec<Duration> {
    let mut latencies = std::mem::take(&mut *LATENCIES.lock().unwrap());
    latencies.sort();
    latencies
}

fn percentile_us(sorted: &[Duration], p: f64) -> f64 {
    let at = ((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(at).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

/// Runs `n` tasks made by `task`, at most `limit` spawned and unfinished at
/// once, and waits for all of them.
async fn in_flight<F, Fut>(n: usize, limit: usize, mut task: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    let mut latencies = Vec::with_capacity(n);
    let timed = |work: Fut| async move {
        let start = Instant::now();
        work.await;
        start.elapsed()
    };
    for _ in 0..n {
        if tasks.len() >= limit {
            latencies.push(tasks.join_next().await.unwrap().unwrap());
        }
        tasks.spawn(timed(task()));
    }
    while let Some(done) = tasks.join_next().await {
        latencies.push(done.unwrap());
    }
    *LATENCIES.lock().unwrap() = latencies;
}

/// Sessionbox, through `Runtime::start` and `SessionHandle`.
struct Sessionbox {
    runtime: Runtime,
    scenario: Arc<Scenario>,
}

impl Sessionbox {
    fn new(guest: &[u8]) -> Self {
        let config = EngineConfig {
            max_sessions: POOL,
            ..EngineConfig::default()
        };
        let runtime = Runtime::new(config).unwrap();
        let scenario = runtime
            .load("bench-echo", guest, Limits::default())
            .unwrap();
        Sessionbox { runtime, scenario }
    }

    async fn lifecycles(self: Arc<Self>, n: usize, limit: usize) {
        in_flight(n, limit, || {
            let this = Arc::clone(&self);
            async move {
                let options = StartOptions {
                    custom_data: CUSTOM_DATA.into(),
                    ..StartOptions::default()
                };
                let session = this.runtime.start(&this.scenario, options).await.unwrap();
                session.terminate().unwrap();
                let record = session.finished().await.unwrap();
                assert!(record.finish_reason.is_normal());
                assert_eq!(record.capabilities.uses["logger"], 3);
            }
        })
        .await;
    }

    /// Delivers `events` to `sessions` live sessions; returns how long the
    /// events took (the sessions' start and end are not timed).
    async fn dispatch(self: Arc<Self>, sessions: usize, events: usize) -> Duration {
        let mut handles = Vec::new();
        for _ in 0..sessions {
            let options = StartOptions::default();
            handles.push(self.runtime.start(&self.scenario, options).await.unwrap());
        }
        let request = echo_request();
        let start = Instant::now();
        let mut tasks = JoinSet::new();
        for (i, session) in handles.iter().cloned().enumerate() {
            let share = events / sessions + usize::from(i < events % sessions);
            // A request of its own per task, as the bare tasks have: one
            // shared by all would bounce its count between the cores.
            let request = Arc::new(request.clone());
            tasks.spawn(async move {
                for _ in 0..share {
                    let response = session.http_request(Arc::clone(&request)).await.unwrap();
                    assert!(response.status == 200 && response.body == request.body);
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        let elapsed = start.elapsed();
        for session in handles {
            session.terminate().unwrap();
            session.finished().await.unwrap();
        }
        elapsed
    }
}

/// The workloads on the bare embedding.
impl Bare {
    async fn lifecycles(self: Arc<Self>, n: usize, limit: usize) {
        in_flight(n, limit, || {
            let this = Arc::clone(&self);
            async move {
                let (mut store, instance, log_lines) = this.open().await;
                Bare::started(&mut store, &instance).await;
                let events = instance.sessionbox_scenario0_2_0_app_events();
                store.set_epoch_deadline(DEADLINE_TICKS);
                events.call_terminating(&mut store).await.unwrap();
                store.set_epoch_deadline(DEADLINE_TICKS);
                events.call_terminated(&mut store).await.unwrap();
                assert_eq!(log_lines.load(Ordering::Relaxed), 3);
            }
        })
        .await;
    }

    /// As `Sessionbox::dispatch`: only the events are timed.
    async fn dispatch(self: Arc<Self>, sessions: usize, events: usize) -> Duration {
        let request = echo_request();
        let mut tasks = JoinSet::new();
        let opened = Arc::new(tokio::sync::Barrier::new(sessions + 1));
        for i in 0..sessions {
            let share = events / sessions + usize::from(i < events % sessions);
            let this = Arc::clone(&self);
            let request = request.clone();
            let opened = Arc::clone(&opened);
            tasks.spawn(async move {
                let (mut store, instance, _) = this.open().await;
                opened.wait().await;
                let app = instance.sessionbox_scenario0_2_0_app_events();
                for _ in 0..share {
                    store.set_epoch_deadline(DEADLINE_TICKS);
                    let response = app.call_http_request(&mut store, &request).await.unwrap();
                    assert!(response.status == 200 && response.body == request.body);
                }
            });
        }
        opened.wait().await;
        let start = Instant::now();
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        start.elapsed()
    }
}
