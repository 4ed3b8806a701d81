//! The rows of the README's limits table that the phase, hostile and
//! outbound suites do not cover: each limit set low, a guest that crosses
//! it, and the exact outcome.

use std::time::Duration;

use crate::support::*;
use sessionbox::bindings::Message;
use sessionbox::log::LogSource;
use sessionbox::{IncomingCall, Limits, SessionError};

#[tokio::test]
async fn a_full_event_queue_answers_busy() {
    let runtime = runtime();
    let limits = Limits {
        queued_events: 4,
        ..Limits::default()
    };
    let hello = load(&runtime, "hello", limits);
    let mut watched = start(&runtime, &hello, "").await;
    // The session's task cannot run until this test's task awaits: the
    // queue fills with Started's successors (a call, and its tones).
    let call = watched
        .session
        .incoming_call(IncomingCall::default())
        .unwrap();
    let sent: Vec<_> = (0..5)
        .map(|_| watched.session.remote_tone(call, "5"))
        .collect();
    assert!(sent[..3].iter().all(Result::is_ok), "{sent:?}");
    assert!(matches!(sent[3], Err(SessionError::Busy)), "{sent:?}");
    // Busy is momentary: once the queue drains, events are taken again.
    watched.until_event("Started").await;
    let answer = watched
        .session
        .http_request(request("GET", "/after", ""))
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    watched.session.terminate().unwrap();
    assert!(watched.finished().await.finish_reason.is_normal());
}

#[tokio::test]
async fn an_unanswered_call_fails_with_408() {
    let runtime = runtime();
    let limits = Limits {
        unanswered_call: Duration::from_millis(100),
        ..Limits::default()
    };
    // hello keeps calls but never answers them.
    let hello = load(&runtime, "hello", limits);
    let mut watched = start(&runtime, &hello, "").await;
    let call = watched
        .session
        .incoming_call(IncomingCall::default())
        .unwrap();
    watched
        .until_log(&format!(
            "call-failed {call} 408 not answered within 100 ms"
        ))
        .await;
    watched.session.terminate().unwrap();
    watched.finished().await;
}

#[tokio::test]
async fn call_attempts_past_the_limit_are_rejected() {
    let runtime = runtime();
    let limits = Limits {
        calls_per_session: 2,
        ..Limits::default()
    };
    let hello = load(&runtime, "hello", limits);
    let watched = start(&runtime, &hello, "").await;
    for _ in 0..3 {
        watched
            .session
            .incoming_call(IncomingCall::default())
            .unwrap();
    }
    one_call_refused(watched, 2, "2 call attempts per session is the limit").await;
}

#[tokio::test]
async fn calls_ringing_past_the_limit_are_rejected() {
    let runtime = runtime();
    let limits = Limits {
        calls_ringing: 2,
        ..Limits::default()
    };
    // hello never answers: its calls keep ringing.
    let hello = load(&runtime, "hello", limits);
    let watched = start(&runtime, &hello, "").await;
    let mut calls = Vec::new();
    for _ in 0..3 {
        calls.push(
            watched
                .session
                .incoming_call(IncomingCall::default())
                .unwrap(),
        );
    }
    // The first one stops ringing (its caller gives up): room for one more.
    watched
        .session
        .remote_failed(calls[0], 487, "Request Terminated")
        .unwrap();
    watched
        .session
        .incoming_call(IncomingCall::default())
        .unwrap();
    one_call_refused(watched, 3, "2 calls ringing at once is the limit").await;
}

/// Ends the session; exactly one call was refused, for `reason`, and
/// `alerting` reached the scenario.
async fn one_call_refused(mut watched: Watched, alerting: u64, reason: &str) {
    watched.session.terminate().unwrap();
    let record = watched.finished().await;
    assert_eq!(record.delivered("CallAlerting"), alerting);
    assert_eq!(record.capabilities.refusals["calls"]["running"], 1);
    let host = lines(&record, LogSource::Host);
    assert!(host.iter().any(|l| l.contains(reason)), "{host:?}");
}

