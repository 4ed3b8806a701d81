//! The conformance suite: the example scenarios of every guest language,
//! end to end, with the same events, the same expected log lines, HTTP
//! answers and refusals. Every event reaches the scenario with its payload,
//! in order, and every session ends with a record.
//!
//! Adding a language: a `guest-examples/<language>/build.sh` that writes
//! `target/guests/<language>/<example>.wasm`, and one line in `languages!`
//! below. `rust_v0_1` runs components built for the earlier world, 0.1.0.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::support::*;
use sessionbox::bindings::{CallId, Message};
use sessionbox::capabilities::AppState;
use sessionbox::capabilities::storage::AppStorage;
use sessionbox::capabilities::variables::{Variable, Variables};
use sessionbox::capabilities::websockets::SocketCommand;
use sessionbox::keyvalue::KeyValue;
use sessionbox::keyvalue::sqlite::SqliteKeyValue;
use sessionbox::log::LogSource;
use sessionbox::recording::{Recording, RecordingStore};
use sessionbox::session::TerminateCauseName;
use sessionbox::{
    EngineConfig, FinishReason, IncomingCall, Limits, Runtime, Scenario, SessionError,
    SessionHandle,
};

/// One module per language, one test per check of each example it has:
/// every language has `hello` and `remote_control`.
macro_rules! languages {
    ($($language:ident: $dir:literal, $memory_mib:literal MiB, [$($example:ident),* $(,)?];)*) => {
        $(mod $language {
            const LANGUAGE: super::Language = super::Language {
                dir: $dir,
                memory_mib: $memory_mib,
            };
            $(checks_of!($example);)*
        })*
    };
}

/// The checks each example is put through.
macro_rules! checks_of {
    (hello) => {
        checks!(
            hello_sees_started_first_and_once,
            hello_sees_calls_and_websockets_in_order,
            second_load_does_not_compile
        );
    };
    (call_handler) => {
        checks!(call_handler_answers_plays_hangs_up);
    };
    (remote_control) => {
        checks!(remote_control_answers_json);
    };
    (farewell) => {
        checks!(farewell_makes_one_request_in_terminating);
    };
    (visit_counter) => {
        checks!(visit_counter_counts_the_visits_of_every_session);
    };
    (ivr_menu) => {
        checks!(ivr_menu_reads_its_prompts_from_storage);
    };
    (webhook) => {
        checks!(webhook_posts_with_its_secret_token_and_never_logs_it);
    };
    (call_centre) => {
        checks!(call_centre_connects_the_caller_to_an_agent);
    };
    (kv_probe) => {
        checks!(
            storage_counts_every_increment_of_two_sessions,
            storage_compare_and_set_loses_for_the_stale_writer,
            storage_keys_expire_and_stay_in_their_app,
            storage_refuses_past_its_limits_and_once_terminated,
            variables_are_read_and_secrets_never_logged
        );
    };
}

macro_rules! checks {
    ($($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                super::$check(&LANGUAGE).await
            }
        )*
    };
}

languages! {
    rust: "target/guests", 16 MiB, [hello, call_handler, remote_control, farewell, kv_probe, visit_counter, ivr_menu, webhook, call_centre];
    // Built for earlier worlds, run by today's host.
    rust_v0_1: "tests/guests/v0.1.0", 16 MiB, [hello, call_handler, farewell];
    rust_v0_2: "tests/guests/v0.2.0", 16 MiB, [hello, call_handler, remote_control, farewell, kv_probe, visit_counter, ivr_menu, webhook];
    js: "target/guests/js", 16 MiB, [hello, call_handler, remote_control, farewell, kv_probe, visit_counter, ivr_menu, webhook, call_centre];
    python: "target/guests/python", 32 MiB, [hello, call_handler, remote_control, farewell, kv_probe, visit_counter, ivr_menu, webhook, call_centre];
    c: "target/guests/c", 16 MiB, [hello, call_handler, remote_control, kv_probe, visit_counter, ivr_menu, webhook, call_centre];
}

