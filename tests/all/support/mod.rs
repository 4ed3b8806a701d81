//! Shared by the integration tests: the guests, a runtime, and ways to wait
//! for what a session does without sleeping.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sessionbox::bindings::{Header, HttpRequestEvent};
use sessionbox::capabilities::AppState;
use sessionbox::log::LogSource;
use sessionbox::{
    EngineConfig, Limits, Notice, Runtime, Scenario, SessionHandle, SessionRecord, StartOptions,
};
use tokio::sync::mpsc;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A guest component built by `guest-examples/rust/build.sh`.
pub fn guest_path(name: &str) -> PathBuf {
    let path = repo_root()
        .join("target/guests")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the guests first (guest-examples/rust/build.sh, or scripts/test.sh)",
        path.display()
    );
    path
}

pub fn guest(name: &str) -> Vec<u8> {
    std::fs::read(guest_path(name)).expect("reading a guest")
}

/// A runtime sized for tests, without a disk cache.
pub fn runtime() -> Runtime {
    let config = EngineConfig {
        max_sessions: 32,
        ..EngineConfig::default()
    };
    Runtime::new(config).expect("creating a runtime")
}

pub fn load(runtime: &Runtime, name: &str, limits: Limits) -> Arc<Scenario> {
    runtime
        .load(name, &guest(name), limits)
        .unwrap_or_else(|e| panic!("loading {name}: {e:#}"))
}

/// A session started with an observer, and the notices it sends.
pub struct Watched {
    pub session: SessionHandle,
    pub notices: mpsc::UnboundedReceiver<Notice>,
    /// Every event name seen so far, in order.
    pub seen: Vec<&'static str>,
}

pub async fn start(runtime: &Runtime, scenario: &Arc<Scenario>, custom_data: &str) -> Watched {
    start_in(runtime, scenario, custom_data, AppState::default()).await
}

/// [`start`] for a session of an app with storage or variables.
pub async fn start_in(
    runtime: &Runtime,
    scenario: &Arc<Scenario>,
    custom_data: &str,
    app: AppState,
) -> Watched {
    let (observer, notices) = mpsc::unbounded_channel();
    let options = StartOptions {
        custom_data: custom_data.into(),
        observer: Some(observer),
        app,
        ..StartOptions::default()
    };
    let session = runtime
        .start(scenario, options)
        .await
        .expect("starting a session");
    Watched {
        session,
        notices,
        seen: Vec::new(),
    }
}

/// A test waits this long for something a session does before it fails;
/// it is a guard against hanging, not a timing assertion.
pub const PATIENCE: Duration = Duration::from_secs(20);

impl Watched {
    /// Waits until the event `name` is delivered.
    pub async fn until_event(&mut self, name: &str) {
        self.until(|notice| matches!(notice, Notice::Event { name: n, .. } if *n == name))
            .await
            .unwrap_or_else(|| panic!("the session ended before {name} (saw {:?})", self.seen));
    }

    /// Waits until a log line containing `text` appears.
    pub async fn until_log(&mut self, text: &str) {
        self.until(|notice| matches!(notice, Notice::Log(line) if line.text.contains(text)))
            .await
            .unwrap_or_else(|| panic!("the session ended before logging {text:?}"));
    }

    /// Waits for the record.
    pub async fn finished(&mut self) -> Arc<SessionRecord> {
        let record = tokio::time::timeout(PATIENCE, self.session.finished())
            .await
            .expect("the session did not finish in time")
            .expect("the session has a record");
        // Drain what is left so `seen` is complete.
        while let Ok(notice) = self.notices.try_recv() {
            self.note(&notice);
        }
        record
    }

    async fn until(&mut self, wanted: impl Fn(&Notice) -> bool) -> Option<Notice> {
        tokio::time::timeout(PATIENCE, async {
            while let Some(notice) = self.notices.recv().await {
                self.note(&notice);
                if wanted(&notice) {
                    return Some(notice);
                }
            }
            None
        })
        .await
        .expect("timed out waiting on a session")
    }

    fn note(&mut self, notice: &Notice) {
        if let Notice::Event { name, .. } = notice {
            self.seen.push(name);
        }
    }
}

pub fn request(method: &str, path: &str, body: &str) -> HttpRequestEvent {
    HttpRequestEvent {
        method: method.into(),
        path: path.into(),
        headers: vec![header("x-test", "1")],
        body: body.as_bytes().to_vec(),
    }
}

pub fn header(name: &str, value: &str) -> Header {
    Header {
        name: name.into(),
        value: value.into(),
    }
}

/// The log lines of one source, in order.
pub fn lines(record: &SessionRecord, source: LogSource) -> Vec<&str> {
    record
        .log
        .lines
        .iter()
        .filter(|line| line.source == source)
        .map(|line| line.text.as_str())
        .collect()
}

/// Limits with a short idle timeout, so idle sessions end quickly.
pub fn quick_idle(ms: u64) -> Limits {
    Limits {
        idle_timeout: Duration::from_millis(ms),
        ..Limits::default()
    }
}

/// Limits that let outbound HTTP reach the tests' servers on loopback.
pub fn loopback_allowed() -> Limits {
    Limits {
        http_allow_private: true,
        ..Limits::default()
    }
}

/// A guest whose http-request handler grows memory 1 MiB at a time until
/// growth is refused, then traps.
pub fn greedy() -> Vec<u8> {
    wat::scenario(
        &[(
            "http-request",
            "(loop (br_if 0 (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable",
        )],
        "",
        "",
    )
}

/// Samples in what flite says for `text` with the kal voice (8 kHz).
pub fn flite_samples(text: &str) -> usize {
    let output = std::process::Command::new("flite")
        .args(["-voice", "kal", "-t", text, "-o", "/dev/stdout"])
        .output()
        .expect("flite (scripts/test.sh installs it)");
    assert!(output.status.success());
    // A canonical 44-byte header, then 16-bit samples.
    (output.stdout.len() - 44) / 2
}

pub mod baresip;
pub mod haproxy;
pub mod history;
pub mod kamailio;
pub mod nodes;
pub mod origin;
pub mod postgres;
pub mod server;
pub mod sipp;
pub mod wat;
pub mod webhook;
