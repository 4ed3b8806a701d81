//! Storage from inside a handler, beside bare SQLite: rusqlite used directly
//! in this process, on the same schema and pragmas (WAL,
//! `synchronous = FULL`: the same durability), each side's database a
//! fresh file on the same disk.
//!
//!   env -u RUST_BACKTRACE cargo bench --bench storage            # the README's table
//!   env -u RUST_BACKTRACE cargo bench --bench storage -- --smoke # a short run, no claims
//!
//! The Sessionbox side is one session of `tests/guests/bench-storage`: a
//! request makes N operations in a loop in its handler, the guest timing
//! each (p50, p99), the request's round trip giving ops/s. The bare side
//! runs the same loop on a connection. Sides take turns, rounds are
//! repeated and the medians reported, with Sessionbox / bare.
//!
//! - get (cached): 100 keys read over and over; Sessionbox answers from the
//!   backend's cache.
//! - get (not cached): 1,000 keys read in turn with the cache turned off
//!   (it holds one entry): every read is a trip to the database's thread.
//! - set: 100 keys written in turn, each set its own commit.
//! - set, 8 sessions at once: the same, in 8 sessions concurrently (their
//!   writes share commits); beside it the bare loop again, since one SQLite
//!   database takes one writer at a time.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use sessionbox::bindings::HttpRequestEvent;
use sessionbox::capabilities::AppState;
use sessionbox::capabilities::storage::{AppStorage, rules};
use sessionbox::keyvalue::KeyValue;
use sessionbox::keyvalue::sqlite::{DEFAULT_CACHE_BYTES, SqliteKeyValue, open_database};
use sessionbox::{EngineConfig, Limits, Runtime, SessionHandle, StartOptions};

const APP: &str = "bench";

/// One workload: what each request asks, and how the store is set up.
struct Workload {
    name: &'static str,
    op: &'static str,
    /// Operations per request (one handler).
    ops: usize,
    /// Keys the operations go through in turn.
    keys: usize,
    cache_bytes: usize,
    /// Sessions making requests at once.
    sessions: usize,
}

/// One side's figures in one round.
#[derive(Clone, Copy)]
struct Figures {
    ops_per_s: f64,
    p50: Duration,
    p99: Duration,
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let (rounds, requests) = if smoke { (1, 2) } else { (5, 20) };
    let workloads = [
        Workload {
            name: "get (cached)",
            op: "get",
            ops: 1_000,
            keys: 100,
            cache_bytes: DEFAULT_CACHE_BYTES,
            sessions: 1,
        },
        Workload {
            name: "get (not cached)",
            op: "get",
            ops: 1_000,
            keys: 1_000,
            cache_bytes: 0,
            sessions: 1,
        },
        Workload {
            name: "set (synchronous = FULL)",
            op: "set",
            ops: if smoke { 20 } else { 200 },
            keys: 100,
            cache_bytes: DEFAULT_CACHE_BYTES,
            sessions: 1,
        },
        Workload {
            name: "set (8 sessions at once)",
            op: "set",
            ops: if smoke { 20 } else { 200 },
            keys: 100,
            cache_bytes: DEFAULT_CACHE_BYTES,
            sessions: 8,
        },
    ];
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let runtime = Runtime::new(EngineConfig::default()).unwrap();
    let guest = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/guests/bench-storage.wasm"),
    )
    .expect("target/guests/bench-storage.wasm (build the guests: guest-examples/rust/build.sh)");
    let limits = Limits {
        storage_ops_per_handler: 10_000,
        ..Limits::default()
    };
    let scenario = runtime.load("bench-storage", &guest, limits).unwrap();

    println!(
        "{:<26} {:>14} {:>10} {:>10} {:>14} {:>10} {:>10} {:>8}",
        "operation",
        "Sessionbox/s",
        "p50 µs",
        "p99 µs",
        "bare SQLite/s",
        "p50 µs",
        "p99 µs",
        "ratio"
    );
    for workload in &workloads {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn KeyValue> = Arc::new(
            SqliteKeyValue::open(
                &dir.path().join("sessionbox.db"),
                workload.cache_bytes,
                Arc::default(),
            )
            .unwrap(),
        );
        let bare = open_database(&dir.path().join("bare.db")).unwrap();
        seed(&tokio, &backend, &bare, workload.keys);
        let app = AppState {
            storage: Some(AppStorage {
                app: APP.into(),
                backend,
            }),
            ..AppState::default()
        };
        let sessions: Vec<SessionHandle> = (0..workload.sessions)
            .map(|_| {
                let options = StartOptions {
                    app: app.clone(),
                    ..StartOptions::default()
                };
                tokio.block_on(runtime.start(&scenario, options)).unwrap()
            })
            .collect();
        let command = format!("{} {} {}", workload.op, workload.ops, workload.keys);
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for _ in 0..rounds {
            ours.push(tokio.block_on(in_sessionbox(&sessions, &command, requests)));
            theirs.push(bare_sqlite(&bare, workload, requests));
        }
        let (ours, theirs) = (median(&ours), median(&theirs));
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "{:<26} {:>14.0} {:>10.1} {:>10.1} {:>14.0} {:>10.1} {:>10.1} {:>7.2}x",
            workload.name,
            ours.ops_per_s,
            us(ours.p50),
            us(ours.p99),
            theirs.ops_per_s,
            us(theirs.p50),
            us(theirs.p99),
            ours.ops_per_s / theirs.ops_per_s
        );
        println!(
            "csv,{},{:.0},{:.1},{:.1},{:.0},{:.1},{:.1}",
            workload.name,
            ours.ops_per_s,
            us(ours.p50),
            us(ours.p99),
            theirs.ops_per_s,
            us(theirs.p50),
            us(theirs.p99)
        );
        for session in sessions {
            session.terminate().unwrap();
            tokio.block_on(session.finished()).unwrap();
        }
    }
    if smoke {
        println!("(smoke run: the figures are not measurements)");
    }
}

