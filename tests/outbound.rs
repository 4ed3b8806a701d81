//! Outbound HTTP goes only where the app allows: hosts on its allowlist,
//! and public addresses unless private ones are allowed. Each refused
//! attempt is a standard wasi:http error to the guest, a counted refusal,
//! and a note in the log; a session beside the attacker is not affected.

mod support;

use sessionbox::log::LogSource;
use sessionbox::{Limits, Runtime, Scenario};
use std::sync::Arc;
use support::*;

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
    // The custom data is the URL the Terminated handler tries.
    let mut watched = start(&runtime, &scenario, &hook).await;
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