/// Where a language's examples are, and the memory its runtime needs.
struct Language {
    /// Where its components are, from the repository's root.
    dir: &'static str,
    memory_mib: usize,
}

/// The largest `memory_mib` above: the shared runtime's slot size.
const MAX_MEMORY_MIB: usize = 32;

impl Language {
    fn example(&self, name: &str) -> PathBuf {
        repo_root().join(self.dir).join(format!("{name}.wasm"))
    }

    fn limits(&self, limits: Limits) -> Limits {
        Limits {
            memory_bytes: self.memory_mib << 20,
            ..limits
        }
    }

    /// Loads an example through the shared runtime: JavaScript and Python
    /// components take seconds to compile, so each is compiled once (loads
    /// are serialized, the first writes the disk cache, later ones read it).
    fn load(&self, name: &str, limits: Limits) -> (&'static Runtime, Arc<Scenario>) {
        static LOADING: Mutex<()> = Mutex::new(());
        let runtime = shared_runtime();
        let _one_at_a_time = LOADING.lock().unwrap_or_else(|e| e.into_inner());
        let scenario = runtime
            .load_file(&self.example(name), self.limits(limits))
            .unwrap_or_else(|e| panic!("loading {}: {e:#}", self.example(name).display()));
        (runtime, scenario)
    }
}

/// One runtime for the whole suite, caching compiled components in the
/// target directory so that later runs of the suite load them in
/// milliseconds.
fn shared_runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let config = EngineConfig {
            max_sessions: 64,
            max_memory_bytes: MAX_MEMORY_MIB << 20,
            ..EngineConfig::default()
        };
        Runtime::new(config)
            .expect("creating a runtime")
            .with_cache(cache_dir())
    })
}

fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("conformance-components")
}

fn finished_by(cause: TerminateCauseName) -> FinishReason {
    FinishReason::Terminated { cause }
}

/// A second process (here: a second runtime with the same disk cache) loads
/// the compiled form instead of compiling again.
async fn second_load_does_not_compile(language: &Language) {
    language.load("hello", Limits::default());
    let second = Runtime::new(EngineConfig {
        max_sessions: 1,
        max_memory_bytes: language.memory_mib << 20,
        ..EngineConfig::default()
    })
    .unwrap()
    .with_cache(cache_dir());
    second
        .load_file(
            &language.example("hello"),
            language.limits(Limits::default()),
        )
        .unwrap();
    let stats = second.cache_stats().unwrap();
    assert_eq!((stats.compiles, stats.hits), (0, 1));
}

async fn hello_sees_started_first_and_once(language: &Language) {
    let (runtime, hello) = language.load("hello", Limits::default());
    let mut watched = start(runtime, &hello, "order-42").await;
    let id = watched.session.id().to_owned();
    assert_eq!(id.len(), 32, "128 random bits, hex");

    let response = watched
        .session
        .http_request(request("POST", "/orders?x=1", "abc"))
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"hello POST /orders?x=1");
    assert!(
        response
            .headers
            .iter()
            .any(|h| h.name == "content-type" && h.value == "text/plain")
    );
    watched.session.terminate().unwrap();
    let record = watched.finished().await;

    assert_eq!(
        watched.seen,
        ["Started", "HttpRequest", "Terminating", "Terminated"]
    );
    assert_eq!(record.delivered("Started"), 1);
    assert_eq!(record.id, id);
    assert_eq!(record.scenario, "hello");
    assert!(record.ended_at >= record.started_at);
    assert_eq!(record.finish_reason, finished_by(TerminateCauseName::Host));
    assert_eq!(
        lines(&record, LogSource::Scenario),
        [
            format!("started session={id} custom-data=order-42").as_str(),
            "http-request POST /orders?x=1 body=3",
            "terminating",
            "terminated",
        ]
    );
    // WASI stdout reaches the session log, line by line, in order with the
    // scenario's own log lines.
    assert_eq!(lines(&record, LogSource::Stdout), ["hello from stdout"]);
    assert_eq!(record.log.lines[1].source, LogSource::Stdout);
    assert_eq!(record.capabilities.uses["logger"], 4);
}

