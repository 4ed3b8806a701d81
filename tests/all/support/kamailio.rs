//! Runs Kamailio (Debian's kamailio 5.6) with the deploy file
//! `deploy/kamailio/kamailio.cfg` in front of a set of SIP nodes, the way
//! production runs it: only the preprocessor defines differ.
//!
//! ```ignore
//! let proxy = Kamailio::start(&[node_a, node_b]).await; // answering OPTIONS when this returns
//! // ... calls to proxy.addr ...
//! proxy.until_nodes(&[node_a], &[node_b]).await;       // the dispatcher's view: a in rotation, b out
//! ```
//!
//! How it is run (a failure report shows the exact line):
//!
//! ```text
//! kamailio -f deploy/kamailio/kamailio.cfg -DD -E -m 64 -M 8 -w DIR -P DIR/kamailio.pid
//!     -A SIP_LISTEN=udp:127.0.0.1:PORT -A DISPATCHER_LIST="DIR/dispatcher.list"
//!     -A CTL_SOCKET="unix:DIR/ctl" -A DS_PING_INTERVAL=1 -A TM_FR_TIMER=1000 -A CHILDREN=2
//! ```
//!
//! - `-DD`: the main process stays in the foreground (its workers are its
//!   children); `-E`: the log goes to stderr, kept in DIR/kamailio.log.
//! - Its own process group: on SIGTERM Kamailio signals its workers, and a
//!   main process that does not exit in time is killed with its whole group
//!   (never the test's group).
//! - Probing every second, and 1 s without any answer counts as a failed
//!   request: a node that starts answering OPTIONS 503 (or nothing) leaves
//!   the rotation within about a second (two when silent), and comes back
//!   within a second of answering 200.
//! - The dispatcher's view comes from `kamcmd -s unix:DIR/ctl dispatcher.list`.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

/// How long `start` waits for Kamailio to answer, and `until_nodes` for the
/// dispatcher to agree: guards against hanging, not timing assertions.
const PATIENCE: Duration = Duration::from_secs(20);

/// Seconds between the dispatcher's OPTIONS probes (DS_PING_INTERVAL).
pub const PING_INTERVAL_S: u64 = 1;

/// Milliseconds without any answer before a request to a node has failed
/// (TM_FR_TIMER): also how long a call waits on a silent node before it is
/// moved on to the next one.
pub const NO_ANSWER_MS: u64 = 1000;

/// A running Kamailio; dropping it stops it.
pub struct Kamailio {
    /// Where it takes SIP over UDP (127.0.0.1).
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
    command_line: String,
}

/// A node as the dispatcher sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DispatcherNode {
    pub addr: SocketAddr,
    /// The dispatcher's two letters: A(ctive), I(nactive), T(rying) or
    /// D(isabled), then P (probed) or X (not probed).
    pub flags: String,
}

impl DispatcherNode {
    /// Whether new calls may be sent to it (active, or trying: failed once
    /// but not yet past the threshold).
    pub fn in_rotation(&self) -> bool {
        self.flags.starts_with('A') || self.flags.starts_with('T')
    }
}

impl Kamailio {
    /// Starts Kamailio on a free UDP port of 127.0.0.1 in front of `nodes`
    /// (dispatcher set 1), and waits until it answers an OPTIONS.
    pub async fn start(nodes: &[SocketAddr]) -> Kamailio {
        let mut last = String::new();
        // Another process may take the free port before Kamailio binds it:
        // Kamailio then exits, and another port is tried.
        for _ in 0..5 {
            match Self::try_start(nodes).await {
                Ok(kamailio) => return kamailio,
                Err(report) => last = report,
            }
        }
        panic!("Kamailio did not start:\n{last}")
    }

