//! The `sessionbox` command, as a scenario author uses it.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::*;
use sessionbox::cache::{CacheStats, ComponentCache};
use sessionbox::{EngineConfig, Limits, Runtime};

/// Runs the command with a data directory of its own: `run` keeps its
/// storage there, and that database takes one process at a time, so runs
/// sharing the user's would lock each other out.
fn sessionbox(args: &[&str]) -> Output {
    let data_home = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_sessionbox"))
        .args(args)
        .env("XDG_DATA_HOME", data_home.path())
        .env_remove("RUST_LOG")
        .output()
        .expect("running sessionbox")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn run_prints_each_event_and_log_line_and_the_finish() {
    let hello = guest_path("hello");
    let output = sessionbox(&[
        "run",
        path(&hello),
        "--no-cache",
        "--custom-data",
        "hi there",
        "--http",
        "GET /hi",
        "--idle-timeout",
        "100",
    ]);
    let out = stdout(&output);
    assert!(output.status.success(), "{out}\n{}", stderr(&output));
    let expected = [
        "Started custom-data=\"hi there\"",
        "scenario | started session=",
        "  stdout | hello from stdout",
        "HttpRequest GET /hi (0 bytes)",
        "scenario | http-request GET /hi body=0",
        "response | GET /hi -> 200 hello GET /hi",
        "Terminating idle timeout",
        "scenario | terminating",
        "Terminated",
        "scenario | terminated",
        "finished: terminated: idle timeout",
    ];
    let mut from = 0;
    for want in expected {
        let found = out[from..]
            .find(want)
            .unwrap_or_else(|| panic!("{want:?} missing or out of order in:\n{out}"));
        from += found + want.len();
    }
}

#[test]
fn run_writes_what_the_caller_hears_to_a_wav_file() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("call.wav");
    let output = sessionbox(&[
        "run",
        path(&guest_path("call-handler")),
        "--no-cache",
        "--call",
        "+15550100,+15550199",
        "--audio-out",
        path(&wav),
        "--idle-timeout",
        "100",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("CallPlaybackFinished call=1"));
    let bytes = std::fs::read(&wav).unwrap();
    assert_eq!(&bytes[..4], b"RIFF");
    assert_eq!(u32::from_le_bytes(bytes[24..28].try_into().unwrap()), 8_000);
    let data = u32::from_le_bytes(bytes[40..44].try_into().unwrap()) as usize;
    assert_eq!(
        data,
        bytes.len() - 44,
        "the header says what the file holds"
    );
    // call-handler's greeting, exactly as flite speaks it.
    let greeting = flite_samples("Thanks for calling Sessionbox. Goodbye.");
    assert_eq!(data / 2, greeting);
}

#[test]
fn run_presses_keys_and_keeps_recordings_in_a_directory() {
    use std::io::{BufRead, BufReader};
    let data_home = tempfile::tempdir().unwrap();
    let recordings = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sessionbox"))
        .args(["run", path(&guest_path("call-centre")), "--no-cache"])
        .args(["--call", "me,help", "--press", "1", "--recordings"])
        .arg(recordings.path())
        .env("XDG_DATA_HOME", data_home.path())
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    // The menu plays, 1 is pressed once it has, the agent is dialed and
    // connected: then Ctrl-C ends the session, and its recording with it.
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.contains("recording 1 started");
        seen.push(line);
        if done {
            break;
        }
    }
    let pressed = seen
        .iter()
        .position(|l| l.contains("(the caller presses 1)"));
    let dialed = seen
        .iter()
        .position(|l| l.contains("scenario | dialing sales"));
    assert!(pressed.is_some() && dialed > pressed, "{seen:#?}");
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(child.wait().unwrap().success(), "{rest:#?}");
    let written: Vec<_> = std::fs::read_dir(recordings.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    let [wav] = &written[..] else {
        panic!("one recording: {written:?}");
    };
    assert!(wav.to_str().unwrap().ends_with("-1.wav"));
    let bytes = std::fs::read(wav).unwrap();
    assert_eq!(u16::from_le_bytes([bytes[22], bytes[23]]), 2, "stereo");
}

#[test]
fn run_exits_nonzero_when_the_scenario_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("trapping.wasm");
    std::fs::write(
        &file,
        wat::scenario(&[("http-request", "unreachable")], "", ""),
    )
    .unwrap();
    let output = sessionbox(&["run", path(&file), "--no-cache", "--http", "GET /"]);
    assert_eq!(output.status.code(), Some(1));
    let out = stdout(&output);
    assert!(
        out.contains(
            "response | GET / -> no response: the scenario failed: trapped in http-request"
        ),
        "{out}"
    );
    assert!(
        out.contains("finished: trapped in http-request: wasm trap"),
        "{out}"
    );
}

