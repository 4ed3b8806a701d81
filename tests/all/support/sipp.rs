//! Runs `sipp` (Debian package sip-tester, 3.6.1) against Sessionbox's SIP
//! listener, with the scenario files in `tests/sip/`.
//!
//! ```ignore
//! // One call to the "answer" probe; Ok unless sipp exits non-zero.
//! let sipp = Sipp::call("uac_info", sip_addr, "answer", Transport::Udp, &[]);
//! sipp.finish(PATIENCE).await.unwrap_or_else(|report| panic!("{report}"));
//!
//! // sipp as the callee of an outbound call (port 0: a free port).
//! let callee = Sipp::answer("uas_answer", 0);
//! let target = callee.local_addr(); // place the call to this address
//! ```
//!
//! How sipp is run (a failure report shows the exact line):
//!
//! ```text
//! sipp 127.0.0.1:PORT -sf tests/sip/NAME.xml -s SERVICE -t u1|t1
//!      -i 127.0.0.1 -bind_local -m 1 -nostdin
//!      -timeout 25s -timeout_error
//!      -trace_err -error_file DIR/errors.log
//!      -trace_msg -message_file DIR/messages.log
//!      -trace_calldebug -calldebug_file DIR/calldebug.log
//!      -trace_logs -log_file DIR/logs.log
//!      -key NAME VALUE ...
//! ```
//!
//! (the UAS form has no remote host and adds `-p PORT`). Notes on sipp 3.6.1:
//!
//! - It runs in the foreground without a terminal: stdin is /dev/null and
//!   `-nostdin`, the statistics screens go to stdout (kept in DIR/stdout.txt
//!   and shown in failure reports). There is no `-bg` here: it forks.
//! - Every log file gets an explicit name in a fresh temporary DIR per run;
//!   left to itself sipp names them after the scenario file and its pid.
//! - `-key NAME VALUE` sets the scenario keyword `[NAME]`. A keyword the
//!   scenario uses but no `-key` sets is a fatal "Unsupported keyword"
//!   error at load time (exit code 1). The UAC scenarios use `[rtp_port]`
//!   (the m=audio port of their SDP offer): when the test gives none,
//!   `spawn` binds a UDP socket on 127.0.0.1 and passes its port, keeping
//!   the socket for the run. `uac_play` also needs `prompt_url`.
//! - Exit codes: 0 every call succeeded; 1 at least one call failed (also a
//!   scenario error); 97 exit on an internal command; 99 normal exit with no
//!   call processed; 255 fatal error, including `-timeout_error` when the
//!   global `-timeout` hits; 254 could not bind a socket.
//! - Without `-timeout_error`, `-timeout` only stops new calls and lets
//!   running ones go on; with it, sipp exits 255 at the limit.
//! - Local ports: without `-p` sipp tries 5060, 5061, ... until a bind
//!   works, so parallel UACs do not collide; `-bind_local` keeps it on
//!   127.0.0.1. It also binds media ports (from 6000, `[media_port]`) and a
//!   UDP control port (from 8888), moving up when taken.
//! - A recv timeout on a scenario message, an unexpected message or a
//!   failed `<ereg check_it="true">` fails the call, so the run exits 1.
//!
//! Child processes are `std::process` children polled with `tokio::time`
//! (the workspace's tokio has no `process` feature); dropping a `Sipp`
//! kills its process.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A scenario: `tests/sip/NAME.xml` (`name` with or without `.xml`), or
/// one built into sipp (`builtin:NAME`, e.g. `builtin:uac_pcap`).
fn scenario(name: &str) -> Scenario {
    if let Some(builtin) = name.strip_prefix("builtin:") {
        return Scenario::BuiltIn(builtin.to_owned());
    }
    Scenario::File(scenario_file(name))
}

#[derive(Clone, Debug)]
enum Scenario {
    File(PathBuf),
    BuiltIn(String),
}

