//! The history and the storage behave alike on both backends: SQLite (one
//! node) and PostgreSQL (shared by nodes), each test run against both.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sessionbox::recording::Recording;

use sessionbox::keyvalue::sqlite::{DEFAULT_CACHE_BYTES, SqliteKeyValue};
use sessionbox::keyvalue::{KeyValue, Quota, StorageError};
use sessionbox::server::history::{History, NewSession, SessionFilter};
use sessionbox::server::postgres::Postgres;
use sessionbox::server::postgres::keyvalue::PgKeyValue;
use sessionbox::server::recordings::Recordings;

use crate::support::history::{new_session, record};
use crate::support::postgres;

/// Where a test keeps its history or storage.
enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl Backend {
    fn both() -> [Backend; 2] {
        [
            Backend::Sqlite(tempfile::tempdir().unwrap()),
            Backend::Postgres(postgres::database()),
        ]
    }

    fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// The history as node `node` opens it; how many sessions it marked
    /// interrupted.
    async fn history(&self, node: &str) -> (History, usize) {
        match self {
            Backend::Sqlite(dir) => {
                History::sqlite(&dir.path().join("history.db"), 30, Arc::default()).unwrap()
            }
            Backend::Postgres(url) => {
                let postgres = Arc::new(Postgres::connect(url).await.unwrap());
                History::postgres(postgres, node, 30, Arc::default())
                    .await
                    .unwrap()
            }
        }
    }

    /// The recordings, kept with the history.
    async fn recordings(&self) -> Recordings {
        match self {
            Backend::Sqlite(dir) => Recordings::sqlite(&dir.path().join("history.db")).unwrap(),
            Backend::Postgres(url) => {
                Recordings::Postgres(Arc::new(Postgres::connect(url).await.unwrap()))
            }
        }
    }

    async fn storage(&self) -> Arc<dyn KeyValue> {
        match self {
            Backend::Sqlite(dir) => Arc::new(
                SqliteKeyValue::open(
                    &dir.path().join("storage.db"),
                    DEFAULT_CACHE_BYTES,
                    Arc::default(),
                )
                .unwrap(),
            ),
            Backend::Postgres(url) => {
                PgKeyValue::new(Arc::new(Postgres::connect(url).await.unwrap()))
            }
        }
    }
}