/// The keys both sides read: `k0` .. `k{keys-1}`, 100 bytes each.
fn seed(
    tokio: &tokio::runtime::Runtime,
    backend: &Arc<dyn KeyValue>,
    bare: &Connection,
    keys: usize,
) {
    let quota = rules::quota(&Limits::default());
    for i in 0..keys {
        let key = format!("k{i}");
        tokio
            .block_on(backend.set(APP, &key, vec![b'v'; 100], None, quota))
            .unwrap();
        bare_set(bare, &key);
    }
}

/// `requests` requests of `command` to each session, the sessions at once.
async fn in_sessionbox(sessions: &[SessionHandle], command: &str, requests: usize) -> Figures {
    let began = Instant::now();
    let mut running = tokio::task::JoinSet::new();
    for session in sessions {
        let (session, command) = (session.clone(), command.to_owned());
        running.spawn(async move {
            let mut times = Vec::new();
            for _ in 0..requests {
                let request = HttpRequestEvent {
                    method: "POST".into(),
                    path: "/".into(),
                    headers: Vec::new(),
                    body: command.as_bytes().to_vec(),
                };
                let response = session.http_request(request).await.unwrap();
                let body = &response.body;
                assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(body));
                times.extend(body.chunks_exact(8).map(|nanos| {
                    Duration::from_nanos(u64::from_le_bytes(nanos.try_into().unwrap()))
                }));
            }
            times
        });
    }
    let times = running.join_all().await.concat();
    figures(times, began.elapsed())
}

fn bare_sqlite(db: &Connection, workload: &Workload, requests: usize) -> Figures {
    let mut times = Vec::with_capacity(requests * workload.ops);
    let began = Instant::now();
    for _ in 0..requests {
        for i in 0..workload.ops {
            let key = format!("k{}", i % workload.keys);
            let op_began = Instant::now();
            match workload.op {
                "get" => {
                    std::hint::black_box(bare_get(db, &key));
                }
                _ => bare_set(db, &key),
            }
            times.push(op_began.elapsed());
        }
    }
    figures(times, began.elapsed())
}

/// A read as an application would write it: the row, if it has not expired.
fn bare_get(db: &Connection, key: &str) -> Option<Vec<u8>> {
    let now = unix_ms();
    db.prepare_cached("SELECT value, expires_at_ms FROM kv WHERE app = ?1 AND key = ?2")
        .unwrap()
        .query_row(params![APP, key], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Option<i64>>(1)?))
        })
        .optional()
        .unwrap()
        .filter(|(_, expires)| expires.is_none_or(|at| at > now))
        .map(|(value, _)| value)
}

/// A write in a transaction of its own.
fn bare_set(db: &Connection, key: &str) {
    db.prepare_cached(
        "INSERT INTO kv (app, key, value, expires_at_ms) VALUES (?1, ?2, ?3, NULL)
         ON CONFLICT (app, key) DO UPDATE
         SET value = excluded.value, expires_at_ms = excluded.expires_at_ms",
    )
    .unwrap()
    .execute(params![APP, key, &[b'v'; 100][..]])
    .unwrap();
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn figures(mut times: Vec<Duration>, elapsed: Duration) -> Figures {
    times.sort_unstable();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    Figures {
        ops_per_s: times.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
    }
}

/// The round of median throughput.
fn median(rounds: &[Figures]) -> Figures {
    let mut sorted = rounds.to_vec();
    sorted.sort_by(|a, b| a.ops_per_s.total_cmp(&b.ops_per_s));
    sorted[sorted.len() / 2]
}
