//! Events run one at a time and in arrival order, whoever runs them. An
//! idle session runs an HttpRequest in the caller's own task rather than
//! handing it to the session's task; these check what that must not change:
//! a caller that gives up does not stop a handler halfway, events that
//! arrive meanwhile wait their turn, and what a handler sets up (a timer)
//! still reaches the session's task.

use std::sync::Arc;

use crate::support::*;
use http_body_util::BodyExt;
use tokio::sync::{Notify, mpsc};

/// An origin whose `/gated` answers only once the test opens the gate (and
/// tells the test when such a request arrives); any other path answers at
/// once.
async fn gated_origin() -> (String, mpsc::UnboundedReceiver<()>, Arc<Notify>) {
    let (arrived_tx, arrived) = mpsc::unbounded_channel();
    let gate = Arc::new(Notify::new());
    let url = {
        let gate = Arc::clone(&gate);
        origin::serve(move |request| {
            let (arrived_tx, gate) = (arrived_tx.clone(), Arc::clone(&gate));
            async move {
                if request.uri().path() == "/gated" {
                    let opened = gate.notified();
                    let _ = arrived_tx.send(());
                    opened.await;
                }
                let body = format!("answered {}", request.uri().path());
                hyper::Response::new(http_body_util::Full::new(body.into()).boxed())
            }
        })
        .await
    };
    (url, arrived, gate)
}

fn fetch(url: &str) -> sessionbox::bindings::HttpRequestEvent {
    request("GET", &format!("/fetch?{url}"), "")
}

type Answer = Result<sessionbox::bindings::HttpResponse, sessionbox::SessionError>;

/// Polls `request` once: an idle session starts it in this task, a busy
/// one queues it.
async fn poll_once(request: &mut std::pin::Pin<Box<impl Future<Output = Answer>>>) {
    tokio::select! {
        biased;
        _ = request.as_mut() => panic!("answered before the gated handler ended"),
        () = std::future::ready(()) => {}
    }
}

/// A fetcher session whose HttpRequest, run in this (the test's) task,
/// waits on the gated origin's `/gated`: the request's future, the origin
/// and its gate.
async fn waiting_in_a_handler(
    runtime: &sessionbox::Runtime,
) -> (
    Watched,
    std::pin::Pin<Box<impl Future<Output = Answer> + use<>>>,
    String,
    Arc<Notify>,
) {
    let scenario = load(runtime, "fetcher", loopback_allowed());
    let mut watched = start(runtime, &scenario, "").await;
    watched.until_event("Started").await; // idle from here: see the last test
    let (origin, mut arrived, gate) = gated_origin().await;
    let session = watched.session.clone();
    let gated = fetch(&format!("{origin}/gated"));
    let mut first = Box::pin(async move { session.http_request(gated).await });
    tokio::select! {
        _ = first.as_mut() => panic!("answered before the gate opened"),
        _ = arrived.recv() => {}
    }
    (watched, first, origin, gate)
}

#[tokio::test]
async fn a_caller_that_gives_up_does_not_stop_its_handler_halfway() {
    let runtime = runtime();
    let (mut watched, first, origin, gate) = waiting_in_a_handler(&runtime).await;
    // The handler is waiting on its fetch when its caller goes away.
    drop(first);
    gate.notify_one();

    // The handler ran to its end, and the session goes on.
    watched
        .until_log(&format!("fetched {origin}/gated: 200"))
        .await;
    let next = watched
        .session
        .http_request(fetch(&format!("{origin}/next")))
        .await
        .unwrap();
    assert_eq!(next.body, b"status 200 answered /next");
    watched.session.terminate().unwrap();
    let record = watched.finished().await;
    assert!(record.finish_reason.is_normal(), "{}", record.finish_reason);
    assert_eq!(record.events["HttpRequest"], 2);
}

#[tokio::test]
async fn events_that_arrive_during_a_handler_follow_it_in_order() {
    let runtime = runtime();
    let (mut watched, mut first, origin, gate) = waiting_in_a_handler(&runtime).await;
    let request = |path: &str| {
        let session = watched.session.clone();
        let request = fetch(&format!("{origin}/{path}"));
        Box::pin(async move { session.http_request(request).await })
    };
    // While the first handler waits, a second request arrives and queues.
    let mut second = request("second");
    poll_once(&mut second).await;
    gate.notify_one();
    assert_eq!(
        first.as_mut().await.unwrap().body,
        b"status 200 answered /gated"
    );
    // The first caller has just put the core back, with the second request
    // queued and the session's task not yet run (the test runtime has one
    // thread): a third request now finds the core idle but must not jump
    // the queue.
    let mut third = request("third");
    poll_once(&mut third).await;
    watched.session.terminate().unwrap();

    // (Were the third running now, it would hold the session while this
    // test waits for the second: the guard turns that into a failure.)
    let second = tokio::time::timeout(PATIENCE, second)
        .await
        .expect("the second request never ran: did the third jump the queue?");
    assert_eq!(second.unwrap().body, b"status 200 answered /second");
    assert_eq!(third.await.unwrap().body, b"status 200 answered /third");
    let record = watched.finished().await;
    let fetched: Vec<_> = lines(&record, sessionbox::log::LogSource::Scenario)
        .into_iter()
        .filter(|line| line.starts_with("fetched"))
        .collect();
    assert_eq!(
        fetched,
        ["gated", "second", "third"].map(|path| format!("fetched {origin}/{path}: 200"))
    );
    assert_eq!(
        watched.seen,
        [
            "Started",
            "HttpRequest",
            "HttpRequest",
            "HttpRequest",
            "Terminating",
            "Terminated"
        ]
    );
}

#[tokio::test]
async fn a_timer_set_by_a_handler_in_the_callers_task_fires() {
    let runtime = runtime();
    // http-request sets a 10 ms timeout; nothing else would wake the
    // session before its idle timeout (60 s).
    let guest = wat::scenario(
        &[(
            "http-request",
            "(call $set_timeout (i32.const 10) (i32.const 256)) (i32.const 1024)",
        )],
        r#"(import "sessionbox:scenario/timers@0.2.0" "set-timeout" (func $set_timeout (param i32 i32)))"#,
        "",
    );
    let scenario = runtime
        .load("timer-setter", &guest, sessionbox::Limits::default())
        .unwrap();
    let mut watched = start(&runtime, &scenario, "").await;
    // The test runtime has one thread: once Started is seen, the session's
    // task has run it and gone idle, so the request runs in this task.
    watched.until_event("Started").await;
    let answer = watched
        .session
        .http_request(request("GET", "/", ""))
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    watched.until_event("TimerFired").await;
    watched.session.terminate().unwrap();
    assert!(watched.finished().await.finish_reason.is_normal());
}