async fn hello_sees_calls_and_websockets_in_order(language: &Language) {
    let (runtime, hello) = language.load("hello", Limits::default());
    let mut watched = start(runtime, &hello, "").await;
    let session = watched.session.clone();

    let call = session
        .incoming_call(IncomingCall {
            caller_id: "+15550100".into(),
            destination: "+15550199".into(),
            display_name: "Ada".into(),
            headers: vec![header("X-Account", "7"), header("X-Plan", "pro")],
        })
        .unwrap();
    // One live call: 1 + 3 sockets are allowed, the fifth is refused.
    let mut sockets = Vec::new();
    for n in 0..4 {
        let link = session
            .open_websocket(format!("/ws/{n}"), vec![])
            .await
            .expect("within calls + 3");
        sockets.push(link);
    }
    let refused = session.open_websocket("/ws/4".into(), vec![]).await;
    let Err(SessionError::Refused(reason)) = refused else {
        panic!("the fifth socket is refused");
    };
    assert!(reason.contains("calls in the session + 3"), "{reason}");

    let first = sockets[0].id;
    session
        .websocket_message(first, Message::Text("ping".into()))
        .unwrap();
    session
        .websocket_message(first, Message::Binary(vec![1, 2, 3]))
        .unwrap();
    session.websocket_closed(first, 1000, "bye".into()).unwrap();
    session
        .remote_failed(call, 487, "Request Terminated")
        .unwrap();
    session.terminate().unwrap();
    let record = watched.finished().await;

    assert_eq!(
        watched.seen,
        [
            "Started",
            "CallAlerting",
            "WebSocket",
            "WebSocket",
            "WebSocket",
            "WebSocket",
            "NewWebSocketFailed",
            "WebSocketMessage",
            "WebSocketMessage",
            "WebSocketClosed",
            "CallFailed",
            "Terminating",
            "Terminated",
        ]
    );
    let log = lines(&record, LogSource::Scenario);
    let ids: Vec<_> = sockets.iter().map(|s| s.id).collect();
    assert_eq!(
        log[1..11],
        [
            "call-alerting caller=+15550100 destination=+15550199 display-name=Ada headers=2"
                .to_owned(),
            format!("websocket /ws/0 id={}", ids[0]),
            format!("websocket /ws/1 id={}", ids[1]),
            format!("websocket /ws/2 id={}", ids[2]),
            format!("websocket /ws/3 id={}", ids[3]),
            format!("new-websocket-failed {reason}"),
            format!("websocket-message {first} text=ping"),
            format!("websocket-message {first} binary=3"),
            format!("websocket-closed {first} 1000 bye"),
            format!("call-failed {call} 487 Request Terminated"),
        ]
    );
    let mut sockets = sockets.into_iter();
    // The first socket got its messages echoed.
    let mut echoed = sockets.next().unwrap();
    let command = echoed.commands.recv().await;
    assert!(
        matches!(&command, Some(SocketCommand::Send(Message::Text(t))) if t == "echo: ping"),
        "{command:?}"
    );
    let command = echoed.commands.recv().await;
    assert!(
        matches!(&command, Some(SocketCommand::Send(Message::Binary(b))) if b == &[1, 2, 3]),
        "{command:?}"
    );
    // The session's other sockets were closed when it began terminating.
    for mut socket in sockets {
        let command = socket.commands.recv().await;
        assert!(
            matches!(command, Some(SocketCommand::Close { code: 1001, .. })),
            "{command:?}"
        );
    }
}