/// The scenario file `tests/sip/NAME.xml`.
fn scenario_file(name: &str) -> PathBuf {
    let file = if name.ends_with(".xml") {
        name.to_owned()
    } else {
        format!("{name}.xml")
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/sip")
        .join(file);
    assert!(path.exists(), "no sipp scenario {}", path.display());
    path
}

/// The SIP transport sipp uses: one UDP socket (`-t u1`) or one TCP
/// connection (`-t t1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    fn flag(self) -> &'static str {
        match self {
            Transport::Udp => "u1",
            Transport::Tcp => "t1",
        }
    }
}

#[derive(Clone, Debug)]
enum Role {
    /// Places calls to `target`, to the user `service`.
    Uac { target: SocketAddr, service: String },
    /// Answers calls on 127.0.0.1:`port` (0: a free port).
    Uas { port: u16 },
}

/// Everything about one sipp run; `spawn` starts it.
#[derive(Clone, Debug)]
struct SippBuilder {
    scenario: Scenario,
    role: Role,
    transport: Transport,
    keys: Vec<(String, String)>,
}

/// sipp gives up and exits 255 after this long: under the tests' 30 s wait,
/// so sipp's own report of what it waited for wins. (The scenarios' receive
/// timeouts are 10-20 s.)
const SIPP_TIMEOUT: &str = "25s";

impl SippBuilder {
    fn new(scenario_name: &str, role: Role) -> Self {
        SippBuilder {
            scenario: scenario(scenario_name),
            role,
            transport: Transport::Udp,
            keys: Vec::new(),
        }
    }

    /// Starts sipp. A UAS is started when this returns: its SIP port is
    /// bound (port 0 retries another free port if a race took the first).
    fn spawn(self) -> Sipp {
        match self.role {
            Role::Uas { port: 0 } => {
                let mut last = String::new();
                for _ in 0..5 {
                    let port = free_port();
                    match self.clone().start(port) {
                        Ok(sipp) => return sipp,
                        Err(report) => last = report,
                    }
                }
                panic!("sipp could not start on a free port:\n{last}")
            }
            Role::Uas { port } => self.start(port).unwrap_or_else(|report| panic!("{report}")),
            Role::Uac { .. } => self.start(0).unwrap_or_else(|report| panic!("{report}")),
        }
    }

    fn start(&self, uas_port: u16) -> Result<Sipp, String> {
        let dir = tempfile::Builder::new()
            .prefix("sessionbox-sipp-")
            .tempdir()
            .map_err(|e| format!("creating a directory for sipp: {e}"))?;
        let file = |name: &str| dir.path().join(name).display().to_string();

        let mut args: Vec<String> = Vec::new();
        let mut rtp = None;
        match &self.role {
            Role::Uac { target, service } => {
                args.push(target.to_string());
                args.extend(["-s".into(), service.clone()]);
            }
            Role::Uas { .. } => args.extend(["-p".into(), uas_port.to_string()]),
        }
        match &self.scenario {
            Scenario::File(path) => args.extend(["-sf".into(), path.display().to_string()]),
            Scenario::BuiltIn(name) => {
                // The built-in uac_pcap plays pcap/*.pcap from where it runs:
                // Debian's copies.
                std::os::unix::fs::symlink("/usr/share/sip-tester", dir.path().join("pcap"))
                    .map_err(|e| format!("linking sipp's pcap files: {e}"))?;
                args.extend(["-sn".into(), name.clone()]);
            }
        }
        args.extend(["-t".into(), self.transport.flag().into()]);
        args.extend(["-i".into(), "127.0.0.1".into(), "-bind_local".into()]);
        args.extend(["-m".into(), "1".into(), "-nostdin".into()]);
        args.extend([
            "-timeout".into(),
            SIPP_TIMEOUT.into(),
            "-timeout_error".into(),
        ]);
        args.extend([
            "-trace_err".into(),
            "-error_file".into(),
            file("errors.log"),
        ]);
        args.extend([
            "-trace_msg".into(),
            "-message_file".into(),
            file("messages.log"),
        ]);
        args.extend([
            "-trace_calldebug".into(),
            "-calldebug_file".into(),
            file("calldebug.log"),
        ]);
        args.extend(["-trace_logs".into(), "-log_file".into(), file("logs.log")]);
        let mut keys = self.keys.clone();
        if matches!(self.role, Role::Uac { .. }) && !keys.iter().any(|(k, _)| k == "rtp_port") {
            let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
                .map_err(|e| format!("binding an RTP port for sipp: {e}"))?;
            let port = socket.local_addr().map_err(|e| e.to_string())?.port();
            keys.push(("rtp_port".into(), port.to_string()));
            rtp = Some(socket);
        }
        for (name, value) in &keys {
            args.extend(["-key".into(), name.clone(), value.clone()]);
        }

        let command_line = format!("sipp {}", shell_words(&args));
        let stdout = std::fs::File::create(dir.path().join("stdout.txt"))
            .map_err(|e| format!("creating sipp's stdout file: {e}"))?;
        let stderr = std::fs::File::create(dir.path().join("stderr.txt"))
            .map_err(|e| format!("creating sipp's stderr file: {e}"))?;
        let child = Command::new("sipp")
            .args(&args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot run sipp (is the sip-tester package installed?): {e}\n{command_line}"
                )
            })?;

        let mut sipp = Sipp {
            child,
            dir,
            command_line,
            local: match self.role {
                Role::Uas { .. } => Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::LOCALHOST,
                    uas_port,
                ))),
                Role::Uac { .. } => None,
            },
            transport: self.transport,
            _rtp: rtp,
        };
        if let Some(addr) = sipp.local {
            sipp.until_listening(addr.port())?;
        }
        Ok(sipp)
    }
}

