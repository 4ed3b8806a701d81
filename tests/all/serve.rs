//! `sessionbox serve` end to end, through real sockets: the management API
//! with an HTTP client, access URLs with HTTP and WebSocket clients, the
//! history across restarts, graceful shutdown, and the README's curl tour.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::support::server::{InProcess, probe_over_http, start_over_api};
use crate::support::*;
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sessionbox::config::Config;
use sessionbox::{Limits, SessionHandle};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const ACME: &str = "acme-key-0001";
const GLOBEX: &str = "globex-key-0002";
const TINY: &str = "tiny-key-0003";
const LEAN: &str = "lean-key-0004";

fn config_text(dir: &Path) -> String {
    format!(
        r#"
[server]
database = "{db}"
shutdown_deadline = 5000
max_body_bytes = 4096
# The reload test calls the reload itself.
watch_scenarios = 0

[tenants.acme]
api_keys = ["{ACME}"]

[tenants.globex]
api_keys = ["{GLOBEX}"]

[apps.remote]
tenant = "acme"
scenario = "{remote}"

[apps.hello]
tenant = "acme"
scenario = "{hello}"

[apps.support]
tenant = "acme"
scenario = "{calls}"
limits = {{ idle_timeout = 200 }}

[apps.theirs]
tenant = "globex"
scenario = "{hello}"

[apps.swap]
tenant = "acme"
scenario = "{swap}"

[tenants.tiny]
api_keys = ["{TINY}"]
quota = {{ max_sessions = 1 }}

[apps.tiny]
tenant = "tiny"
scenario = "{hello}"

[tenants.lean]
api_keys = ["{LEAN}"]
quota = {{ memory_bytes = 65536 }}

[apps.lean]
tenant = "lean"
scenario = "{hello}"

[apps.counter]
tenant = "acme"
scenario = "{counter}"

[apps.probe]
tenant = "acme"
scenario = "{probe}"
"#,
        counter = guest_path("visit-counter").display(),
        probe = guest_path("kv-probe").display(),
        db = dir.join("history.db").display(),
        remote = guest_path("remote-control").display(),
        hello = guest_path("hello").display(),
        calls = guest_path("call-handler").display(),
        swap = dir.join("swap.wasm").display(),
    )
}

/// A server in this process on a free port, and a client for it.
struct Running {
    serving: InProcess,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// The server's own fields (`server`, `url`) read through.
impl std::ops::Deref for Running {
    type Target = InProcess;

    fn deref(&self) -> &InProcess {
        &self.serving
    }
}

async fn serve() -> Running {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(guest_path("remote-control"), dir.path().join("swap.wasm")).unwrap();
    let config = Config::parse(&config_text(dir.path())).unwrap();
    Running {
        serving: InProcess::start(config).await,
        client: reqwest::Client::new(),
        _dir: dir,
    }
}

impl Running {
    /// The Prometheus text of `/metrics`.
    async fn metrics(&self) -> String {
        let response = self
            .client
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap();
        response.text().await.unwrap()
    }

    async fn start(&self, app: &str, key: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!("{}/v1/apps/{app}/sessions", self.url))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.url))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    /// The JSON a GET of `url` (an access URL and below) answers.
    async fn access_json(&self, url: &str) -> Value {
        let response = self.client.get(url).send().await.unwrap();
        response.json().await.unwrap()
    }

    /// A live session's handle, to wait on its end.
    fn handle(&self, id: &str) -> SessionHandle {
        self.server.session(id).expect("a live session")
    }

    /// Waits for a session to finish and for the history to have it.
    async fn finished(&self, handle: SessionHandle) {
        tokio::time::timeout(PATIENCE, handle.finished())
            .await
            .expect("the session finished in time")
            .unwrap();
        self.server.flush_history();
    }

    async fn stop(self) {
        self.serving.stop().await;
    }
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} in {value}"))
}