/// Answers, plays, hangs up, then idles out.
async fn call_handler_answers_plays_hangs_up(language: &Language) {
    let (runtime, scenario) = language.load("call-handler", quick_idle(200));
    let mut watched = start(runtime, &scenario, "").await;
    let call = watched
        .session
        .incoming_call(IncomingCall {
            caller_id: "alice".into(),
            destination: "support".into(),
            ..IncomingCall::default()
        })
        .unwrap();
    let record = watched.finished().await;
    assert_eq!(
        watched.seen,
        [
            "Started",
            "CallAlerting",
            "CallConnected",
            "CallPlaybackFinished",
            "CallDisconnected",
            "Terminating",
            "Terminated",
        ]
    );
    assert_eq!(
        record.finish_reason,
        finished_by(TerminateCauseName::IdleTimeout)
    );
    assert_eq!(
        lines(&record, LogSource::Scenario),
        [
            "answering call from alice",
            "connected",
            "prompt finished, hanging up",
            "call ended",
            "terminating",
            "terminated",
        ]
    );
    assert_eq!(record.capabilities.uses["calls"], 3, "answer, say, hangup");
    // The call is over: the far end's tones no longer reach the scenario.
    assert!(watched.session.remote_tone(call, "5").is_err());
}

/// Answers JSON and stops on request.
async fn remote_control_answers_json(language: &Language) {
    let (runtime, scenario) = language.load("remote-control", Limits::default());
    let mut watched = start(runtime, &scenario, "first").await;
    let session = watched.session.clone();
    let json = |body: &[u8]| -> serde_json::Value { serde_json::from_slice(body).unwrap() };

    let status = session
        .http_request(request("GET", "/status", ""))
        .await
        .unwrap();
    assert_eq!(status.status, 200);
    assert_eq!(
        json(&status.body),
        serde_json::json!({"session": session.id(), "requests": 1, "custom_data": "first"})
    );
    let set = session
        .http_request(request("POST", "/custom-data", "second"))
        .await
        .unwrap();
    assert_eq!(
        json(&set.body),
        serde_json::json!({"custom_data": "second"})
    );
    let too_long = session
        .http_request(request("POST", "/custom-data", &"x".repeat(201)))
        .await
        .unwrap();
    assert_eq!(too_long.status, 400);
    assert_eq!(
        json(&too_long.body)["error"],
        "session refused in running: custom data is limited to 200 bytes (got 201)"
    );
    let status = session
        .http_request(request("GET", "/status", ""))
        .await
        .unwrap();
    assert_eq!(json(&status.body)["custom_data"], "second");
    assert_eq!(json(&status.body)["requests"], 4);
    let missing = session
        .http_request(request("GET", "/nope", ""))
        .await
        .unwrap();
    assert_eq!(missing.status, 404);

    let stop = session
        .http_request(request("POST", "/stop", ""))
        .await
        .unwrap();
    assert_eq!(json(&stop.body), serde_json::json!({"stopping": true}));
    let record = watched.finished().await;
    assert_eq!(
        record.finish_reason,
        finished_by(TerminateCauseName::Terminate)
    );
    assert_eq!(record.delivered("HttpRequest"), 6);
    assert_eq!(record.capabilities.refused("session"), 1);
    assert!(matches!(
        session.http_request(request("GET", "/status", "")).await,
        Err(SessionError::Finished)
    ));
}