#[test]
fn check_accepts_a_scenario() {
    let output = sessionbox(&["check", path(&guest_path("remote-control")), "--no-cache"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).starts_with("ok: "), "{}", stdout(&output));
}

#[test]
fn check_names_what_is_wrong_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let whole = guest("hello");
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "core",
            ::wat::parse_str("(module)").unwrap(),
            "error: scenario core: a core WebAssembly module, not a component",
        ),
        (
            "truncated",
            whole[..whole.len() / 3].to_vec(),
            "error: scenario truncated: truncated or corrupt: ",
        ),
        (
            "noexports",
            wat::component("(module)", Some("package test:e; world e {}"), "e"),
            "error: scenario noexports: does not export the scenario world's `app-events`",
        ),
    ];
    for (name, bytes, want) in cases {
        let file = dir.path().join(format!("{name}.wasm"));
        std::fs::write(&file, bytes).unwrap();
        let output = sessionbox(&["check", path(&file), "--no-cache"]);
        assert_eq!(output.status.code(), Some(1), "{name}");
        let err = stderr(&output);
        assert!(err.starts_with(want), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{name}: one line: {err}");
    }
    let output = sessionbox(&["check", "/nonexistent/x.wasm"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).starts_with("error: reading /nonexistent/x.wasm: "));
}

/// A second process (here: a second runtime) loads the compiled form from
/// the disk cache instead of compiling again.
#[test]
fn the_second_load_comes_from_the_disk_cache() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = guest("hello");
    let first = Runtime::new(EngineConfig::default())
        .unwrap()
        .with_cache(dir.path());
    first.load("hello", &bytes, Limits::default()).unwrap();
    let stats = first.cache_stats().unwrap();
    assert_eq!((stats.compiles, stats.hits), (1, 0));

    let second = Runtime::new(EngineConfig::default())
        .unwrap()
        .with_cache(dir.path());
    second.load("hello", &bytes, Limits::default()).unwrap();
    second
        .load("hello-again", &bytes, Limits::default())
        .unwrap();
    let stats = second.cache_stats().unwrap();
    assert_eq!((stats.compiles, stats.hits), (0, 2));

    // A damaged cache entry costs a compile, not a failure.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
    }
    let third = Runtime::new(EngineConfig::default())
        .unwrap()
        .with_cache(dir.path());
    third.load("hello", &bytes, Limits::default()).unwrap();
    assert_eq!(third.cache_stats().unwrap().compiles, 1);
}

/// The cache keeps to its size: the entry used longest ago goes first, and
/// comes back by compiling again.
#[test]
fn the_disk_cache_keeps_to_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let hello = guest("hello");
    let remote = guest("remote-control");
    let entries = || std::fs::read_dir(dir.path()).unwrap().count();
    let runtime = |max_bytes| {
        let cache = ComponentCache::new(dir.path()).with_max_bytes(max_bytes);
        Runtime::new(EngineConfig::default())
            .unwrap()
            .with_cache_of(cache)
    };
    runtime(u64::MAX)
        .load("hello", &hello, Limits::default())
        .unwrap();
    let one_entry = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum::<u64>();

    // Room for about one entry: adding remote-control pushes hello out.
    let small = runtime(one_entry + one_entry / 2);
    small.load("remote", &remote, Limits::default()).unwrap();
    assert_eq!(entries(), 1);
    small.load("hello", &hello, Limits::default()).unwrap();
    assert_eq!(
        small.cache_stats().unwrap(),
        CacheStats {
            hits: 0,
            compiles: 2
        },
        "hello was pruned, so it compiled again"
    );
    assert_eq!(entries(), 1, "and pushed remote-control out in turn");
}
