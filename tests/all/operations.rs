//! The server against a careless network and a failing disk, through real
//! sockets: slow and idle clients, too many connections, a shutdown while a
//! client holds a half-sent request, and a disk that fills up.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::support::server::{InProcess, probe_over_http, start_over_api};
use crate::support::*;
use reqwest::StatusCode;
use serde_json::Value;
use sessionbox::config::Config;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "ops-key-0001";

/// A server in this process with `server_settings` (short client
/// timeouts, say).
async fn serve(database: &Path, server_settings: &str) -> InProcess {
    let config = Config::parse(&format!(
        r#"
[server]
database = "{db}"
watch_scenarios = 0
{server_settings}
[tenants.ops]
api_keys = ["{KEY}"]
[apps.remote]
tenant = "ops"
scenario = "{remote}"
[apps.probe]
tenant = "ops"
scenario = "{probe}"
"#,
        db = database.display(),
        remote = guest_path("remote-control").display(),
        probe = guest_path("kv-probe").display(),
    ))
    .unwrap();
    InProcess::start(config).await
}

/// Reads until the server closes the connection; what it sent.
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    });
    read.await
        .expect("the server closed the connection in time");
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn a_client_that_trickles_its_head_is_cut_off_and_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let running = serve(&dir.path().join("h.db"), "header_read_timeout = 300").await;
    let mut slow = TcpStream::connect(running.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let healthy = reqwest::get(format!("{}/healthz", running.url))
        .await
        .unwrap();
    assert_eq!(healthy.status(), StatusCode::OK);
    let sent = until_closed(&mut slow).await;
    assert!(!sent.contains("200 OK"), "{sent}");
    running.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let running = serve(&dir.path().join("h.db"), "idle_timeout = 300").await;
    let mut idle = TcpStream::connect(running.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answered = until_closed(&mut idle).await;
    assert!(answered.starts_with("HTTP/1.1 200 OK"), "{answered}");
    assert!(answered.ends_with(r#"{"status":"ok"}"#), "{answered}");
    running.stop().await;
}

#[tokio::test]
async fn a_body_that_does_not_arrive_gets_408_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let running = serve(&dir.path().join("h.db"), "body_read_timeout = 300").await;
    let (_, access) = start(&running.url).await;
    let access_path = access.strip_prefix(&running.url).unwrap().to_owned();
    for path in [
        "/v1/apps/remote/sessions".to_owned(),
        format!("{access_path}/custom-data"),
    ] {
        let mut stream = TcpStream::connect(running.addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\
             Content-Length: 100\r\n\r\n{{\"custom"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let answer = until_closed(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(
            answer.ends_with(r#"{"error":"the request body did not arrive in time"}"#),
            "{path}: {answer}"
        );
    }
    running.stop().await;
}

#[tokio::test]
async fn connections_past_the_limit_get_503_and_the_others_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let running = serve(&dir.path().join("h.db"), "max_connections = 2").await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(running.addr).await.unwrap();
        // A request answered on each shows the connection was taken.
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(stream);
    }
    let mut refused = TcpStream::connect(running.addr).await.unwrap();
    let answer = until_closed(&mut refused).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("connection limit"), "{answer}");
    // The connections that were let in are served as before.
    held[0]
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut held[0]).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    running.stop().await;
}

#[tokio::test]
async fn sigterm_ends_the_process_by_its_deadline_while_a_client_holds_a_half_sent_request() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
database = "{db}"
shutdown_deadline = 1000
header_read_timeout = 600000
[tenants.ops]
api_keys = ["{KEY}"]
"#,
            db = dir.path().join("h.db").display()
        ),
    )
    .unwrap();
    // Killed if the test fails: no server is left behind.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sessionbox"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut first = String::new();
    tokio::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .await
        .unwrap();
    let url = first
        .strip_prefix("sessionbox listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{first:?}"))
        .to_owned();
    let mut half = TcpStream::connect(url.strip_prefix("http://").unwrap())
        .await
        .unwrap();
    half.write_all(b"POST /v1/apps/x/sessions HTTP/1.1\r\nHost: x\r\nContent-")
        .await
        .unwrap();
    // Seen by the server: a request answered on another connection comes
    // after the half-sent one was accepted.
    reqwest::get(format!("{url}/healthz")).await.unwrap();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("the server exited while the client held its request")
        .unwrap();
    assert!(status.success(), "{status}");
    let mut log = String::new();
    stderr.read_to_string(&mut log).await.unwrap();
    assert!(log.contains("HTTP connection capacity"), "{log}");
    assert!(log.contains("dropped"), "{log}");
}