async fn started(history: &History, session: NewSession) {
    history.started(session).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_records_lists_and_forgets_sessions_on_both_backends() {
    for backend in Backend::both() {
        let name = backend.name();
        let (history, _) = backend.history("n1").await;
        let now = SystemTime::now();
        let second = Duration::from_secs(1);
        started(&history, new_session("s1", "n1", "a", now - 3 * second)).await;
        started(&history, new_session("s2", "n1", "b", now - 2 * second)).await;
        started(&history, new_session("s3", "n1", "a", now - second)).await;
        let live = history.session("s1").await.unwrap().unwrap();
        assert_eq!(
            (live.state.as_str(), live.node.as_str()),
            ("live", "n1"),
            "{name}"
        );

        // A log line may hold anything a scenario printed, NUL included.
        let lines = ["first", "with a NUL \0 inside", "last"];
        let (retired, retire) = tokio::sync::oneshot::channel();
        let then = Box::new(move || {
            let _ = retired.send(());
        });
        history.finished(
            new_session("s1", "n1", "a", now - 3 * second),
            record("s1", &lines),
            then,
        );
        retire.await.expect("the finished write commits");
        let finished = history.session("s1").await.unwrap().unwrap();
        assert_eq!(finished.state, "finished", "{name}");
        assert_eq!(finished.finish_reason.as_deref(), Some("host"), "{name}");
        let log = history.log("s1").await.unwrap();
        let texts: Vec<&str> = log.iter().map(|line| line.text.as_str()).collect();
        assert_eq!(texts.len(), 3, "{name}");
        assert_eq!((texts[0], texts[2]), ("first", "last"), "{name}");
        assert!(texts[1].starts_with("with a NUL "), "{name}: {texts:?}");

        let list = |app: Option<&str>, state: Option<&str>| SessionFilter {
            tenant: "t".into(),
            app: app.map(Into::into),
            state: state.map(Into::into),
            limit: 10,
            ..Default::default()
        };
        let ids = |sessions: Vec<sessionbox::server::history::StoredSession>| {
            sessions
                .into_iter()
                .map(|s| s.session_id)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids(history.list(&list(None, None)).await.unwrap()),
            ["s3", "s2", "s1"],
            "{name}"
        );
        assert_eq!(
            ids(history.list(&list(Some("a"), None)).await.unwrap()),
            ["s3", "s1"],
            "{name}"
        );
        assert_eq!(
            ids(history.list(&list(None, Some("finished"))).await.unwrap()),
            ["s1"],
            "{name}"
        );
        let other_tenant = SessionFilter {
            tenant: "u".into(),
            limit: 10,
            ..Default::default()
        };
        assert!(
            history.list(&other_tenant).await.unwrap().is_empty(),
            "{name}"
        );

        history.forget("s2").await.unwrap();
        assert!(history.session("s2").await.unwrap().is_none(), "{name}");
        history.close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_history_marks_its_own_live_sessions_interrupted() {
    for backend in Backend::both() {
        let name = backend.name();
        let (history, _) = backend.history("n1").await;
        started(&history, new_session("mine", "n1", "a", SystemTime::now())).await;
        if let Backend::Postgres(_) = backend {
            // Another node's live session is that node's to mark.
            let (other, _) = backend.history("n2").await;
            started(&other, new_session("theirs", "n2", "a", SystemTime::now())).await;
            other.close();
        }
        // The process "dies": nothing finishes the session.
        history.close();
        drop(history);

        let (history, interrupted) = backend.history("n1").await;
        assert_eq!(interrupted, 1, "{name}");
        let mine = history.session("mine").await.unwrap().unwrap();
        assert_eq!(mine.state, "interrupted", "{name}");
        assert_eq!(mine.finish_reason.as_deref(), Some("interrupted"), "{name}");
        if let Backend::Postgres(_) = backend {
            let theirs = history.session("theirs").await.unwrap().unwrap();
            assert_eq!(theirs.state, "live", "another node's session is untouched");
            assert!(
                mine.finish_detail.as_deref().unwrap().contains("node n1"),
                "{:?}",
                mine.finish_detail
            );
        }
        history.close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_past_the_retention_is_dropped_when_a_node_opens_it() {
    for backend in Backend::both() {
        let name = backend.name();
        let (history, _) = backend.history("n1").await;
        let day = Duration::from_secs(24 * 3600);
        for (id, age) in [("old", 31), ("recent", 29)] {
            let session = new_session(id, "n1", "a", SystemTime::now() - day * age);
            started(&history, session.clone()).await;
            let (retired, retire) = tokio::sync::oneshot::channel();
            let then = Box::new(move || {
                let _ = retired.send(());
            });
            history.finished(session, record(id, &["a line"]), then);
            retire.await.unwrap();
            let recordings = backend.recordings().await;
            recordings
                .keep("a", id, recording(1, 100), u64::MAX)
                .await
                .unwrap();
        }
        history.close();
        drop(history);

        // Opened again with 30 days' retention: the old session goes, with
        // its log and its recordings.
        let (history, _) = backend.history("n1").await;
        assert!(history.session("old").await.unwrap().is_none(), "{name}");
        assert!(history.log("old").await.unwrap().is_empty(), "{name}");
        assert!(history.session("recent").await.unwrap().is_some(), "{name}");
        let recordings = backend.recordings().await;
        assert!(recordings.list("old").await.unwrap().is_empty(), "{name}");
        assert_eq!(recordings.list("recent").await.unwrap().len(), 1, "{name}");
        history.close();
    }
}

/// Recording `n`: `ms` milliseconds of one channel, each sample `n`.
fn recording(n: u32, ms: u64) -> Recording {
    Recording {
        id: n,
        call: 1,
        channels: 1,
        duration: Duration::from_millis(ms),
        wav: vec![n as u8; 44 + 16 * ms as usize],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_are_kept_listed_and_held_to_the_apps_bytes_on_both_backends() {
    for backend in Backend::both() {
        let name = backend.name();
        let (history, _) = backend.history("n1").await;
        let recordings = backend.recordings().await;
        // Room for two recordings of 100 ms (1,644 bytes each) and no more.
        let quota = 3_500;
        for n in [1, 2] {
            let kept = recordings.keep("a", "s1", recording(n, 100), quota).await;
            assert_eq!(kept, Ok(()), "{name}");
        }
        let refused = recordings.keep("a", "s2", recording(1, 100), quota).await;
        assert_eq!(
            refused.unwrap_err(),
            "the app's recordings are limited to 3500 bytes, and this one would pass that",
            "{name}"
        );
        // Another app has its own room.
        let other = recordings.keep("b", "s3", recording(1, 100), quota).await;
        assert_eq!(other, Ok(()), "{name}");

        let listed = recordings.list("s1").await.unwrap();
        let numbers: Vec<(u32, u64, u64)> = (listed.iter())
            .map(|r| (r.n, r.duration_ms, r.bytes))
            .collect();
        assert_eq!(numbers, [(1, 100, 1644), (2, 100, 1644)], "{name}");
        assert_eq!(
            recordings.wav("s1", 2).await.unwrap(),
            Some(vec![2; 1644]),
            "{name}"
        );
        assert_eq!(recordings.wav("s1", 3).await.unwrap(), None, "{name}");
        assert!(recordings.list("s2").await.unwrap().is_empty(), "{name}");
        history.close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_goes_away_refuses_starts_and_loses_no_record() {
    let url = postgres::database();
    let name = url.rsplit('/').next().unwrap().to_owned();
    let shared = Arc::new(Postgres::connect(&url).await.unwrap());
    let (history, _) = History::postgres(shared, "n1", 30, Arc::default())
        .await
        .unwrap();
    let now = SystemTime::now();
    started(&history, new_session("before", "n1", "a", now)).await;

    // The database refuses connections, and drops the ones it has.
    postgres::sql(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"));
    postgres::sql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ));
    let (retired, retire) = tokio::sync::oneshot::channel();
    let then = Box::new(move || {
        let _ = retired.send(());
    });
    history.finished(
        new_session("before", "n1", "a", now),
        record("before", &["kept"]),
        then,
    );
    let refused = history
        .started(new_session("refused", "n1", "a", now))
        .await
        .unwrap();
    assert!(
        refused.is_err(),
        "a start whose row cannot be written is refused"
    );
    let health = history.health();
    assert!(health.is_degraded(), "{health:?}");
    assert_eq!(health.held_writes, 1, "the finished record is held");

    // Back: what was held is written, nothing refused is there.
    postgres::sql(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"));
    tokio::time::timeout(crate::support::PATIENCE, retire)
        .await
        .expect("the held record was written once the database came back")
        .unwrap();
    assert!(!history.health().is_degraded());
    let before = history.session("before").await.unwrap().unwrap();
    assert_eq!(before.state, "finished");
    assert_eq!(history.log("before").await.unwrap()[0].text, "kept");
    assert!(history.session("refused").await.unwrap().is_none());
    history.close();
}

const QUOTA: Quota = Quota {
    keys: 100,
    bytes: 10_000,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_counts_compares_expires_and_refuses_alike_on_both_backends() {
    for backend in Backend::both() {
        let name = backend.name();
        let store = backend.storage().await;

        // Concurrent increments lose nothing.
        let increments = (0..4).map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for _ in 0..50 {
                    store.increment("app", "counter", 1, QUOTA).await.unwrap();
                }
            })
        });
        for increment in increments.collect::<Vec<_>>() {
            increment.await.unwrap();
        }
        assert_eq!(
            store.get("app", "counter").await.unwrap(),
            Some(b"200".to_vec()),
            "{name}"
        );
        assert_eq!(
            store.get("other", "counter").await.unwrap(),
            None,
            "{name}: apps apart"
        );

        // Compare-and-set: the stale writer loses.
        store
            .set("app", "k", b"v1".to_vec(), None, QUOTA)
            .await
            .unwrap();
        let fresh = store
            .compare_and_set(
                "app",
                "k",
                Some(b"v1".to_vec()),
                b"v2".to_vec(),
                None,
                QUOTA,
            )
            .await
            .unwrap();
        let stale = store
            .compare_and_set(
                "app",
                "k",
                Some(b"v1".to_vec()),
                b"v3".to_vec(),
                None,
                QUOTA,
            )
            .await
            .unwrap();
        assert_eq!((fresh, stale), (true, false), "{name}");
        let absent = store
            .compare_and_set("app", "new", None, b"x".to_vec(), None, QUOTA)
            .await
            .unwrap();
        assert!(absent, "{name}: none expected, none there");
        assert!(store.delete("app", "new").await.unwrap(), "{name}");
        assert!(!store.delete("app", "new").await.unwrap(), "{name}");

        // An increment of text is refused, and changes nothing.
        let refused = store.increment("app", "k", 1, QUOTA).await;
        assert!(
            matches!(refused, Err(StorageError::NotApplicable(_))),
            "{name}: {refused:?}"
        );
        assert_eq!(
            store.get("app", "k").await.unwrap(),
            Some(b"v2".to_vec()),
            "{name}"
        );

        // Expired keys are never returned.
        let ttl = Some(Duration::from_millis(300));
        store
            .set("app", "brief", b"x".to_vec(), ttl, QUOTA)
            .await
            .unwrap();
        assert!(store.get("app", "brief").await.unwrap().is_some(), "{name}");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(store.get("app", "brief").await.unwrap(), None, "{name}");

        // The quota counts keys and values, and an expired key makes room.
        let small = Quota {
            keys: 3,
            bytes: 1_000,
        };
        store
            .set("q", "a", b"1".to_vec(), None, small)
            .await
            .unwrap();
        store
            .set("q", "b", b"1".to_vec(), ttl, small)
            .await
            .unwrap();
        store
            .set("q", "c", b"1".to_vec(), None, small)
            .await
            .unwrap();
        let full = store.set("q", "d", b"1".to_vec(), None, small).await;
        assert!(
            matches!(full, Err(StorageError::Quota(_))),
            "{name}: {full:?}"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        store
            .set("q", "d", b"1".to_vec(), None, small)
            .await
            .unwrap();
        let too_big = store
            .set(
                "q",
                "e",
                vec![0; 2_000],
                None,
                Quota {
                    keys: 10,
                    bytes: 1_000,
                },
            )
            .await;
        assert!(
            matches!(too_big, Err(StorageError::Quota(_))),
            "{name}: {too_big:?}"
        );
        let usage = store.usage("q").await.unwrap();
        assert_eq!((usage.keys, usage.bytes), (3, 6), "{name}");

        // Listings page in byte order.
        for key in ["p/b", "p/a", "p/C", "q/x", "p/é"] {
            store
                .set("l", key, b"1".to_vec(), None, QUOTA)
                .await
                .unwrap();
        }
        let first = store.list("l", "p/", None, 2).await.unwrap();
        assert_eq!(first.keys, ["p/C", "p/a"], "{name}");
        let rest = store
            .list("l", "p/", first.next.as_deref(), 10)
            .await
            .unwrap();
        assert_eq!(rest.keys, ["p/b", "p/é"], "{name}");
        assert_eq!(rest.next, None, "{name}");
    }
}