#[tokio::test]
async fn a_session_starts_answers_terminates_and_leaves_its_history() {
    let running = serve().await;
    let (status, started) = running
        .start("remote", ACME, json!({"custom_data": "hi"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let id = str_of(&started, "session_id").to_owned();
    let access = str_of(&started, "access_url").to_owned();
    let handle = running.handle(&id);
    assert!(access.starts_with(&format!("{}/s/{id}", running.url)));
    assert_eq!(
        access.len() - running.url.len() - 3,
        64,
        "id + 128-bit secret"
    );
    assert_eq!(
        str_of(&started, "log_url"),
        format!("{}/v1/sessions/{id}/log", running.url)
    );

    // Any method and path below the access URL is an HttpRequest.
    let status = running
        .access_json(&format!("{access}/status?verbose=1"))
        .await;
    assert_eq!(
        status,
        json!({"session": id, "requests": 1, "custom_data": "hi"})
    );
    // The path arrives as the client sent it, not percent-decoded.
    let missing = running
        .client
        .delete(format!("{access}/no%20pe/a%2Fb"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        missing.text().await.unwrap(),
        r#"{"error":"no route for DELETE /no%20pe/a%2Fb"}"#
    );

    let (_, live) = running.get(&format!("/v1/sessions/{id}"), ACME).await;
    assert_eq!(live["state"], "live");
    let stop = running
        .client
        .post(format!("{access}/stop"))
        .send()
        .await
        .unwrap();
    assert_eq!(stop.status(), StatusCode::OK);
    running.finished(handle).await;

    let (status, session) = running.get(&format!("/v1/sessions/{id}"), ACME).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(session["state"], "finished");
    assert_eq!(session["app"], "remote");
    assert_eq!(session["finish_reason"], "terminate");
    assert_eq!(
        session["events"],
        json!({"HttpRequest": 3, "Started": 1, "Terminating": 1, "Terminated": 1})
    );
    assert!(session["ended_at_ms"].as_u64() >= session["started_at_ms"].as_u64());
    let (_, log) = running.get(&format!("/v1/sessions/{id}/log"), ACME).await;
    let lines: Vec<&str> = log["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| line["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            "GET /status?verbose=1 -> 200",
            "DELETE /no%20pe/a%2Fb -> 404",
            "stopping",
            "POST /stop -> 200",
            "terminating",
            "terminated",
            "session finished: terminated: the scenario called terminate()",
        ]
    );
    let (_, listed) = running
        .get("/v1/sessions?app=remote&finish_reason=terminate", ACME)
        .await;
    assert_eq!(listed["sessions"][0]["session_id"], id.as_str());

    // The access URL of a finished session is gone, not unknown.
    let gone = running
        .client
        .get(format!("{access}/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::GONE);
    running.stop().await;
}

#[tokio::test]
async fn bad_requests_get_a_json_error_and_create_nothing() {
    let running = serve().await;
    let url = &running.url;
    let client = &running.client;
    let error = |value: Value| value["error"].as_str().unwrap().to_owned();

    let no_key = client
        .post(format!("{url}/v1/apps/remote/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        error(no_key.json().await.unwrap()),
        "missing API key: send Authorization: Bearer <key>"
    );
    let (status, body) = running.start("remote", "not-a-key", json!({})).await;
    assert_eq!(
        (status, error(body)),
        (StatusCode::UNAUTHORIZED, "unknown API key".into())
    );
    // Another tenant's app is no app at all.
    let (status, body) = running.start("theirs", ACME, json!({})).await;
    assert_eq!(
        (status, error(body)),
        (StatusCode::NOT_FOUND, "no app named \"theirs\"".into())
    );
    let (status, _) = running.start("nonexistent", ACME, json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let malformed = client
        .post(format!("{url}/v1/apps/remote/sessions"))
        .bearer_auth(ACME)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert!(error(malformed.json().await.unwrap()).starts_with("malformed JSON body"));
    let (status, body) = running
        .start("remote", ACME, json!({"custom_data": "x".repeat(201)}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error(body), "custom data is limited to 200 bytes (got 201)");
    let (status, body) = running
        .start("remote", ACME, json!({"custom": "typo"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error(body).contains("unknown field `custom`"));
    let huge = client
        .post(format!("{url}/v1/apps/remote/sessions"))
        .bearer_auth(ACME)
        .body(vec![b' '; 2 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let (status, body) = running.get("/v1/sessions?state=sleeping", ACME).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error(body).starts_with("state must be"));

    let (_, listed) = running.get("/v1/sessions", ACME).await;
    assert_eq!(listed["sessions"], json!([]), "nothing was half-created");

    // Access URLs: a wrong secret is indistinguishable from no session.
    let (_, started) = running.start("remote", ACME, json!({})).await;
    let access = str_of(&started, "access_url");
    let id = str_of(&started, "session_id");
    let wrong = format!("{url}/s/{id}{}", "0".repeat(32));
    for bad in [
        wrong.as_str(),
        &format!("{url}/s/{}", "f".repeat(64)),
        &format!("{url}/s/short"),
    ] {
        let response = client.get(format!("{bad}/status")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{bad}");
        assert_eq!(
            response.text().await.unwrap(),
            r#"{"error":"no such session"}"#
        );
    }
    assert!(
        client
            .get(format!("{access}/status"))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    // Another tenant cannot see or touch it.
    let (status, _) = running.get(&format!("/v1/sessions/{id}"), GLOBEX).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let delete = client
        .delete(format!("{url}/v1/sessions/{id}"))
        .bearer_auth(GLOBEX)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), StatusCode::NOT_FOUND);
    running.stop().await;
}

#[tokio::test]
async fn an_access_request_body_over_the_limit_gets_413_and_no_event() {
    let running = serve().await;
    let (_, started) = running.start("remote", ACME, json!({})).await;
    let access = str_of(&started, "access_url");
    let too_large = r#"{"error":"the request body is over 4096 bytes"}"#;

    let (host, path) = access
        .strip_prefix("http://")
        .and_then(|rest| rest.split_once('/'))
        .unwrap();
    // A request written as is, and the whole answer (the server closes).
    let exchange = async |head: &str, body: &str| {
        let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
        let request = format!(
            "POST /{path}/custom-data HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\
             {head}\r\n\r\n{body}"
        );
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::time::timeout(
            PATIENCE,
            tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut answer),
        )
        .await
        .expect("an answer without waiting for the body")
        .unwrap();
        answer
    };

    // Announced by Content-Length: refused before any of it is sent.
    let announced = exchange("content-length: 5000", "").await;
    assert!(announced.starts_with("HTTP/1.1 413"), "{announced}");
    assert!(announced.ends_with(too_large), "{announced}");

    // Chunked, no length announced: refused once the limit is passed.
    let chunk = "x".repeat(3000);
    let chunked = format!(
        "{len:x}\r\n{chunk}\r\n{len:x}\r\n{chunk}\r\n0\r\n\r\n",
        len = chunk.len()
    );
    let answer = exchange("transfer-encoding: chunked", &chunked).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.ends_with(too_large), "{answer}");

    // Neither reached the scenario; a request within the limit does.
    let status = running.access_json(&format!("{access}/status")).await;
    assert_eq!(status["requests"], 1);
}

#[tokio::test]
async fn websockets_beyond_calls_plus_three_are_refused_and_the_scenario_is_told() {
    let running = serve().await;
    let (_, started) = running.start("hello", ACME, json!({})).await;
    let id = str_of(&started, "session_id").to_owned();
    let handle = running.handle(&id);
    let ws_url = str_of(&started, "access_url").replacen("http://", "ws://", 1);

    let mut sockets = Vec::new();
    for n in 0..3 {
        let (socket, _) = tokio_tungstenite::connect_async(format!("{ws_url}/ws/{n}"))
            .await
            .expect("within calls + 3");
        sockets.push(socket);
    }
    // The scenario echoes what a client sends.
    sockets[0].send(WsMessage::text("ping")).await.unwrap();
    let echo = sockets[0].next().await.unwrap().unwrap();
    assert_eq!(echo, WsMessage::text("echo: ping"));

    let refused = tokio_tungstenite::connect_async(format!("{ws_url}/ws/3")).await;
    let Err(tokio_tungstenite::tungstenite::Error::Http(response)) = refused else {
        panic!("the fourth socket is refused: {refused:?}");
    };
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = serde_json::from_slice(response.body().as_ref().unwrap()).unwrap();
    assert!(
        str_of(&body, "error").contains("calls in the session + 3"),
        "{body}"
    );

    // The client closes one; the scenario hears of it.
    sockets[1].close(None).await.unwrap();
    let delete = running
        .client
        .delete(format!("{}/v1/sessions/{id}", running.url))
        .bearer_auth(ACME)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), StatusCode::ACCEPTED);
    // Terminating closes the others from the server's side.
    let closing = sockets[2].next().await.unwrap().unwrap();
    assert!(
        matches!(closing, WsMessage::Close(Some(ref f)) if u16::from(f.code) == 1001),
        "{closing:?}"
    );
    running.finished(handle).await;

    let (_, log) = running.get(&format!("/v1/sessions/{id}/log"), ACME).await;
    let text: Vec<String> = log["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        text.iter()
            .any(|l| l.starts_with("new-websocket-failed 3 incoming WebSockets are open")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|l| l.starts_with("websocket-message 1 text=ping")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|l| l.starts_with("websocket-closed 2 1005")),
        "{text:?}"
    );
    running.stop().await;
}

#[tokio::test]
async fn an_incoming_call_runs_through_the_call_api() {
    let running = serve().await;
    let call = |app: &str| {
        running
            .client
            .post(format!("{}/v1/apps/{app}/calls", running.url))
            .bearer_auth(ACME)
            .json(
                &json!({"from": "+15550100", "to": "+15550199", "display_name": "Ada",
                          "headers": {"X-Account": "7"}}),
            )
            .send()
    };
    // call-handler answers, plays, hangs up, then idles out (200 ms).
    let response = call("support").await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let started: Value = response.json().await.unwrap();
    assert_eq!(started["call_id"], 1);
    let id = str_of(&started, "session_id").to_owned();
    if let Some(handle) = running.server.session(&id) {
        running.finished(handle).await;
    } else {
        running.server.flush_history();
    }
    let (_, session) = running.get(&format!("/v1/sessions/{id}"), ACME).await;
    assert_eq!(session["finish_reason"], "idle_timeout");
    assert_eq!(session["events"]["CallAlerting"], 1);
    assert_eq!(session["events"]["CallDisconnected"], 1);

    // Follow-ups from the caller's side: hello keeps the call alerting.
    let started: Value = call("hello").await.unwrap().json().await.unwrap();
    let id = str_of(&started, "session_id").to_owned();
    let follow = |what: &str, body: Value| {
        running
            .client
            .post(format!("{}/v1/sessions/{id}/calls/1/{what}", running.url))
            .bearer_auth(ACME)
            .json(&body)
            .send()
    };
    let bad_tone = follow("tone", json!({"tone": "x"})).await.unwrap();
    assert_eq!(bad_tone.status(), StatusCode::BAD_REQUEST);
    // A call the session does not have is not found, whatever the action.
    for (action, body) in [
        ("hangup", json!({})),
        ("tone", json!({"tone": "5"})),
        ("message", json!({"text": "hi"})),
    ] {
        let unknown = running
            .client
            .post(format!("{}/v1/sessions/{id}/calls/2/{action}", running.url))
            .bearer_auth(ACME)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND, "{action}");
        let error: Value = unknown.json().await.unwrap();
        assert_eq!(error["error"], "the session has no live call 2", "{action}");
    }
    assert_eq!(
        follow("hangup", json!({})).await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    let handle = running.handle(&id);
    handle.terminate().unwrap();
    running.finished(handle).await;
    let (_, log) = running.get(&format!("/v1/sessions/{id}/log"), ACME).await;
    let lines = log["lines"].as_array().unwrap();
    assert_eq!(
        lines[2]["text"],
        "call-alerting caller=+15550100 destination=+15550199 display-name=Ada headers=1"
    );
    assert_eq!(lines[3]["text"], "call-disconnected 1");
    running.stop().await;
}

#[tokio::test]
async fn a_replaced_scenario_serves_new_sessions_and_live_ones_keep_theirs() {
    let running = serve().await;
    let (_, old) = running.start("remote", ACME, json!({})).await;
    let replace = |bytes: Vec<u8>| {
        running
            .client
            .put(format!("{}/v1/apps/remote/scenario", running.url))
            .bearer_auth(ACME)
            .body(bytes)
            .send()
    };
    let broken = replace(b"\0asm\x01\0\0\0".to_vec()).await.unwrap();
    assert_eq!(broken.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let swapped = replace(guest("hello")).await.unwrap();
    assert_eq!(swapped.status(), StatusCode::OK);
    let (_, new) = running.start("remote", ACME, json!({})).await;
    let body = |started: Value| {
        let client = running.client.clone();
        async move {
            client
                .get(format!("{}/status", str_of(&started, "access_url")))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    assert!(
        body(old).await.starts_with("{\"custom_data\""),
        "the live session kept remote-control"
    );
    assert_eq!(
        body(new).await,
        "hello GET /status",
        "the new session runs hello"
    );
    running.stop().await;
}

#[tokio::test]
async fn metrics_count_sessions_events_and_refusals() {
    let running = serve().await;
    let (_, started) = running
        .start("remote", ACME, json!({"custom_data": "m"}))
        .await;
    let access = str_of(&started, "access_url");
    running
        .client
        .post(format!("{access}/custom-data"))
        .body("y".repeat(300))
        .send()
        .await
        .unwrap();
    let metrics = running.metrics().await;
    for line in [
        "sessionbox_sessions_live 1",
        "sessionbox_sessions_started_total 1",
        "sessionbox_events_delivered_total{kind=\"Started\"} 1",
        "sessionbox_events_delivered_total{kind=\"HttpRequest\"} 1",
        "sessionbox_capability_refusals_total{capability=\"session\",phase=\"running\"} 1",
        "sessionbox_handler_seconds_count 2",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    running.stop().await;
}

/// The real binary, as a platform runs it.
struct Process {
    child: Child,
    stdout: BufReader<std::process::ChildStdout>,
    url: String,
}

impl Drop for Process {
    /// A failing test must not leave a server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_server(config: &Path, data_home: &Path) -> Process {
    if !config.as_os_str().is_empty() {
        let swap = config.parent().unwrap().join("swap.wasm");
        std::fs::copy(guest_path("remote-control"), swap).unwrap();
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_sessionbox"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(if config.as_os_str().is_empty() {
            vec![]
        } else {
            vec!["--config".into(), config.as_os_str().to_owned()]
        })
        .env("XDG_DATA_HOME", data_home)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let url = first
        .strip_prefix("sessionbox listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line: {first:?}"))
        .to_owned();
    Process { child, stdout, url }
}

fn signal(process: &Process, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &process.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn start_over_http(url: &str) -> String {
    let started = start_over_api(url, "remote", ACME).await;
    str_of(&started, "session_id").to_owned()
}

async fn session_over_http(url: &str, id: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{url}/v1/sessions/{id}"))
        .bearer_auth(ACME)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_crash_leaves_live_sessions_marked_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sessionbox.toml");
    std::fs::write(&config, config_text(dir.path())).unwrap();
    let mut first = spawn_server(&config, dir.path());
    // Killed the moment the start is answered: the session must already be
    // in the history (the server commits it before answering).
    let id = start_over_http(&first.url).await;
    signal(&first, "-KILL");
    first.child.wait().unwrap();

    let mut second = spawn_server(&config, dir.path());
    let session = session_over_http(&second.url, &id).await;
    assert_eq!(session["state"], "interrupted", "{session}");
    assert_eq!(session["finish_reason"], "interrupted");
    signal(&second, "-TERM");
    assert!(second.child.wait().unwrap().success());
}

#[tokio::test]
async fn graceful_shutdown_delivers_terminating_and_terminated() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sessionbox.toml");
    std::fs::write(&config, config_text(dir.path())).unwrap();
    let mut first = spawn_server(&config, dir.path());
    let id = start_over_http(&first.url).await;
    signal(&first, "-TERM");
    assert!(first.child.wait().unwrap().success(), "a clean exit");

    let mut second = spawn_server(&config, dir.path());
    let session = session_over_http(&second.url, &id).await;
    assert_eq!(session["state"], "finished", "{session}");
    assert_eq!(session["finish_reason"], "host");
    assert_eq!(session["events"]["Terminating"], 1);
    assert_eq!(session["events"]["Terminated"], 1);
    signal(&second, "-TERM");
    assert!(second.child.wait().unwrap().success());
}

/// The README's run command, and the curl lines it prints, pasted into a
/// shell as a newcomer would.
#[test]
fn the_printed_curl_tour_works() {
    let data_home = tempfile::tempdir().unwrap();
    let mut process = spawn_server(Path::new(""), data_home.path());
    let mut banner = String::new();
    while !banner.contains("\"$L?wait=true\"") {
        let read = process.stdout.read_line(&mut banner).unwrap();
        assert!(read > 0, "the banner ended early: {banner}");
    }
    let script: String = banner
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter(|line| {
            ["S=", "A=", "L=", "curl ", "sleep "]
                .iter()
                .any(|start| line.starts_with(start))
        })
        .map(|line| format!("{line}\n"))
        .collect();
    let output = Command::new("bash")
        .args(["-euc", &script])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        out.contains("\"custom_data\":\"hello\",\"requests\":1"),
        "{out}"
    );
    assert!(out.contains(r#"{"custom_data":"new data"}"#), "{out}");
    assert!(out.contains(r#"{"stopping":true}"#), "{out}");
    assert!(
        out.contains(r#""text":"terminated""#),
        "the log shows the end: {out}"
    );
    signal(&process, "-TERM");
    assert!(process.child.wait().unwrap().success());
}

#[tokio::test]
async fn a_tenant_at_its_quota_gets_429_naming_it() {
    let running = serve().await;
    let (status, first) = running.start("tiny", TINY, json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, refused) = running.start("tiny", TINY, json!({})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        refused["error"],
        "tenant tiny has 1 live sessions, its quota"
    );
    // Other tenants are not affected.
    let (status, _) = running.start("remote", ACME, json!({})).await;
    assert_eq!(status, StatusCode::CREATED);

    let handle = running.handle(str_of(&first, "session_id"));
    handle.terminate().unwrap();
    running.finished(handle).await;
    let (status, _) = running.start("tiny", TINY, json!({})).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "the quota frees with the session"
    );
    let metrics = running.metrics().await;
    assert!(
        metrics
            .contains(r#"sessionbox_quota_refusals_total{tenant="tiny",quota="max_sessions"} 1"#),
        "{metrics}"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_start_beyond_the_tenants_memory_quota_gets_429() {
    let running = serve().await;
    // hello's initial memory alone is more than this tenant's 64 KiB.
    let (status, refused) = running.start("lean", LEAN, json!({})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        refused["error"],
        "tenant lean's sessions use its guest memory quota (64 KiB)"
    );
    // Refused after its start was committed: gone from the history by the
    // time the refusal was answered.
    let (_, listed) = running.get("/v1/sessions", LEAN).await;
    assert_eq!(listed["sessions"], json!([]), "nothing half-created");
    let metrics = running.metrics().await;
    assert!(
        metrics
            .contains(r#"sessionbox_quota_refusals_total{tenant="lean",quota="memory_bytes"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("sessionbox_sessions_live 0"),
        "nothing left behind: {metrics}"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_changed_scenario_file_is_reloaded_if_it_validates() {
    let running = serve().await;
    let file = running._dir.path().join("swap.wasm");
    let (_, old) = running.start("swap", ACME, json!({})).await;
    let answer = |started: Value| {
        let client = running.client.clone();
        async move {
            let url = format!("{}/status", str_of(&started, "access_url"));
            client.get(url).send().await.unwrap().text().await.unwrap()
        }
    };
    // Nothing changed yet.
    assert!(running.server.reload_changed_scenarios().is_empty());

    // A broken file is not taken.
    std::fs::write(&file, b"not a component").unwrap();
    touch_later(&file, 10);
    assert!(running.server.reload_changed_scenarios().is_empty());
    let (_, still) = running.start("swap", ACME, json!({})).await;
    assert!(answer(still).await.starts_with("{\"custom_data\""));

    // A valid one is, for new sessions only.
    std::fs::copy(guest_path("hello"), &file).unwrap();
    touch_later(&file, 20);
    assert_eq!(running.server.reload_changed_scenarios(), ["swap"]);
    let (_, new) = running.start("swap", ACME, json!({})).await;
    assert_eq!(answer(new).await, "hello GET /status");
    assert!(
        answer(old).await.starts_with("{\"custom_data\""),
        "live sessions keep theirs"
    );
    running.stop().await;
}

/// Sets a file's modification time `secs` into the future, so that a change
/// is seen whatever the file system's timestamp resolution.
fn touch_later(path: &Path, secs: u64) {
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(secs);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(later)
        .unwrap();
}

#[tokio::test]
async fn operators_seed_and_inspect_an_apps_storage_and_only_their_own() {
    let running = serve().await;
    let client = &running.client;
    let url = |path: &str| format!("{}/v1/apps/{path}", running.url);
    let put = client
        .put(url("counter/storage/visits"))
        .bearer_auth(ACME)
        .body("41")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    let (status, started) = running.start("counter", ACME, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let counted = running.access_json(str_of(&started, "access_url")).await;
    assert_eq!(counted, json!({"visits": 42}));

    let got = client
        .get(url("counter/storage/visits"))
        .bearer_auth(ACME)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.bytes().await.unwrap(), "42");
    let (status, listed) = running
        .get("/v1/apps/counter/storage?prefix=vis", ACME)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["keys"], json!(["visits"]), "{listed}");
    let bytes = "visits".len() + "42".len();
    assert_eq!(
        listed["usage"],
        json!({"keys": 1, "bytes": bytes}),
        "{listed}"
    );
    // Another tenant's key reaches nothing, and the apps' stores are apart.
    let (status, _) = running.get("/v1/apps/counter/storage/visits", GLOBEX).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = running.get("/v1/apps/probe/storage/visits", ACME).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let too_big = client
        .put(url("counter/storage/big"))
        .bearer_auth(ACME)
        .body("x".repeat(2001))
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), StatusCode::BAD_REQUEST);
    let error: Value = too_big.json().await.unwrap();
    assert_eq!(
        error["error"],
        "values are limited to 2000 bytes (got 2001)"
    );
    let bad_ttl = client
        .put(url("counter/storage/menu/1?ttl=0"))
        .bearer_auth(ACME)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_ttl.status(), StatusCode::BAD_REQUEST);

    let deleted: Value = client
        .delete(url("counter/storage/visits"))
        .bearer_auth(ACME)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(deleted["deleted"], true);
    let (status, error) = running.get("/v1/apps/counter/storage/visits", ACME).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{error}");
    running.stop().await;
}

#[tokio::test]
async fn a_set_that_returned_ok_survives_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sessionbox.toml");
    std::fs::write(&config, config_text(dir.path())).unwrap();
    let mut first = spawn_server(&config, dir.path());
    let client = reqwest::Client::new();
    let started = start_over_api(&first.url, "probe", ACME).await;
    let access = str_of(&started, "access_url");
    for n in 0..20 {
        let answer = probe_over_http(access, format!("set key{n} value{n}")).await;
        assert_eq!(answer, "ok");
    }
    signal(&first, "-KILL");
    first.child.wait().unwrap();

    let mut second = spawn_server(&config, dir.path());
    for n in 0..20 {
        let value = client
            .get(format!("{}/v1/apps/probe/storage/key{n}", second.url))
            .bearer_auth(ACME)
            .send()
            .await
            .unwrap();
        assert_eq!(value.status(), StatusCode::OK, "key{n}");
        assert_eq!(value.text().await.unwrap(), format!("value{n}"));
    }
    signal(&second, "-TERM");
    assert!(second.child.wait().unwrap().success());
}

#[tokio::test]
async fn a_scenario_built_for_the_0_1_0_world_still_runs() {
    let bundled = sessionbox::server::BUNDLED_SCENARIO;
    let wit = wit_component::decode(bundled).expect("the bundled scenario is a component");
    let resolve = wit.resolve();
    let versions: Vec<String> = resolve
        .packages
        .iter()
        .filter(|(_, package)| package.name.name == "scenario")
        .filter_map(|(_, package)| package.name.version.as_ref().map(ToString::to_string))
        .collect();
    assert_eq!(versions, ["0.1.0"], "the fixture is built for 0.1.0");

    let runtime = runtime();
    let scenario = runtime
        .load("remote-control-0.1.0", bundled, Limits::default())
        .unwrap();
    let watched = start(&runtime, &scenario, "old").await;
    let session = watched.session.clone();
    let status = session
        .http_request(request("GET", "/status", ""))
        .await
        .unwrap();
    let status: Value = serde_json::from_slice(&status.body).unwrap();
    assert_eq!(status["custom_data"], "old", "{status}");
    let too_long = session
        .http_request(request("POST", "/custom-data", &"x".repeat(201)))
        .await
        .unwrap();
    assert_eq!(too_long.status, 400);
    let error: Value = serde_json::from_slice(&too_long.body).unwrap();
    assert_eq!(
        error["error"],
        "session refused in running: custom data is limited to 200 bytes (got 201)"
    );
    session.terminate().unwrap();
    let record = tokio::time::timeout(PATIENCE, session.finished())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.delivered("Terminated"), 1);
}

#[tokio::test]
async fn sigterm_drains_live_sessions_end_on_their_own_and_the_process_exits() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sessionbox.toml");
    let text = config_text(dir.path()).replace(
        "shutdown_deadline = 5000",
        "shutdown_deadline = 5000\ndrain_deadline = 600000",
    );
    std::fs::write(&config, text).unwrap();
    let mut first = spawn_server(&config, dir.path());
    let started = start_over_api(&first.url, "remote", ACME).await;
    let id = str_of(&started, "session_id").to_owned();
    signal(&first, "-TERM");

    // Draining: not ready, no new sessions, but the live one is served.
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + PATIENCE;
    while client
        .get(format!("{}/readyz", first.url))
        .send()
        .await
        .unwrap()
        .status()
        == StatusCode::OK
    {
        assert!(std::time::Instant::now() < deadline, "readiness stayed 200");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let refused = client
        .post(format!("{}/v1/apps/remote/sessions", first.url))
        .bearer_auth(ACME)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let stop = client
        .post(format!("{}/stop", str_of(&started, "access_url")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        stop.status(),
        StatusCode::OK,
        "the access URL is served while draining"
    );

    // Its last session over, the process exits long before the deadline.
    let exited = tokio::task::spawn_blocking(move || first.child.wait().unwrap());
    let status = tokio::time::timeout(PATIENCE, exited)
        .await
        .expect("the process exited once its sessions ended")
        .unwrap();
    assert!(status.success());
    let mut second = spawn_server(&config, dir.path());
    let session = session_over_http(&second.url, &id).await;
    assert_eq!(session["state"], "finished", "{session}");
    assert_eq!(
        session["finish_reason"], "terminate",
        "it ended on its own: {session}"
    );
    signal(&second, "-TERM");
    assert!(second.child.wait().unwrap().success());
}