/// Starts a session of `remote`; its id and access URL.
async fn start(url: &str) -> (String, String) {
    let answer = reqwest::Client::new()
        .post(format!("{url}/v1/apps/remote/sessions"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::CREATED);
    let started: Value = answer.json().await.unwrap();
    (
        started["session_id"].as_str().unwrap().to_owned(),
        started["access_url"].as_str().unwrap().to_owned(),
    )
}

/// A tmpfs of `size`, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("running mount");
        assert!(status.success(), "mounting a tmpfs (needs root)");
        Tmpfs(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// Fills `dir`'s file system, leaving about `spare` bytes; the filler file.
fn fill(dir: &Path, spare: u64) -> std::path::PathBuf {
    use std::io::Write;
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 16 << 10];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
    let written = std::fs::metadata(&filler).unwrap().len();
    file.set_len(written.saturating_sub(spare)).unwrap();
    filler
}

#[tokio::test]
async fn a_disk_that_fills_refuses_starts_and_loses_no_acknowledged_session() {
    // SAFETY: a plain getter.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let disk = Tmpfs::mount("2m");
    let database = disk.path().join("history.db");
    let running = serve(&database, "").await;
    let client = reqwest::Client::new();
    let filler = fill(disk.path(), 96 << 10);

    // Start sessions until the disk refuses: every 201 is a session the
    // history must keep.
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    while refused < 20 {
        assert!(acknowledged.len() < 2_000, "the disk never filled");
        let answer = client
            .post(format!("{}/v1/apps/remote/sessions", running.url))
            .bearer_auth(KEY)
            .body(r#"{"custom_data":"a session the history must keep"}"#)
            .send()
            .await
            .unwrap();
        match answer.status() {
            StatusCode::CREATED => {
                let started: Value = answer.json().await.unwrap();
                let id = started["session_id"].as_str().unwrap().to_owned();
                let access = started["access_url"].as_str().unwrap().to_owned();
                acknowledged.push((id, access));
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                let error: Value = answer.json().await.unwrap();
                let error = error["error"].as_str().unwrap();
                assert!(error.starts_with("the session was not started"), "{error}");
                refused += 1;
            }
            other => panic!("a start answered {other}"),
        }
    }
    // They end now, on a full disk: their records are held in memory.
    for (_, access) in &acknowledged {
        let stop = client.post(format!("{access}/stop")).send().await.unwrap();
        assert_eq!(stop.status(), StatusCode::OK);
    }
    for (id, _) in &acknowledged {
        let handle = running.server.session(id);
        if let Some(handle) = handle {
            tokio::time::timeout(PATIENCE, handle.finished())
                .await
                .unwrap()
                .unwrap();
        }
    }
    let ready = client
        .get(format!("{}/readyz", running.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert!(
        ready["history"]["held_writes"].as_u64() >= Some(1),
        "{ready}"
    );
    // Every acknowledged session reads as finished, held or written.
    for (id, _) in &acknowledged {
        let (status, session) = get(&client, &running.url, id).await;
        assert_eq!(status, StatusCode::OK, "{id}");
        assert_eq!(session["state"], "finished", "{id}: {session}");
    }

    // Room again: everything held is written.
    std::fs::remove_file(&filler).unwrap();
    // A flush answers once everything held before it is written (it is
    // tried again every second).
    let server = Arc::clone(&running.server);
    tokio::time::timeout(
        PATIENCE,
        tokio::task::spawn_blocking(move || server.flush_history()),
    )
    .await
    .expect("the history caught up once the disk had room")
    .unwrap();
    let ready = client
        .get(format!("{}/readyz", running.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK, "ready again");
    running.stop().await;

    // A new server on the same database has every one of them.
    let running = serve(&database, "").await;
    for (id, _) in &acknowledged {
        let (status, session) = get(&client, &running.url, id).await;
        assert_eq!(status, StatusCode::OK, "{id} is in the history");
        assert_eq!(session["state"], "finished", "{id}: {session}");
    }
    running.stop().await;
    eprintln!(
        "{} sessions acknowledged, {refused} starts refused while the disk was full",
        acknowledged.len()
    );
}

async fn get(client: &reqwest::Client, url: &str, id: &str) -> (StatusCode, Value) {
    let answer = client
        .get(format!("{url}/v1/sessions/{id}"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    (answer.status(), answer.json().await.unwrap())
}

#[tokio::test]
async fn a_disk_that_fills_refuses_storage_writes_as_full_and_loses_nothing_stored() {
    // SAFETY: a plain getter.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let disk = Tmpfs::mount("2m");
    let history = tempfile::tempdir().unwrap();
    let storage = format!("storage = \"{}\"", disk.path().join("storage.db").display());
    let running = serve(&history.path().join("history.db"), &storage).await;
    let started = start_over_api(&running.url, "probe", KEY).await;
    let access = started["access_url"].as_str().unwrap();
    let probe = |command| probe_over_http(access, command);
    assert_eq!(probe("set kept before".into()).await, "ok");
    let filler = fill(disk.path(), 64 << 10);

    // Writes of a whole value each, until the disk has no room for one.
    let value = "v".repeat(2_000);
    let mut stored = Vec::new();
    let refusal = loop {
        assert!(stored.len() < 2_000, "the disk never filled");
        let key = format!("k{}", stored.len());
        match probe(format!("set {key} {value}")).await.as_str() {
            "ok" => stored.push(key),
            refusal => break refusal.to_owned(),
        }
    };
    assert_eq!(
        refusal,
        "refused full: the storage is full: its disk has no room left"
    );
    assert!(!stored.is_empty(), "some writes fit before the disk filled");
    // The session goes on, and reads what was stored.
    assert_eq!(probe("get kept".into()).await, "value before");
    for key in &stored {
        assert_eq!(probe(format!("get {key}")).await, format!("value {value}"));
    }
    std::fs::remove_file(filler).unwrap();
    assert_eq!(probe("set after room".into()).await, "ok");
    assert_eq!(probe("get after".into()).await, "value room");
    running.stop().await;
    // Everything stored is on the disk, not only in the cache (read once
    // the server's storage thread has let go of the file).
    let count = || -> rusqlite::Result<i64> {
        let db = rusqlite::Connection::open(disk.path().join("storage.db"))?;
        db.query_row("SELECT count(*) FROM kv WHERE app = 'probe'", [], |r| {
            r.get(0)
        })
    };
    let keys = tokio::time::timeout(PATIENCE, async {
        loop {
            match count() {
                Ok(keys) => return keys,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });
    // `kept`, `after`, what filled the disk, and what kv-probe saves in
    // Terminating.
    assert_eq!(keys.await.unwrap() as usize, stored.len() + 3);
}
