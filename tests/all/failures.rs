//! A scenario that fails ends only its own session, with a finish reason
//! that says why; a scenario that is not a scenario is refused at load time
//! with an error that says exactly what is wrong.

use std::time::Duration;

use crate::support::*;
use sessionbox::session::TerminateCauseName;
use sessionbox::{FinishReason, Limits, SessionError};

/// A guest whose http-request handler traps.
fn trapping() -> Vec<u8> {
    wat::scenario(&[("http-request", "unreachable")], "", "")
}

/// A guest whose http-request handler never returns.
fn spinning() -> Vec<u8> {
    wat::scenario(&[("http-request", "(loop (br 0)) unreachable")], "", "")
}

#[tokio::test]
async fn a_trap_ends_its_own_session_and_no_other() {
    let runtime = runtime();
    let healthy = load(&runtime, "hello", Limits::default());
    let broken = runtime
        .load("trapping", &trapping(), Limits::default())
        .unwrap();
    let mut bystander = start(&runtime, &healthy, "").await;
    let mut victim = start(&runtime, &broken, "").await;

    let answer = victim
        .session
        .http_request(request("GET", "/boom", ""))
        .await;
    let Err(SessionError::ScenarioFailed(reason)) = answer else {
        panic!("expected the request to fail with the scenario, got {answer:?}");
    };
    assert!(reason.contains("unreachable"), "{reason}");
    let record = victim.finished().await;
    match &record.finish_reason {
        FinishReason::Trapped { event, trap } => {
            assert_eq!(*event, "http-request");
            assert!(
                trap.contains("unreachable"),
                "the reason quotes the trap: {trap}"
            );
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    // The trap ended the session at once: no Terminating into a broken instance.
    assert_eq!(record.delivered("Terminating"), 0);
    assert!(!record.finish_reason.is_normal());
    assert!(matches!(
        victim.session.http_request(request("GET", "/", "")).await,
        Err(SessionError::Finished)
    ));

    let response = bystander
        .session
        .http_request(request("GET", "/still-here", ""))
        .await
        .expect("the healthy session still answers");
    assert_eq!(response.body, b"hello GET /still-here");
    bystander.session.terminate().unwrap();
    let record = bystander.finished().await;
    assert_eq!(
        record.finish_reason,
        FinishReason::Terminated {
            cause: TerminateCauseName::Host
        }
    );
}

/// On a single-threaded runtime, the healthy session can only answer while
/// the spinning one computes if the spinning one yields. (The requests run
/// in spawned tasks: tokio's current-thread scheduler polls its `block_on`
/// future only every few dozen task polls.)
#[tokio::test(flavor = "current_thread")]
async fn a_looping_handler_yields_and_is_stopped_at_its_compute_limit() {
    let runtime = runtime();
    let limits = Limits {
        handler_compute: Duration::from_millis(300),
        ..Limits::default()
    };
    let spinner = runtime.load("spinning", &spinning(), limits).unwrap();
    let healthy = load(&runtime, "hello", Limits::default());
    let mut looping = start(&runtime, &spinner, "").await;
    let bystander = start(&runtime, &healthy, "").await;

    let spin = {
        let session = looping.session.clone();
        tokio::spawn(async move { session.http_request(request("GET", "/spin", "")).await })
    };
    let meanwhile = tokio::spawn(async move {
        looping.until_event("HttpRequest").await;
        let response = bystander
            .session
            .http_request(request("GET", "/meanwhile", ""))
            .await;
        let spinner_still_computing = looping.session.record().is_none();
        (looping, response, spinner_still_computing)
    });
    let (mut looping, response, spinner_still_computing) = meanwhile.await.unwrap();
    assert_eq!(response.expect("the healthy session answers").status, 200);
    assert!(
        spinner_still_computing,
        "the healthy answer came while the spinner was still computing"
    );

    assert!(matches!(
        spin.await.unwrap(),
        Err(SessionError::ScenarioFailed(_))
    ));
    let record = looping.finished().await;
    assert_eq!(
        record.finish_reason,
        FinishReason::ComputeLimit {
            event: "http-request",
            limit_ms: 300
        }
    );
    assert!(
        record
            .finish_reason
            .to_string()
            .contains("computed for more than 300 ms")
    );
}

#[tokio::test]
async fn memory_past_the_limit_is_refused_and_the_trap_says_so() {
    let runtime = runtime();
    let greedy = greedy();
    let limits = Limits {
        memory_bytes: 4 << 20,
        ..Limits::default()
    };
    let scenario = runtime.load("greedy", &greedy, limits).unwrap();
    let mut session = start(&runtime, &scenario, "").await;
    let _ = session.session.http_request(request("GET", "/", "")).await;
    let record = session.finished().await;
    let FinishReason::Trapped { trap, .. } = &record.finish_reason else {
        panic!("expected a trap, got {:?}", record.finish_reason);
    };
    assert!(
        trap.contains("after growing memory past the 4 MiB limit was refused"),
        "{trap}"
    );
}

fn load_error(bytes: &[u8]) -> String {
    let runtime = runtime();
    match runtime.load("bad", bytes, Limits::default()) {
        Ok(_) => panic!("a bad component loaded"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn a_core_module_is_not_a_scenario() {
    let error = load_error(&::wat::parse_str("(module)").unwrap());
    assert_eq!(
        error,
        "scenario bad: a core WebAssembly module, not a component: build for wasm32-wasip2, \
         or wrap it with `wasm-tools component new`"
    );
}

#[test]
fn bytes_that_are_not_webassembly_are_named_so() {
    let error = load_error(b"#!/bin/sh\necho hi\n");
    assert_eq!(
        error,
        "scenario bad: not a WebAssembly binary (it does not start with \\0asm)"
    );
}

#[test]
fn a_truncated_component_is_named_so() {
    let whole = guest("hello");
    let error = load_error(&whole[..whole.len() / 2]);
    assert!(
        error.starts_with("scenario bad: truncated or corrupt: "),
        "{error}"
    );
    assert!(!error.contains('\n'), "one line: {error}");
}

#[test]
fn a_component_without_app_events_is_refused() {
    let error = load_error(&wat::component(
        "(module)",
        Some("package test:empty; world nothing {}"),
        "nothing",
    ));
    assert!(
        error.starts_with("scenario bad: does not export the scenario world's `app-events`"),
        "{error}"
    );
    assert!(error.contains("app-events"), "{error}");
}

#[test]
fn an_import_the_world_does_not_offer_is_named() {
    let wit = "package test:sneaky;
        interface disk { read: func(path: string) -> string; }
        world sneaky { import disk; }";
    let wat = r#"(module
        (import "test:sneaky/disk" "read" (func (param i32 i32 i32)))
        (memory (export "memory") 1)
        (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 8))"#;
    let error = load_error(&wat::component(wat, Some(wit), "sneaky"));
    assert!(
        error.starts_with("scenario bad: imports something the scenario world does not offer"),
        "{error}"
    );
    assert!(
        error.contains("test:sneaky/disk"),
        "names the import: {error}"
    );
}