/// A running sipp; dropping it kills the process.
pub struct Sipp {
    child: Child,
    dir: tempfile::TempDir,
    command_line: String,
    local: Option<SocketAddr>,
    transport: Transport,
    _rtp: Option<UdpSocket>,
}

impl Sipp {
    /// A UAC placing one call to `target` at the user `service`.
    pub fn call(
        scenario_name: &str,
        target: SocketAddr,
        service: &str,
        transport: Transport,
        keys: &[(&str, String)],
    ) -> Sipp {
        let role = Role::Uac {
            target,
            service: service.to_owned(),
        };
        let mut builder = SippBuilder::new(scenario_name, role);
        builder.transport = transport;
        builder.keys = keys
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect();
        builder.spawn()
    }

    /// A UAS answering one call over UDP on 127.0.0.1:`port` (0: a free
    /// port, see `local_addr`); started when this returns.
    pub fn answer(scenario_name: &str, port: u16) -> Sipp {
        Self::answer_with(scenario_name, port, &[])
    }

    /// The same, with scenario keys.
    pub fn answer_with(scenario_name: &str, port: u16, keys: &[(&str, String)]) -> Sipp {
        let mut builder = SippBuilder::new(scenario_name, Role::Uas { port });
        builder.keys = keys
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect();
        builder.spawn()
    }