/// Exactly one request, and no timer, in Terminating.
async fn farewell_makes_one_request_in_terminating(language: &Language) {
    let (url, mut received) = webhook::start().await;
    // The webhook is on loopback, which apps reach only when allowed.
    let (runtime, scenario) = language.load("farewell", loopback_allowed());
    let mut watched = start(runtime, &scenario, &url).await;
    let id = watched.session.id().to_owned();
    watched
        .session
        .http_request(request("POST", "/stop", ""))
        .await
        .unwrap();
    let record = watched.finished().await;

    let hook = received.recv().await.expect("the webhook was called");
    assert_eq!(hook.method, "POST");
    assert_eq!(hook.path, "/hook");
    assert_eq!(hook.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&hook.body).unwrap(),
        serde_json::json!({"session": id, "event": "terminating"})
    );
    assert!(received.try_recv().is_err(), "exactly one request arrived");

    let log = lines(&record, LogSource::Scenario);
    assert_eq!(log[0], format!("started, webhook={url}"));
    assert_eq!(
        log[1],
        "timer refused: timers refused in terminating: timers ended when the session began terminating"
    );
    assert_eq!(log[2], "webhook answered 200");
    // The error's text is the language's own (Rust's names wasi:http's
    // `HttpRequestDenied`); the host's count below is the same for all.
    assert!(log[3].starts_with("second request refused: "), "{}", log[3]);
    assert_eq!(log[4], "terminated");
    let host = lines(&record, LogSource::Host);
    assert!(
        host.iter().any(|line| line.starts_with(
            "http refused in terminating: 1 outbound request in terminating is the limit (POST http://127.0.0.1:"
        )),
        "the host notes the refusal for the author: {host:?}"
    );
    assert_eq!(record.capabilities.uses["http"], 1);
    assert_eq!(record.capabilities.refusals["http"]["terminating"], 1);
    assert_eq!(record.capabilities.refusals["timers"]["terminating"], 1);
    assert_eq!(
        watched.seen,
        ["Started", "HttpRequest", "Terminating", "Terminated"]
    );
}

/// An app's store in a fresh database, with `variables`, and the database
/// (kept for the test's length).
fn app_with_storage(
    app: &str,
    variables: Vec<(&str, &str, bool)>,
) -> (AppState, Arc<dyn KeyValue>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let backend: Arc<dyn KeyValue> = Arc::new(
        SqliteKeyValue::open(&dir.path().join("storage.db"), 1 << 20, Arc::default()).unwrap(),
    );
    let variables = variables
        .into_iter()
        .map(|(name, value, secret)| {
            let value = value.to_owned();
            (name.to_owned(), Variable { value, secret })
        })
        .collect();
    let state = AppState {
        storage: Some(AppStorage {
            app: app.into(),
            backend: Arc::clone(&backend),
        }),
        variables: Arc::new(Variables::new(variables)),
        ..AppState::default()
    };
    (state, backend, dir)
}

/// Recordings kept in memory.
#[derive(Default)]
struct KeptRecordings(Mutex<Vec<Recording>>);

