//! What each guest language costs to load and to run a session of: the
//! `hello` example of every language whose build output is present.
//!
//!   cargo bench --bench languages            # the README's table
//!   cargo bench --bench languages -- --smoke # fewer samples, no claims
//!
//! Columns: component size; first compile (no cache); cached load (the
//! compiled form from the disk cache, as every later run and restart does);
//! instantiate (`Runtime::start`, median); guest memory per live session
//! (linear memory the instances hold, from the runtime's gauge) and process
//! RSS per live session, both over a batch of idle sessions.
//!
//! Unset RUST_BACKTRACE when measuring (`env -u RUST_BACKTRACE cargo bench
//! ...`): wasmtime captures a backtrace for every error it builds.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sessionbox::{EngineConfig, Limits, Runtime, StartOptions};

/// (language, folder below target/guests, guest memory limit in MiB)
const LANGUAGES: &[(&str, &str, usize)] = &[
    ("Rust", "", 16),
    ("C", "c", 16),
    ("JavaScript (componentize-js)", "js", 64),
    ("Python (componentize-py)", "python", 64),
];

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (instantiations, live) = if smoke { (3, 4) } else { (50, 200) };
    println!(
        "{:<30} {:>10} {:>14} {:>12} {:>14} {:>14} {:>14}",
        "language (hello)",
        "size KB",
        "1st compile ms",
        "cached ms",
        "instantiate µs",
        "guest KiB/sess",
        "RSS KiB/sess"
    );
    for &(language, dir, memory_mib) in LANGUAGES {
        let path = guests().join(dir).join("hello.wasm");
        let Ok(bytes) = std::fs::read(&path) else {
            println!("{language:<30} (not built: {})", path.display());
            continue;
        };
        let figures = tokio.block_on(measure(&bytes, memory_mib, instantiations, live, smoke));
        println!(
            "{:<30} {:>10.0} {:>14} {:>12.1} {:>14.0} {:>14.0} {:>14.0}",
            language,
            bytes.len() as f64 / 1000.0,
            figures
                .compile
                .map_or("(skipped)".to_owned(), |d| format!("{:.0}", ms(d))),
            ms(figures.cached_load),
            figures.instantiate.as_secs_f64() * 1e6,
            figures.guest_kib,
            figures.rss_kib,
        );
    }
    if smoke {
        println!("(smoke run: the figures are not measurements)");
    }
}

struct Figures {
    compile: Option<Duration>,
    cached_load: Duration,
    instantiate: Duration,
    guest_kib: f64,
    rss_kib: f64,
}

async fn measure(
    bytes: &[u8],
    memory_mib: usize,
    instantiations: usize,
    live: usize,
    smoke: bool,
) -> Figures {
    let limits = Limits {
        memory_bytes: memory_mib << 20,
        ..Limits::default()
    };
    let runtime = || {
        Runtime::new(EngineConfig {
            max_sessions: live as u32 + 8,
            max_memory_bytes: memory_mib << 20,
            ..EngineConfig::default()
        })
        .unwrap()
    };
    // A first compile takes seconds for the large guests: the smoke run
    // skips it (the cache below still compiles once when it is cold).
    let compile = (!smoke).then(|| {
        let start = Instant::now();
        runtime().load("hello", bytes, limits.clone()).unwrap();
        start.elapsed()
    });
    let cache = tempfile::tempdir().unwrap();
    runtime()
        .with_cache(cache.path())
        .load("hello", bytes, limits.clone())
        .unwrap();
    let cached = runtime().with_cache(cache.path());
    let start = Instant::now();
    let scenario = cached.load("hello", bytes, limits).unwrap();
    let cached_load = start.elapsed();

    let mut times = Vec::with_capacity(instantiations);
    for _ in 0..instantiations {
        let start = Instant::now();
        let session = cached
            .start(&scenario, StartOptions::default())
            .await
            .unwrap();
        times.push(start.elapsed());
        session.terminate().unwrap();
        session.finished().await.unwrap();
    }
    times.sort();
    let instantiate = times[times.len() / 2];

    // Idle live sessions, each past Started (so its memory is what a
    // session holds, not just what instantiation mapped).
    let rss_before = rss_kib();
    let guest_before = cached.metrics().guest_memory_bytes.get();
    let mut sessions = Vec::with_capacity(live);
    for _ in 0..live {
        let (observer, mut notices) = tokio::sync::mpsc::unbounded_channel();
        let options = StartOptions {
            observer: Some(observer),
            ..StartOptions::default()
        };
        let session = cached.start(&scenario, options).await.unwrap();
        // The first log line is written by Started.
        while let Some(notice) = notices.recv().await {
            if matches!(notice, sessionbox::Notice::Log(_)) {
                break;
            }
        }
        sessions.push(session);
    }
    let guest_kib =
        (cached.metrics().guest_memory_bytes.get() - guest_before) as f64 / 1024.0 / live as f64;
    let rss_kib = (rss_kib() - rss_before) / live as f64;
    for session in sessions {
        session.terminate().unwrap();
        session.finished().await.unwrap();
    }
    Figures {
        compile,
        cached_load,
        instantiate,
        guest_kib,
        rss_kib,
    }
}

fn guests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/guests")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// VmRSS of this process, in KiB.
fn rss_kib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