    async fn try_start(nodes: &[SocketAddr]) -> Result<Kamailio, String> {
        let dir = tempfile::Builder::new()
            .prefix("sessionbox-kamailio-")
            .tempdir()
            .map_err(|e| format!("creating a directory for Kamailio: {e}"))?;
        let path = |name: &str| dir.path().join(name).display().to_string();
        let mut list =
            String::from("# set destination (written by tests/all/support/kamailio.rs)\n");
        for node in nodes {
            let _ = writeln!(list, "1 sip:{node}");
        }
        std::fs::write(dir.path().join("dispatcher.list"), list)
            .map_err(|e| format!("writing the dispatcher list: {e}"))?;

        let port = free_udp_port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let config = crate::support::repo_root().join("deploy/kamailio/kamailio.cfg");
        let mut args: Vec<String> = vec![
            "-f".into(),
            config.display().to_string(),
            "-DD".into(),
            "-E".into(),
            "-m".into(),
            "64".into(),
            "-M".into(),
            "8".into(),
            "-w".into(),
            dir.path().display().to_string(),
            "-P".into(),
            path("kamailio.pid"),
        ];
        for define in [
            format!("SIP_LISTEN=udp:{addr}"),
            format!("DISPATCHER_LIST=\"{}\"", path("dispatcher.list")),
            format!("CTL_SOCKET=\"unix:{}\"", path("ctl")),
            format!("DS_PING_INTERVAL={PING_INTERVAL_S}"),
            format!("TM_FR_TIMER={NO_ANSWER_MS}"),
            "CHILDREN=2".into(),
        ] {
            args.extend(["-A".into(), define]);
        }
        let command_line = format!("kamailio {}", args.join(" "));
        let log = std::fs::File::create(dir.path().join("kamailio.log"))
            .map_err(|e| format!("creating Kamailio's log: {e}"))?;
        let stdout = log
            .try_clone()
            .map_err(|e| format!("creating Kamailio's log: {e}"))?;
        let child = Command::new(system_binary("kamailio"))
            .args(&args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot run kamailio (is the kamailio package installed?): {e}\n{command_line}"
                )
            })?;
        let mut kamailio = Kamailio {
            addr,
            child,
            dir,
            command_line,
        };
        kamailio.until_answering().await?;
        Ok(kamailio)
    }

    /// Sends OPTIONS until Kamailio answers 200, or fails when it exits
    /// (its port taken) or does not answer in time.
    async fn until_answering(&mut self) -> Result<(), String> {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| format!("binding a probe socket: {e}"))?;
        let deadline = Instant::now() + PATIENCE;
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.report(&format!("kamailio exited ({status}) before answering")));
            }
            if Instant::now() >= deadline {
                return Err(self.report("kamailio did not answer OPTIONS in time"));
            }
            let request = request("OPTIONS", self.addr, &socket, attempt, 70, &[]);
            // Each probe waits a little for its answer: Kamailio answers
            // within milliseconds once its workers run.
            match exchange(&socket, self.addr, &request, Duration::from_millis(200)).await {
                Some(answer) if status_code(&answer) == Some(200) => return Ok(()),
                Some(answer) => {
                    return Err(self.report(&format!("kamailio answered OPTIONS with:\n{answer}")));
                }
                None => continue,
            }
        }
    }

    /// Sends one out-of-dialog request to the proxy (see [`ask`]); the
    /// status code of its answer, None without one within 2 s.
    pub async fn ask(&self, method: &str, max_forwards: u32, extra: &[&str]) -> Option<u16> {
        ask(
            self.addr,
            method,
            max_forwards,
            extra,
            Duration::from_secs(2),
        )
        .await
    }

    /// The dispatcher's nodes and their state, from `kamcmd dispatcher.list`.
    pub async fn nodes(&self) -> Result<Vec<DispatcherNode>, String> {
        let ctl = format!("unix:{}", self.dir.path().join("ctl").display());
        let run = tokio::process::Command::new(system_binary("kamcmd"))
            .args(["-s", &ctl, "dispatcher.list"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .map_err(|_| "kamcmd did not answer in 5 s".to_owned())?
            .map_err(|e| format!("cannot run kamcmd: {e}"))?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            return Err(format!(
                "kamcmd failed ({}): {text}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(parse_dispatcher_list(&text))
    }

    /// Waits until the dispatcher has every node of `in_rotation` active
    /// and every node of `out` inactive (the probes decide: it is asked
    /// every 50 ms). Panics with its view and log if that takes too long.
    pub async fn until_nodes(&self, in_rotation: &[SocketAddr], out: &[SocketAddr]) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let view = self.nodes().await;
            if let Ok(nodes) = &view {
                let state = |addr: &SocketAddr| nodes.iter().find(|node| node.addr == *addr);
                let agrees = in_rotation
                    .iter()
                    .all(|addr| state(addr).is_some_and(DispatcherNode::in_rotation))
                    && out
                        .iter()
                        .all(|addr| state(addr).is_some_and(|node| !node.in_rotation()));
                if agrees {
                    return;
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "the dispatcher did not come to {in_rotation:?} in rotation, {out:?} out \
                     within {PATIENCE:?}; it has {view:?}\n{}",
                    self.report("")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kamailio's log so far (its stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kamailio.log")).unwrap_or_default()
    }

    fn report(&self, what: &str) -> String {
        report(what, &self.command_line, "kamailio.log", &self.log())
    }
}

/// What a failing test shows of a process it ran: `what`, its command
/// line, and the end of its log.
pub(crate) fn report(what: &str, command_line: &str, log_name: &str, log: &str) -> String {
    let keep = log.len().saturating_sub(12_000);
    let start = (keep..log.len())
        .find(|i| log.is_char_boundary(*i))
        .unwrap_or(log.len());
    format!(
        "{what}\ncommand: {command_line}\n----- {log_name} (end) -----\n{}",
        &log[start..]
    )
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        stop(&mut self.child, Duration::from_secs(5));
    }
}

/// Stops a process started in its own process group: SIGTERM, then after
/// `grace` SIGKILL to whatever is left of the group.
pub(crate) fn stop(child: &mut Child, grace: Duration) {
    let Ok(pid) = i32::try_from(child.id()) else {
        return;
    };
    if let Ok(None) = child.try_wait() {
        // SAFETY: plain kill(2) on the process this harness started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // The group's id is the main process's: its workers, if any are left
    // (the main process did not exit in time, or died without them).
    // SAFETY: kill(2) on the process group this harness created.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let _ = child.wait();
}

/// `name` from PATH, else from /usr/sbin (where Debian puts kamailio,
/// kamcmd and haproxy, not always on a user's PATH).
pub(crate) fn system_binary(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    on_path.unwrap_or_else(|| Path::new("/usr/sbin").join(name))
}

/// Sends one out-of-dialog request (`method`, addressed to `target`, with
/// `max_forwards` and the `extra` header lines) over UDP from a fresh
/// socket; the status code of the final answer, None without one within
/// `wait`.
pub async fn ask(
    target: SocketAddr,
    method: &str,
    max_forwards: u32,
    extra: &[&str],
    wait: Duration,
) -> Option<u16> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.ok()?;
    let request = request(method, target, &socket, 1, max_forwards, extra);
    let answer = exchange(&socket, target, &request, wait).await?;
    status_code(&answer)
}

/// A UDP port free on 127.0.0.1 just now (another process may still take
/// it first: `start` retries).
fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding a UDP port");
    socket.local_addr().expect("a bound address").port()
}

/// An out-of-dialog request to `target` from `socket`.
fn request(
    method: &str,
    target: SocketAddr,
    socket: &UdpSocket,
    n: u32,
    max_forwards: u32,
    extra: &[&str],
) -> String {
    let local = socket.local_addr().expect("a bound socket");
    let mut text = format!(
        "{method} sip:{target} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-harness-{}-{n}\r\n\
         Max-Forwards: {max_forwards}\r\n\
         From: <sip:harness@{local}>;tag=harness{n}\r\n\
         To: <sip:{target}>\r\n\
         Call-ID: harness-{}-{n}@127.0.0.1\r\n\
         CSeq: {n} {method}\r\n\
         Contact: <sip:harness@{local}>\r\n",
        local.port(),
        local.port(),
    );
    for line in extra {
        text.push_str(line);
        text.push_str("\r\n");
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    text
}

/// Sends `request` and waits at most `wait` for a final answer (provisional
/// ones are skipped).
async fn exchange(
    socket: &UdpSocket,
    to: SocketAddr,
    request: &str,
    wait: Duration,
) -> Option<String> {
    socket.send_to(request.as_bytes(), to).await.ok()?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut buffer = vec![0u8; 65_535];
    loop {
        let (len, _) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buffer))
            .await
            .ok()?
            .ok()?;
        let answer = String::from_utf8_lossy(&buffer[..len]).into_owned();
        if status_code(&answer).is_some_and(|code| code >= 200) {
            return Some(answer);
        }
    }
}

/// The status code of a SIP response ("SIP/2.0 200 OK" -> 200).
fn status_code(message: &str) -> Option<u16> {
    let line = message.lines().next()?;
    let rest = line.strip_prefix("SIP/2.0 ")?;
    rest.get(..3)?.parse().ok()
}

/// `kamcmd dispatcher.list` prints, per destination:
///
/// ```text
/// DEST: {
///         URI: sip:127.0.0.1:5080
///         FLAGS: AP
/// ```
fn parse_dispatcher_list(text: &str) -> Vec<DispatcherNode> {
    let mut nodes = Vec::new();
    let mut uri: Option<SocketAddr> = None;
    for line in text.lines().map(str::trim) {
        if let Some(value) = line.strip_prefix("URI:") {
            uri = value.trim().trim_start_matches("sip:").parse().ok();
        } else if let Some(flags) = line.strip_prefix("FLAGS:")
            && let Some(addr) = uri.take()
        {
            nodes.push(DispatcherNode {
                addr,
                flags: flags.trim().to_owned(),
            });
        }
    }
    nodes
}