    /// Where a UAS listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local.expect("local_addr is for a sipp UAS")
    }

    /// Waits at most `limit` for sipp to exit; Ok(stdout and `<log>` lines)
    /// when it exited 0, Err(a report with its output and logs) otherwise.
    /// Keep `limit` above the sipp `-timeout` (25 s by default).
    pub async fn finish(self, limit: Duration) -> Result<String, String> {
        let run = self.wait(limit).await;
        if run.success() {
            Ok(format!("{}{}", run.stdout, run.log))
        } else {
            Err(run.report())
        }
    }

    /// Waits at most `limit` for sipp to exit (killing it then) and
    /// collects everything it left.
    async fn wait(mut self, limit: Duration) -> SippRun {
        let deadline = Instant::now() + limit;
        let mut note = String::new();
        let exit = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status.code(),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    note = format!("sipp did not exit within {limit:?}: killed\n");
                    break None;
                }
                Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => {
                    note = format!("waiting for sipp: {e}\n");
                    break None;
                }
            }
        };
        self.collect(exit, note)
    }

    fn collect(&self, exit: Option<i32>, note: String) -> SippRun {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        SippRun {
            command_line: self.command_line.clone(),
            exit,
            note,
            stdout: read("stdout.txt"),
            stderr: read("stderr.txt"),
            errors: read("errors.log"),
            log: read("logs.log"),
            messages: read("messages.log"),
            calldebug: read("calldebug.log"),
        }
    }

    /// Polls until the UAS has bound its SIP port (read from /proc/net, so
    /// the check itself takes no port), or fails if sipp exits first.
    fn until_listening(&mut self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if listening(port, self.transport) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let run = self.collect(status.code(), "sipp exited before listening\n".into());
                return Err(run.report());
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let run = self.collect(None, format!("sipp did not bind port {port} in 10 s\n"));
                return Err(run.report());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What one sipp run left behind.
struct SippRun {
    command_line: String,
    /// The exit code; None when killed (by `wait`'s limit or a signal).
    exit: Option<i32>,
    note: String,
    /// The final statistics screens.
    stdout: String,
    stderr: String,
    /// `-error_file`: unexpected messages, aborted calls, timeouts.
    errors: String,
    /// `-log_file`: the scenario's `<log>` actions.
    log: String,
    /// `-message_file`: every SIP message.
    messages: String,
    /// `-calldebug_file`: the messages of aborted calls.
    calldebug: String,
}

impl SippRun {
    fn success(&self) -> bool {
        self.exit == Some(0)
    }

    /// Everything, for a failure message.
    fn report(&self) -> String {
        let meaning = match self.exit {
            Some(0) => "all calls succeeded",
            Some(1) => "at least one call failed (or the scenario is invalid)",
            Some(97) => "exit on an internal command",
            Some(99) => "normal exit without calls processed",
            Some(254) => "fatal error binding a socket",
            Some(255) => "fatal error (or -timeout reached)",
            Some(_) => "unknown exit code",
            None => "no exit code",
        };
        let mut out = String::new();
        let _ = writeln!(out, "sipp failed: exit {:?} ({meaning})", self.exit);
        let _ = writeln!(out, "command: {}", self.command_line);
        out.push_str(&self.note);
        // sipp also prints its first errors on stderr: show errors.log only
        // when it holds more.
        let errors = self
            .errors
            .trim_start_matches("The following events occurred:");
        let errors = if self.stderr.contains(errors.trim()) {
            ""
        } else {
            &self.errors
        };
        for (title, text, keep) in [
            ("stderr", &self.stderr, 4_000),
            ("errors.log", &errors.to_owned(), 8_000),
            ("calldebug.log", &self.calldebug, 8_000),
            ("logs.log", &self.log, 2_000),
            ("messages.log", &self.messages, 12_000),
            ("stdout (screens)", &self.stdout, 6_000),
        ] {
            if !text.trim().is_empty() {
                let _ = writeln!(out, "----- {title} -----\n{}", tail(text, keep));
            }
        }
        out
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 just now (another process
/// /// may still take it before sipp binds it; `Sipp::answer(_, 0)` retries).
fn free_port() -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding a UDP port");
        let port = udp.local_addr().expect("a bound address").port();
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1")
}

/// Whether 127.0.0.1:`port` (or any address on it) is bound (UDP) or
/// listening (TCP), from /proc/net/{udp,tcp}.
fn listening(port: u16, transport: Transport) -> bool {
    let (file, wanted_state) = match transport {
        Transport::Udp => ("/proc/net/udp", None),
        Transport::Tcp => ("/proc/net/tcp", Some("0A")),
    };
    let Ok(table) = std::fs::read_to_string(file) else {
        return false;
    };
    let port_hex = format!(":{port:04X}");
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let (Some(_slot), Some(local), Some(_remote), Some(state)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return false;
        };
        local.ends_with(&port_hex) && wanted_state.is_none_or(|wanted| state == wanted)
    })
}

fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|arg| {
            if !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+".contains(c))
            {
                arg.clone()
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn tail(text: &str, keep: usize) -> &str {
    if text.len() <= keep {
        return text;
    }
    let mut start = text.len() - keep;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}
