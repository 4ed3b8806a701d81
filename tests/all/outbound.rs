//! Outbound HTTP goes only where the app allows: hosts on its allowlist,
//! and public addresses unless private ones are allowed. Each refused
//! attempt is a standard wasi:http error to the guest, a counted refusal,
//! and a note in the log; a session beside the attacker is not affected.

use crate::support::*;
use http_body_util::BodyExt;
use sessionbox::log::LogSource;
use sessionbox::{Limits, Runtime, Scenario};
use std::sync::Arc;

/// Asks the fetcher guest to GET `url`; returns (status, body).
async fn fetch(watched: &Watched, url: &str) -> (u16, String) {
    let response = watched
        .session
        .http_request(request("GET", &format!("/fetch?{url}"), ""))
        .await
        .unwrap();
    (
        response.status,
        String::from_utf8_lossy(&response.body).into_owned(),
    )
}

/// The port of `http://127.0.0.1:PORT/...`.
fn port_of(url: &str) -> String {
    url.split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

fn fetcher(runtime: &Runtime, limits: Limits) -> Arc<Scenario> {
    load(runtime, "fetcher", limits)
}

#[tokio::test]
async fn internal_addresses_are_refused_by_ip_and_by_name() {
    let runtime = runtime();
    let (hook, mut received) = webhook::start().await;
    let port = port_of(&hook);
    let scenario = fetcher(&runtime, Limits::default());
    let mut attacker = start(&runtime, &scenario, "").await;
    let hello = load(&runtime, "hello", Limits::default());
    let mut bystander = start(&runtime, &hello, "").await;

    let attempts = [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://localhost:{port}/hook"),
        format!("http://[::1]:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.1/".to_owned(),
    ];
    for url in &attempts {
        let (status, body) = fetch(&attacker, url).await;
        assert_eq!(status, 502, "{url}: {body}");
        assert!(body.contains("DestinationIpProhibited"), "{url}: {body}");
    }
    // Refused before connecting: had anything connected, the webhook would
    // have had the request before the guest had its answer.
    assert!(
        received.try_recv().is_err(),
        "nothing reached the loopback server"
    );

    attacker.session.terminate().unwrap();
    let record = attacker.finished().await;
    assert_eq!(
        record.capabilities.refusals["http"]["running"],
        attempts.len() as u64
    );
    let host = lines(&record, LogSource::Host);
    assert!(
        host.iter().any(|l| l.starts_with(
            "http refused in running: 169.254.169.254 is 169.254.169.254, an internal address"
        )),
        "{host:?}"
    );
    assert!(
        host.iter().any(
            |l| l.contains("localhost is 127.0.0.1, an internal address")
                || l.contains("localhost is ::1, an internal address")
        ),
        "{host:?}"
    );

    bystander.session.terminate().unwrap();
    assert!(bystander.finished().await.finish_reason.is_normal());
}

#[tokio::test]
async fn only_hosts_on_the_allowlist_are_reached() {
    let runtime = runtime();
    let (hook, mut received) = webhook::start().await;
    let port = port_of(&hook);
    let limits = Limits {
        http_allow: vec![format!("http://127.0.0.1:{port}")],
        http_allow_private: true,
        ..Limits::default()
    };
    let scenario = fetcher(&runtime, limits);
    let mut watched = start(&runtime, &scenario, "").await;

    let (status, body) = fetch(&watched, &format!("http://127.0.0.1:{port}/hook")).await;
    assert_eq!((status, body.as_str()), (200, "status 200 ok"));
    assert_eq!(received.recv().await.unwrap().path, "/hook");

    // The same server by another name, or another port, is not on the list:
    // a redirect to either would be refused the same way, hop by hop.
    for url in [
        format!("http://localhost:{port}/hook"),
        "http://127.0.0.1:1/hook".to_owned(),
        format!("https://127.0.0.1:{port}/hook"),
    ] {
        let (status, body) = fetch(&watched, &url).await;
        assert_eq!(status, 502, "{url}");
        assert!(body.contains("HttpRequestDenied"), "{url}: {body}");
    }
    assert!(received.try_recv().is_err());
    watched.session.terminate().unwrap();
    let record = watched.finished().await;
    assert_eq!(record.capabilities.uses["http"], 1);
    assert_eq!(record.capabilities.refused("http"), 3);
    let host = lines(&record, LogSource::Host);
    assert!(
        host.iter()
            .any(|l| l.contains("localhost is not on the app's outbound HTTP allowlist")),
        "{host:?}"
    );
}

#[test]
fn a_malformed_allowlist_is_refused_at_load() {
    let runtime = runtime();
    let limits = Limits {
        http_allow: vec!["ftp://files.example.com".into()],
        ..Limits::default()
    };
    let error = runtime
        .load("fetcher", &guest("fetcher"), limits)
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap();
    assert!(
        error.starts_with(
            "scenario fetcher: limits.http_allow: \"ftp://files.example.com\" is not a host pattern"
        ),
        "{error}"
    );
}

#[tokio::test]
async fn a_request_flood_stops_at_the_per_session_limit() {
    let runtime = runtime();
    let (hook, mut received) = webhook::start().await;
    let scenario = fetcher(&runtime, loopback_allowed());
    let mut watched = start(&runtime, &scenario, "").await;
    for n in 1..=36 {
        let (status, body) = fetch(&watched, &hook).await;
        if n <= 35 {
            assert_eq!(
                (status, body.as_str()),
                (200, "status 200 ok"),
                "request {n}"
            );
        } else {
            assert_eq!(status, 502);
            assert!(body.contains("HttpRequestDenied"), "{body}");
        }
    }
    let mut arrived = 0;
    while received.try_recv().is_ok() {
        arrived += 1;
    }
    assert_eq!(arrived, 35);
    watched.session.terminate().unwrap();
    let record = watched.finished().await;
    assert_eq!(record.capabilities.uses["http"], 35);
    let host = lines(&record, LogSource::Host);
    assert!(
        host.iter().any(|l| l
            .starts_with("http refused in running: 35 outbound requests per session is the limit")),
        "{host:?}"
    );
}

#[tokio::test]
async fn no_request_leaves_a_terminated_session() {
    let runtime = runtime();
    let (hook, mut received) = webhook::start().await;
    let scenario = fetcher(&runtime, loopback_allowed());
    let mut watched = start(&runtime, &scenario, &format!("terminated {hook}")).await;
    watched.session.terminate().unwrap();
    let record = watched.finished().await;
    let log = lines(&record, LogSource::Scenario);
    assert!(
        log.iter().any(|l| l.starts_with("terminated fetch refused: ") && l.contains("HttpRequestDenied")),
        "{log:?}"
    );
    assert!(received.try_recv().is_err(), "nothing reached the server");
    assert_eq!(record.capabilities.refusals["http"]["terminated"], 1);
    assert!(record.finish_reason.is_normal());
}

/// A request refused for its destination never left, so it does not use up
/// the one request Terminating allows.
#[tokio::test]
async fn a_request_refused_for_its_destination_leaves_terminatings_one() {
    let runtime = runtime();
    let (hook, mut received) = webhook::start().await;
    let scenario = fetcher(&runtime, loopback_allowed());
    let plan = format!("terminating http://no-such-host.invalid/ terminating {hook}");
    let mut watched = start(&runtime, &scenario, &plan).await;
    watched.session.terminate().unwrap();
    let record = watched.finished().await;
    let log = lines(&record, LogSource::Scenario);
    assert!(
        log[0].starts_with("terminating fetch refused: ") && log[0].contains("DestinationNotFound"),
        "{log:?}"
    );
    assert_eq!(log[1], "terminating fetch answered 200");
    assert!(received.recv().await.is_some(), "the one request went out");
    assert_eq!(record.capabilities.uses["http"], 1);
    assert_eq!(record.capabilities.refusals["http"]["terminating"], 1);
}

/// A full answer from `origin`.
fn answer(status: u16, headers: &[(&str, String)], body: &'static str) -> origin::Answer {
    let mut response = hyper::Response::builder().status(status);
    for (name, value) in headers {
        response = response.header(*name, value);
    }
    response
        .body(http_body_util::Full::new(body.into()).boxed())
        .unwrap()
}

#[tokio::test]
async fn a_redirect_is_checked_again_at_each_hop() {
    let runtime = runtime();
    let (hook, mut received) = webhook::start().await;
    let location = hook.clone();
    let redirector = origin::serve(move |_| {
        let location = location.clone();
        async move { answer(302, &[("location", location)], "") }
    })
    .await;
    // Only the redirector is on the allowlist, not where it points.
    let limits = Limits {
        http_allow: vec![redirector.clone()],
        http_allow_private: true,
        ..Limits::default()
    };
    let scenario = fetcher(&runtime, limits);
    let mut watched = start(&runtime, &scenario, "").await;
    let (status, body) = fetch(&watched, &format!("{redirector}/go")).await;
    assert_eq!(status, 502);
    assert!(body.contains("HttpRequestDenied"), "{body}");
    assert!(
        received.try_recv().is_err(),
        "the hop off the allowlist never left"
    );
    watched.session.terminate().unwrap();
    let record = watched.finished().await;
    assert_eq!(
        lines(&record, LogSource::Scenario)[0],
        format!("redirected to {hook}"),
        "the host did not follow the redirect itself: the guest saw it"
    );
    assert_eq!(record.capabilities.uses["http"], 1);
    assert_eq!(record.capabilities.refused("http"), 1);
}

/// A response past a limit ends where the limit says, and the guest is
/// told which: a body that trickles past the total timeout, a body larger
/// than the response limit.
#[tokio::test]
async fn a_response_past_a_limit_is_cut_off_and_the_limit_named() {
    let runtime = runtime();
    // The head at once, then a byte every 20 ms, forever.
    let trickle = origin::serve(|_| async {
        let drip = futures_util::stream::unfold((), |()| async {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            Some((Ok(hyper::body::Frame::data("x".into())), ()))
        });
        hyper::Response::new(http_body_util::StreamBody::new(drip).boxed())
    })
    .await;
    let huge = origin::serve(|_| async { answer(200, &[], include_str!("../../README.md")) }).await;
    // wasmtime-wasi-http 48 hands a body's error to the guest as an opaque
    // I/O error (not a wasi:http error code), so only its text names it.
    let cases = [
        (
            Limits {
                http_total_timeout: std::time::Duration::from_millis(300),
                ..loopback_allowed()
            },
            format!("{trickle}/slow"),
            "response body: HTTP response timeout",
        ),
        (
            Limits {
                http_response_bytes: 1000,
                ..loopback_allowed()
            },
            format!("{huge}/"),
            "response body: HTTP response body size exceeds limit: 1000 bytes",
        ),
    ];
    for (limits, url, error) in cases {
        let scenario = fetcher(&runtime, limits);
        let mut watched = start(&runtime, &scenario, "").await;
        let (status, body) = fetch(&watched, &url).await;
        assert_eq!(status, 502, "{url}");
        assert!(body.starts_with(error), "{url}: {body}");
        watched.session.terminate().unwrap();
        assert!(watched.finished().await.finish_reason.is_normal());
    }
}

#[tokio::test]
async fn oversized_header_sections_are_refused_both_ways() {
    let runtime = runtime();
    let (hook, mut received) = webhook::start().await;
    let bloated =
        origin::serve(|_| async { answer(200, &[("x-bloat", "b".repeat(70 << 10))], "ok") }).await;
    let scenario = fetcher(&runtime, loopback_allowed());
    let mut watched = start(&runtime, &scenario, "").await;

    let (status, body) = fetch(&watched, &format!("{bloated}/")).await;
    assert_eq!(status, 502);
    assert!(body.contains("HttpResponseHeaderSectionSize"), "{body}");

    // A header within the limit goes out.
    let mut padded = request("GET", &format!("/fetch?{hook}"), "");
    padded.headers.push(header("x-pad", "1000"));
    let response = watched.session.http_request(padded).await.unwrap();
    assert_eq!(response.status, 200);
    assert!(received.recv().await.is_some());

    // A 70 KiB request header: wasmtime's wasi:http treats building it as
    // a runaway guest, and the session ends naming the limit. Nothing is sent.
    let mut padded = request("GET", &format!("/fetch?{hook}"), "");
    padded
        .headers
        .push(header("x-pad", &(70 << 10).to_string()));
    let failed = watched.session.http_request(padded).await;
    let Err(sessionbox::SessionError::ScenarioFailed(why)) = failed else {
        panic!("{failed:?}");
    };
    assert_eq!(
        why,
        "trapped in http-request: total size of fields exceeds limit"
    );
    assert!(!watched.finished().await.finish_reason.is_normal());
    assert!(received.try_recv().is_err());
}

/// Two sessions of one tenant share its outbound turns: with one turn, the
/// server never sees their requests overlap; with two, it does.
#[tokio::test]
async fn a_tenants_sessions_share_its_outbound_turns() {
    for turns in [1, 2] {
        let runtime = runtime();
        let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let both_arrived = Arc::new(tokio::sync::Notify::new());
        let slow = {
            let (in_flight, most, both_arrived) =
                (in_flight.clone(), most.clone(), both_arrived.clone());
            origin::serve(move |_| {
                let (in_flight, most, both_arrived) =
                    (in_flight.clone(), most.clone(), both_arrived.clone());
                async move {
                    use std::sync::atomic::Ordering::SeqCst;
                    let now = in_flight.fetch_add(1, SeqCst) + 1;
                    most.fetch_max(now, SeqCst);
                    if now == 2 {
                        both_arrived.notify_waiters();
                    } else {
                        // Hold the request until the other one arrives, or
                        // long enough that it would have, were it sent.
                        let _ = tokio::time::timeout(
                            std::time::Duration::from_millis(300),
                            both_arrived.notified(),
                        )
                        .await;
                    }
                    in_flight.fetch_sub(1, SeqCst);
                    answer(200, &[], "ok")
                }
            })
            .await
        };
        let scenario = fetcher(&runtime, loopback_allowed());
        let shared =
            sessionbox::SharedLimits::new(1 << 30, turns, sessionbox::TenantCpu::new("t", 100));
        let mut sessions = Vec::new();
        for _ in 0..2 {
            let options = sessionbox::StartOptions {
                shared: Some(Arc::clone(&shared)),
                ..sessionbox::StartOptions::default()
            };
            sessions.push(runtime.start(&scenario, options).await.unwrap());
        }
        let url = format!("/fetch?{slow}/");
        let (a, b) = tokio::join!(
            sessions[0].http_request(request("GET", &url, "")),
            sessions[1].http_request(request("GET", &url, "")),
        );
        assert_eq!((a.unwrap().status, b.unwrap().status), (200, 200));
        assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), turns);
        for session in sessions {
            session.terminate().unwrap();
            session.finished().await.unwrap();
        }
    }
}