impl RecordingStore for KeptRecordings {
    fn keep(
        &self,
        _session: &str,
        recording: Recording,
        _app_bytes: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>> {
        self.0.lock().unwrap().push(recording);
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Sends one command to a kv-probe session; its one-line answer.
async fn probe(session: &SessionHandle, command: &str) -> String {
    let response = session
        .http_request(request("POST", "/", command))
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{command}");
    String::from_utf8(response.body).unwrap()
}

async fn storage_counts_every_increment_of_two_sessions(language: &Language) {
    let (runtime, scenario) = language.load("kv-probe", Limits::default());
    let (app, _backend, _dir) = app_with_storage("shop", vec![]);
    let a = start_in(runtime, &scenario, "", app.clone()).await;
    let b = start_in(runtime, &scenario, "", app.clone()).await;
    let (first, second) = tokio::join!(
        probe(&a.session, "incr visits 1000"),
        probe(&b.session, "incr visits 1000")
    );
    let mut lasts = [first, second];
    lasts.sort();
    assert!(
        lasts[1] == "ok 2000",
        "one of them made the last increment: {lasts:?}"
    );
    assert!(lasts[0].starts_with("ok "), "{lasts:?}");
    assert_eq!(probe(&a.session, "get visits").await, "value 2000");
}

async fn storage_compare_and_set_loses_for_the_stale_writer(language: &Language) {
    let (runtime, scenario) = language.load("kv-probe", Limits::default());
    let (app, _backend, _dir) = app_with_storage("shop", vec![]);
    let a = start_in(runtime, &scenario, "", app.clone()).await;
    let b = start_in(runtime, &scenario, "", app).await;
    assert_eq!(probe(&a.session, "cas lock - a1").await, "swapped");
    assert_eq!(probe(&b.session, "cas lock - b1").await, "lost");
    assert_eq!(probe(&b.session, "cas lock a1 b2").await, "swapped");
    // a still believes the lock holds a1: it loses.
    assert_eq!(probe(&a.session, "cas lock a1 a2").await, "lost");
    assert_eq!(probe(&a.session, "get lock").await, "value b2");
}

async fn storage_keys_expire_and_stay_in_their_app(language: &Language) {
    let (runtime, scenario) = language.load("kv-probe", Limits::default());
    let (app, backend, _dir) = app_with_storage("shop", vec![]);
    let other = AppState {
        storage: Some(AppStorage {
            app: "rival".into(),
            backend,
        }),
        ..AppState::default()
    };
    let shop = start_in(runtime, &scenario, "", app).await;
    let rival = start_in(runtime, &scenario, "", other).await;
    assert_eq!(probe(&shop.session, "set menu/1 sales").await, "ok");
    assert_eq!(probe(&shop.session, "set menu/2 support").await, "ok");
    assert_eq!(probe(&shop.session, "set brief here 1").await, "ok");
    assert_eq!(probe(&shop.session, "get brief").await, "value here");
    assert_eq!(
        probe(&shop.session, "list menu/ 1").await,
        "keys menu/1 next menu/1"
    );
    assert_eq!(
        probe(&shop.session, "list menu/ 5 menu/1").await,
        "keys menu/2 next -"
    );
    assert_eq!(probe(&rival.session, "get menu/1").await, "none");
    assert_eq!(probe(&rival.session, "list - 10").await, "keys  next -");
    assert_eq!(probe(&rival.session, "del menu/1").await, "absent");
    assert_eq!(probe(&shop.session, "get menu/1").await, "value sales");
    // A one-second TTL: the key is gone once the second has passed.
    let expired = tokio::time::timeout(PATIENCE, async {
        loop {
            if probe(&shop.session, "get brief").await == "none" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    expired.await.expect("the key expired");
    assert_eq!(
        probe(&shop.session, "list - 10").await,
        "keys menu/1,menu/2 next -"
    );
}

async fn storage_refuses_past_its_limits_and_once_terminated(language: &Language) {
    let limits = Limits {
        storage_keys: 2,
        ..Limits::default()
    };
    let (runtime, scenario) = language.load("kv-probe", limits);
    let (app, _backend, _dir) = app_with_storage("shop", vec![]);
    let mut watched = start_in(runtime, &scenario, "", app).await;
    let session = watched.session.clone();
    let big = format!("set big {}", "x".repeat(2001));
    assert_eq!(
        probe(&session, &big).await,
        "refused rule: values are limited to 2000 bytes (got 2001)"
    );
    let long_key = format!("get {}", "k".repeat(201));
    assert_eq!(
        probe(&session, &long_key).await,
        "refused rule: keys are limited to 200 bytes (got 201)"
    );
    assert_eq!(
        probe(&session, "set t x 7776001").await,
        "refused rule: TTLs are limited to 7776000 seconds (90 days; got 7776001)"
    );
    assert_eq!(probe(&session, "set word text").await, "ok");
    assert_eq!(
        probe(&session, "incr word 1").await,
        "refused rule: the value of `word` is not an integer, so it cannot be incremented"
    );
    assert_eq!(probe(&session, "set second 2").await, "ok");
    assert_eq!(
        probe(&session, "set third 3").await,
        "refused quota: the app's storage holds its most keys (2)"
    );
    assert_eq!(probe(&session, "del second").await, "deleted");
    assert_eq!(probe(&session, "stop").await, "ok");
    watched.until_log("terminating: ok").await;
    watched
        .until_log(
            "terminated: refused phase: only the logger works once the session is terminated",
        )
        .await;
    let record = watched.finished().await;
    let refusals = &record.capabilities;
    assert_eq!(refusals.refused("storage"), 6, "{refusals:?}");
}

async fn variables_are_read_and_secrets_never_logged(language: &Language) {
    let (runtime, scenario) = language.load("kv-probe", Limits::default());
    let variables = vec![
        ("greeting", "hello", false),
        ("token", "s3cr3t-t0ken", true),
    ];
    let (app, _backend, _dir) = app_with_storage("shop", variables);
    let mut watched = start_in(runtime, &scenario, "", app).await;
    let session = watched.session.clone();
    assert_eq!(probe(&session, "var greeting").await, "value hello");
    assert_eq!(probe(&session, "var token").await, "value s3cr3t-t0ken");
    assert_eq!(
        probe(&session, "var nope").await,
        "refused unknown: the app has no variable named `nope`"
    );
    assert_eq!(probe(&session, "logvar greeting").await, "ok");
    assert_eq!(probe(&session, "logvar token").await, "ok");
    session.terminate().unwrap();
    let record = watched.finished().await;
    let logged = lines(&record, LogSource::Scenario);
    assert!(logged.contains(&"the value is hello"), "{logged:?}");
    assert!(logged.contains(&"the value is [secret]"), "{logged:?}");
    let everything = serde_json::to_string(&*record).unwrap();
    assert!(!everything.contains("s3cr3t"), "{everything}");
}

async fn visit_counter_counts_the_visits_of_every_session(language: &Language) {
    let (runtime, scenario) = language.load("visit-counter", Limits::default());
    let (app, _backend, _dir) = app_with_storage("site", vec![]);
    let first = start_in(runtime, &scenario, "", app.clone()).await;
    let second = start_in(runtime, &scenario, "", app).await;
    let mut counts = Vec::new();
    for session in [&first.session, &second.session, &first.session] {
        let response = session.http_request(request("GET", "/", "")).await.unwrap();
        assert_eq!(response.status, 200);
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        counts.push(body["visits"].as_i64().unwrap());
    }
    assert_eq!(counts, [1, 2, 3]);
}

async fn ivr_menu_reads_its_prompts_from_storage(language: &Language) {
    let (runtime, scenario) = language.load("ivr-menu", Limits::default());
    let (app, backend, _dir) = app_with_storage("ivr", vec![]);
    let quota = sessionbox::capabilities::storage::rules::quota(&Limits::default());
    let seeded = backend.set(
        "ivr",
        "menu/1",
        b"Sales, please hold.".to_vec(),
        None,
        quota,
    );
    seeded.await.unwrap();
    let mut watched = start_in(runtime, &scenario, "", app).await;
    let call = watched
        .session
        .incoming_call(IncomingCall::default())
        .unwrap();
    watched.until_event("CallPlaybackFinished").await;
    watched.session.remote_tone(call, "1").unwrap();
    watched.until_event("CallPlaybackFinished").await;
    watched.session.remote_tone(call, "#").unwrap();
    let record = watched.finished().await;
    assert_eq!(
        watched.seen,
        [
            "Started",
            "CallAlerting",
            "CallConnected",
            "CallPlaybackFinished",
            "CallToneReceived",
            "CallPlaybackFinished",
            "CallToneReceived",
            "CallDisconnected",
            "Terminating",
            "Terminated",
        ]
    );
    let uses = &record.capabilities.uses;
    assert_eq!(uses["storage"], 2, "`menu`, then `menu/1`: {uses:?}");
    assert_eq!(uses["calls"], 4, "answer, say, say, hangup: {uses:?}");
    assert_eq!(record.capabilities.refused("storage"), 0);
}

/// The everyday flow: a menu, a key, an agent dialed, connected and
/// recorded; hold and resume reach the scenario (`media-events`, 0.3.0).
async fn call_centre_connects_the_caller_to_an_agent(language: &Language) {
    let (runtime, scenario) = language.load("call-centre", Limits::default());
    let kept = Arc::new(KeptRecordings::default());
    let app = AppState {
        recordings: Some(Arc::clone(&kept) as Arc<dyn RecordingStore>),
        ..AppState::default()
    };
    let mut watched = start_in(runtime, &scenario, "", app).await;
    let caller = watched
        .session
        .incoming_call(IncomingCall::default())
        .unwrap();
    watched.until_event("CallPlaybackFinished").await;
    watched.session.remote_hold(caller, true).unwrap();
    watched.until_event("CallHeld").await;
    watched.session.remote_hold(caller, false).unwrap();
    watched.until_event("CallResumed").await;
    watched.session.remote_tone(caller, "1").unwrap();
    // Calls are answered in process here: the agent connects at once.
    watched.until_event("CallConnected").await;
    watched.session.remote_hangup(caller).unwrap();
    let record = watched.finished().await;
    assert_eq!(
        watched.seen[..10],
        [
            "Started",
            "CallAlerting",
            "CallConnected",
            "CallPlaybackFinished",
            "CallHeld",
            "CallResumed",
            "CallToneReceived",
            "CallPlaybackFinished",
            "CallConnected",
            "CallDisconnected",
        ]
    );
    // The session ends once its recording is kept. The agent's call, hung
    // up by the scenario, may end before that or with the session.
    let rest: Vec<&str> = (watched.seen[10..].iter())
        .copied()
        .filter(|&event| event != "CallDisconnected")
        .collect();
    assert_eq!(rest, ["RecordingFinished", "Terminating", "Terminated"]);
    let said = lines(&record, LogSource::Scenario);
    assert_eq!(
        said[..4],
        [
            format!("call {caller} is on hold"),
            format!("call {caller} is off hold"),
            "dialing sales".into(),
            "caller and agent connected".into(),
        ]
    );
    let kept = kept.0.lock().unwrap();
    let [recording] = &kept[..] else {
        panic!("one recording: {kept:?}");
    };
    assert_eq!(
        (recording.id, recording.call, recording.channels),
        (1, caller, 2)
    );
    assert_eq!(
        said[4..],
        [format!(
            "recording 1 kept: {} ms",
            recording.duration.as_millis()
        )]
    );
    let uses = &record.capabilities.uses;
    assert_eq!(
        uses["calls"], 7,
        "answer, say the menu, say 'connecting', dial, connect, record, hang up the agent: {uses:?}"
    );
    assert_eq!(record.capabilities.refused("calls"), 0);
    let host = lines(&record, LogSource::Host);
    let agent = CallId::MAX;
    for said in [
        format!("calls {caller} and {agent} are connected"),
        format!("calls {caller} and {agent} are no longer connected"),
    ] {
        assert!(host.contains(&said.as_str()), "{said:?} in {host:?}");
    }
}

async fn webhook_posts_with_its_secret_token_and_never_logs_it(language: &Language) {
    let (url, mut received) = webhook::start().await;
    let (runtime, scenario) = language.load("webhook", loopback_allowed());
    let variables = vec![
        ("webhook_url", url.as_str(), false),
        ("webhook_token", "t0ken-of-the-app", true),
    ];
    let (app, _backend, _dir) = app_with_storage("hooks", variables);
    let mut watched = start_in(runtime, &scenario, "order-7", app).await;
    let id = watched.session.id().to_owned();
    watched.session.terminate().unwrap();
    let record = watched.finished().await;

    let hook = received.recv().await.expect("the webhook was called");
    assert_eq!(hook.method, "POST");
    assert_eq!(
        hook.authorization.as_deref(),
        Some("Bearer t0ken-of-the-app")
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&hook.body).unwrap(),
        serde_json::json!({"session": id, "custom_data": "order-7"})
    );
    let log = lines(&record, LogSource::Scenario);
    assert_eq!(log, [format!("notified {url}: 200")]);
    let everything = serde_json::to_string(&*record).unwrap();
    assert!(!everything.contains("t0ken"), "{everything}");
}