#[tokio::test]
async fn an_interval_below_the_minimum_is_refused() {
    let runtime = runtime();
    let probe = load(&runtime, "phase-probe", Limits::default());
    let mut watched = start(&runtime, &probe, "").await;
    for period in [99, 100] {
        let path = format!("/interval?{period}");
        watched
            .session
            .http_request(request("GET", &path, ""))
            .await
            .unwrap();
    }
    watched.session.terminate().unwrap();
    let record = watched.finished().await;
    let log = lines(&record, LogSource::Scenario);
    assert!(
        log.contains(
            &"set-interval 99: timers refused in running: intervals must be at least 100 ms"
        ),
        "{log:?}"
    );
    assert!(log.contains(&"set-interval 100: ok"), "{log:?}");
}

#[tokio::test]
async fn a_message_sent_on_a_call_is_limited() {
    let runtime = runtime();
    let probe = load(&runtime, "phase-probe", Limits::default());
    let mut watched = start(&runtime, &probe, "").await;
    let call = watched
        .session
        .incoming_call(IncomingCall::default())
        .unwrap();
    watched.until_event("CallConnected").await;
    // The echo adds 6 bytes: 8,186 fit, 8,187 do not.
    for length in [8_186, 8_187] {
        watched
            .session
            .remote_message(call, &"m".repeat(length))
            .unwrap();
    }
    watched.session.terminate().unwrap();
    let record = watched.finished().await;
    let log = lines(&record, LogSource::Scenario);
    assert_eq!(log.iter().filter(|l| **l == "send-message: ok").count(), 1);
    assert!(
        log.contains(
            &"send-message: calls refused in running: call messages are limited to 8192 bytes (got 8193)"
        ),
        "{log:?}"
    );
}

#[tokio::test]
async fn a_websocket_message_sent_past_the_limit_is_refused() {
    let runtime = runtime();
    let hello = load(&runtime, "hello", Limits::default());
    let mut watched = start(&runtime, &hello, "").await;
    let socket = watched
        .session
        .open_websocket("/ws".into(), vec![])
        .await
        .unwrap();
    // hello echoes with `echo: ` (6 bytes) in front.
    let text = "w".repeat((64 << 10) - 5);
    watched
        .session
        .websocket_message(socket.id, Message::Text(text))
        .unwrap();
    watched
        .until_log(
            "refused: websockets refused in running: websocket messages are limited to 65536 bytes (got 65537)",
        )
        .await;
    watched.session.terminate().unwrap();
    assert!(watched.finished().await.finish_reason.is_normal());
}

#[tokio::test]
async fn a_log_past_its_size_keeps_counting_dropped_lines() {
    let runtime = runtime();
    let limits = Limits {
        log_bytes: 1_000,
        ..Limits::default()
    };
    let hello = load(&runtime, "hello", limits);
    let mut watched = start(&runtime, &hello, "").await;
    for _ in 0..100 {
        watched
            .session
            .http_request(request("GET", "/fill", ""))
            .await
            .unwrap();
    }
    watched.session.terminate().unwrap();
    let record = watched.finished().await;
    let kept: usize = record.log.lines.iter().map(|l| l.text.len()).sum();
    assert!(kept <= 1_000, "{kept} bytes kept");
    assert!(
        record.log.dropped_lines > 50,
        "{}",
        record.log.dropped_lines
    );
    assert!(record.finish_reason.is_normal());
}

#[test]
fn a_component_over_the_size_limit_is_refused_unread() {
    let runtime = runtime();
    let huge = vec![0u8; 65 << 20];
    let error = runtime
        .load("huge", &huge, Limits::default())
        .err()
        .unwrap();
    assert_eq!(
        format!("{error:#}"),
        "scenario huge: it is 65 MiB; components are limited to 64 MiB"
    );
}
