//! Three `sessionbox serve` nodes sharing one PostgreSQL, behind HAProxy
//! (HTTP) and Kamailio (SIP), every one of them real and started here, on
//! loopback: work spreads over the nodes, any node serves any session, a
//! lost node's sessions are marked interrupted, a drained node finishes its
//! own and takes no more.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::PATIENCE;
use crate::support::nodes::{ADMIN, Cluster, KEY};
use crate::support::sipp::{Sipp, Transport};

/// Short, so that a lost node is noticed within seconds.
const LEASE_MS: u64 = 1_500;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn call_api(method: reqwest::Method, url: String, key: &str) -> (StatusCode, Value) {
    let response = client()
        .request(method, url)
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn get(url: String) -> (StatusCode, Value) {
    call_api(reqwest::Method::GET, url, KEY).await
}

/// Starts a session of `app` at `url` (a node, or the load balancer).
async fn start(url: &str, app: &str) -> Value {
    let (status, body) = call_api(
        reqwest::Method::POST,
        format!("{url}/v1/apps/{app}/sessions"),
        KEY,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {value}"))
}

/// The node a session lives on, as the history (any node) tells.
async fn node_of(url: &str, id: &str) -> String {
    let (status, session) = get(format!("{url}/v1/sessions/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    text(&session, "node").to_owned()
}

/// One call from sipp through Kamailio, answered by whichever node it
/// reaches; sipp checks that its INFO is echoed and its BYE answered, which
/// only the node that answered the call does.
async fn call_through_kamailio(cluster: &Cluster) {
    let caller = Sipp::call(
        "uac_info.xml",
        cluster.sip.addr,
        "answer",
        Transport::Udp,
        &[],
    );
    if let Err(failure) = caller.finish(Duration::from_secs(30)).await {
        panic!(
            "a call through Kamailio failed: {failure}\n{}",
            cluster.sip.log()
        );
    }
}

/// A metric's value on a node (0 when it has no sample yet).
async fn metric(url: &str, name: &str) -> f64 {
    let (_, text) = get(format!("{url}/metrics")).await;
    let text = text.as_str().unwrap_or_default().to_owned();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits until `check` holds of the session as the history has it.
async fn until_session(url: &str, id: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, session) = get(format!("{url}/v1/sessions/{id}")).await;
        if check(&session) {
            return session;
        }
        assert!(Instant::now() < deadline, "session {id} stayed {session}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_sessions_storage_and_calls_behind_haproxy_and_kamailio() {
    let cluster = Cluster::start(3, LEASE_MS).await;
    let lb = cluster.lb.url.clone();

    // Sessions started through the load balancer spread over the nodes, and
    // each access URL (which names its node) reaches its session through it.
    let mut by_node: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for _ in 0..9 {
        let started = start(&lb, "remote").await;
        let id = text(&started, "session_id");
        let node = node_of(&lb, id).await;
        let access = text(&started, "access_url");
        assert!(
            access.starts_with(&format!("{lb}/{node}/s/")),
            "{access} names {node}"
        );
        let (status, answer) = get(format!("{access}/status")).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["session"], id, "{answer}");
        by_node.entry(node).or_default().push(started);
    }
    assert_eq!(
        by_node.len(),
        3,
        "every node took sessions: {:?}",
        by_node.keys()
    );

    // Any session is read from any node; an action on a session is
    // forwarded to its owner; so is an access URL sent to the wrong node.
    let n1 = by_node["n1"][0].clone();
    let id = text(&n1, "session_id");
    for node in &cluster.nodes {
        assert_eq!(node_of(&node.url, id).await, "n1", "read on {}", node.id);
    }
    let token = text(&n1, "access_url")
        .rsplit("/s/")
        .next()
        .unwrap()
        .to_owned();
    let misrouted = format!("{}/s/{token}/status", cluster.node("n2").url);
    let (status, answer) = get(misrouted).await;
    assert_eq!(
        (status, &answer["session"]),
        (StatusCode::OK, &json!(id)),
        "{answer}"
    );
    // A WebSocket is sent to the URL that names its node.
    let upgrade = client()
        .get(format!("{}/s/{token}/ws", cluster.node("n3").url))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(upgrade.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        upgrade.headers()["location"],
        format!("{lb}/n1/s/{token}/ws").as_str()
    );
    // The live log comes from the owner; the end is asked of another node,
    // and waited for on a third.
    let (status, log) = get(format!("{}/v1/sessions/{id}/log", cluster.node("n3").url)).await;
    assert_eq!(
        (status, &log["state"]),
        (StatusCode::OK, &json!("live")),
        "{log}"
    );
    let (status, _) = call_api(
        reqwest::Method::DELETE,
        format!("{}/v1/sessions/{id}", cluster.node("n2").url),
        KEY,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, log) = get(format!(
        "{}/v1/sessions/{id}/log?wait=true",
        cluster.node("n3").url
    ))
    .await;
    assert_eq!(
        (status, &log["state"]),
        (StatusCode::OK, &json!("finished")),
        "{log}"
    );
    let texts: Vec<&str> = log["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|line| line["text"].as_str())
        .collect();
    assert!(
        texts.iter().any(|text| text.contains("terminated")),
        "{texts:?}"
    );

    // Storage is shared: one counter, incremented by sessions on every node.
    let mut visits = 0;
    let mut counter_nodes = BTreeMap::new();
    while counter_nodes.len() < 3 {
        let started = start(&lb, "visits").await;
        let node = node_of(&lb, text(&started, "session_id")).await;
        for _ in 0..5 {
            let (status, answer) = get(format!("{}/hit", text(&started, "access_url"))).await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            visits += 1;
            assert_eq!(answer["visits"], visits, "{answer}");
        }
        *counter_nodes.entry(node).or_insert(0) += 5;
        assert!(visits < 100, "the load balancer never reached every node");
    }
    // Every node reads the one count.
    for node in &cluster.nodes {
        let (status, stored) = get(format!("{}/v1/apps/visits/storage/visits", node.url)).await;
        assert_eq!(status, StatusCode::OK, "{stored}");
        assert_eq!(stored, json!(visits), "read on {}", node.id);
    }

    // Calls spread over the nodes through Kamailio, and each call's
    // in-dialog INFO and BYE reach the node that answered it (sipp checks
    // the INFO's echo; another node would answer 481).
    for _ in 0..6 {
        call_through_kamailio(&cluster).await;
    }
    let (status, calls) = get(format!("{lb}/v1/sessions?app=probe")).await;
    assert_eq!(status, StatusCode::OK);
    let mut call_nodes = BTreeMap::new();
    for session in calls["sessions"].as_array().unwrap() {
        *call_nodes
            .entry(text(session, "node").to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(call_nodes.values().sum::<usize>(), 6, "{calls}");
    assert!(call_nodes.len() >= 2, "calls spread: {call_nodes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_node_s_sessions_are_interrupted_and_a_drained_node_s_finish() {
    let mut cluster = Cluster::start(3, LEASE_MS).await;
    let lb = cluster.lb.url.clone();
    // A session on each node, started on the node itself.
    let mut sessions = BTreeMap::new();
    for node in &cluster.nodes {
        let started = start(&node.url, "remote").await;
        assert_eq!(node_of(&lb, text(&started, "session_id")).await, node.id);
        sessions.insert(node.id.clone(), text(&started, "session_id").to_owned());
    }

    // n3 dies: its session is marked interrupted, naming it, within a
    // lease and a renewal of a survivor; the others' are untouched.
    let mut n3 = cluster.nodes.pop().unwrap();
    n3.child.kill().unwrap();
    let killed = Instant::now();
    n3.child.wait().unwrap();
    let lost = until_session(&lb, &sessions["n3"], |s| s["state"] == "interrupted").await;
    let noticed = killed.elapsed();
    assert!(
        text(&lost, "finish_detail").contains("node n3 was lost"),
        "{lost}"
    );
    println!("n3's session was marked interrupted {noticed:?} after the kill");
    let mut marked = 0.0;
    for survivor in ["n1", "n2"] {
        let (_, session) = get(format!("{lb}/v1/sessions/{}", sessions[survivor])).await;
        assert_eq!(session["state"], "live", "{session}");
        let url = &cluster.node(survivor).url;
        marked += metric(url, "sessionbox_lost_sessions_interrupted_total").await;
    }
    assert_eq!(marked, 1.0, "one survivor marked the one session");
    // New sessions and calls go to the survivors.
    cluster.lb.until_rotation(&["n1", "n2"], &["n3"]).await;
    cluster
        .sip
        .until_nodes(&[cluster.node("n1").sip, cluster.node("n2").sip], &[n3.sip])
        .await;
    for _ in 0..4 {
        let started = start(&lb, "remote").await;
        let node = node_of(&lb, text(&started, "session_id")).await;
        assert!(node == "n1" || node == "n2", "a new session on {node}");
    }
    call_through_kamailio(&cluster).await;

    // n2 drains: readiness and SIP OPTIONS answer 503, so neither HAProxy
    // nor Kamailio sends it anything new; a start that reaches it anyway
    // is passed on; its live session runs until the drain deadline and
    // ends through Terminating and Terminated.
    let n2 = cluster.node("n2");
    let (status, drain) = call_api(
        reqwest::Method::POST,
        format!("{}/v1/admin/drain", n2.url),
        ADMIN,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{drain}");
    let (status, _) = get(format!("{}/readyz", n2.url)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(metric(&n2.url, "sessionbox_draining").await, 1.0);
    cluster.lb.until_rotation(&["n1"], &["n2", "n3"]).await;
    cluster
        .sip
        .until_nodes(&[cluster.node("n1").sip], &[n2.sip, n3.sip])
        .await;
    let passed_on = start(&n2.url, "remote").await;
    assert_eq!(node_of(&lb, text(&passed_on, "session_id")).await, "n1");
    for _ in 0..3 {
        let started = start(&lb, "remote").await;
        assert_eq!(node_of(&lb, text(&started, "session_id")).await, "n1");
    }
    let drained = until_session(&lb, &sessions["n2"], |s| s["state"] == "finished").await;
    assert_eq!(drained["events"]["Terminating"], 1, "{drained}");
    assert_eq!(drained["events"]["Terminated"], 1, "{drained}");
    let (_, session) = get(format!("{lb}/v1/sessions/{}", sessions["n1"])).await;
    assert_eq!(session["state"], "live", "{session}");
}
