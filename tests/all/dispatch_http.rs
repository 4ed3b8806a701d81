//! The HTTP front of a multi-node Sessionbox (issue 17): the load
//! balancer's own configuration, `deploy/haproxy/haproxy.cfg`, run as in
//! production in front of three small HTTP servers standing in for the
//! nodes (no Sessionbox here). Each answers every request with its name and
//! the path it got, has a `/readyz` the test turns to 503 (draining), and
//! echoes WebSocket messages on `/s/ws`.
//!
//! What the load balancer must do:
//! - `/<node_id>/...` reaches that node with the prefix stripped, whether
//!   or not the node is ready (a draining node still serves its sessions),
//!   WebSocket upgrades included;
//! - anything else goes round-robin to the ready nodes; a node whose
//!   /readyz answers 503 leaves the rotation, and comes back on 200.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{StatusCode, Uri};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::support::haproxy::HaProxy;

/// A stand-in node: `/readyz` answers 200 while `ready`, 503 otherwise;
/// `/healthz` 200; `/s/ws` a WebSocket echoing "<id> <path> <message>";
/// anything else "<id> <method> <path?query>".
struct Backend {
    id: String,
    addr: SocketAddr,
    ready: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    async fn start(id: &str) -> Backend {
        let ready = Arc::new(AtomicBool::new(true));
        let name = id.to_owned();
        let readyz = {
            let ready = Arc::clone(&ready);
            move || {
                let ready = ready.load(Ordering::SeqCst);
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "draining")
                    }
                }
            }
        };
        let ws = {
            let name = name.clone();
            move |upgrade: WebSocketUpgrade, uri: Uri| {
                let name = name.clone();
                async move {
                    upgrade.on_upgrade(move |socket| echo(socket, format!("{name} {}", uri.path())))
                }
            }
        };
        let fallback = {
            let name = name.clone();
            move |method: axum::http::Method, uri: Uri| {
                let name = name.clone();
                async move {
                    let path = uri.path_and_query().map_or("", |p| p.as_str()).to_owned();
                    format!("{name} {method} {path}")
                }
            }
        };
        let app = Router::new()
            .route("/readyz", get(readyz))
            .route("/healthz", get(|| async { "alive" }))
            .route("/s/ws", get(ws))
            .fallback(fallback);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Backend {
            id: name,
            addr,
            ready,
            task,
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(mut socket: WebSocket, prefix: String) {
    while let Some(Ok(message)) = socket.recv().await {
        if let Message::Text(text) = message {
            let answer = format!("{prefix} {}", text.as_str());
            if socket.send(Message::Text(answer.into())).await.is_err() {
                return;
            }
        }
    }
}

/// GET `path` through the load balancer: status and body.
async fn get_text(client: &reqwest::Client, lb: &HaProxy, path: &str) -> (u16, String) {
    let answer = client
        .get(format!("{}{path}", lb.url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", lb.log()));
    let status = answer.status().as_u16();
    (status, answer.text().await.unwrap())
}

/// `n` GETs of `path`; how many each node answered (each must answer 200
/// with the path unchanged).
async fn spread(
    client: &reqwest::Client,
    lb: &HaProxy,
    path: &str,
    n: usize,
) -> BTreeMap<String, usize> {
    let mut by_node = BTreeMap::new();
    for _ in 0..n {
        let (status, body) = get_text(client, lb, path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        let (node, rest) = body.split_once(' ').unwrap();
        assert_eq!(
            rest,
            format!("GET {path}"),
            "the path reached the node changed"
        );
        *by_node.entry(node.to_owned()).or_insert(0) += 1;
    }
    by_node
}

#[tokio::test]
async fn node_prefixes_reach_their_node_and_the_rest_goes_round_the_ready_ones() {
    let backends = [
        Backend::start("n1").await,
        Backend::start("n2").await,
        Backend::start("n3").await,
    ];
    let nodes: Vec<(String, SocketAddr)> = backends
        .iter()
        .map(|backend| (backend.id.clone(), backend.addr))
        .collect();
    let lb = HaProxy::start(&nodes).await;
    lb.until_rotation(&["n1", "n2", "n3"], &[]).await;
    let client = reqwest::Client::new();

    // /<node>/... reaches that node, prefix stripped, query kept.
    for id in ["n1", "n2", "n3"] {
        let (status, body) = get_text(&client, &lb, &format!("/{id}/s/token-1/x?y=2")).await;
        assert_eq!(
            (status, body.as_str()),
            (200, &*format!("{id} GET /s/token-1/x?y=2"))
        );
    }
    // A first segment that names no node is no prefix: the path stays.
    assert_eq!(spread(&client, &lb, "/nx/s/token-1", 1).await.len(), 1);

    // Everything else, round-robin over the three.
    let by_node = spread(&client, &lb, "/v1/apps/demo/sessions", 6).await;
    assert_eq!(
        by_node.keys().collect::<Vec<_>>(),
        ["n1", "n2", "n3"],
        "{by_node:?}"
    );

    // A WebSocket through a node prefix: the upgrade passes, the node gets
    // the stripped path.
    let ws_url = format!("{}/n2/s/ws", lb.url.replacen("http://", "ws://", 1));
    let (mut socket, _) = tokio_tungstenite::connect_async(&ws_url)
        .await
        .unwrap_or_else(|e| panic!("WebSocket through {ws_url}: {e}\n{}", lb.log()));
    socket.send(WsMessage::text("ping")).await.unwrap();
    let echo = socket.next().await.unwrap().unwrap();
    assert_eq!(echo, WsMessage::text("n2 /s/ws ping"));

    // n3 drains: /readyz answers 503 and it leaves the rotation...
    backends[2].ready.store(false, Ordering::SeqCst);
    lb.until_rotation(&["n1", "n2"], &["n3"]).await;
    let by_node = spread(&client, &lb, "/v1/apps/demo/sessions", 6).await;
    assert_eq!(
        by_node.keys().collect::<Vec<_>>(),
        ["n1", "n2"],
        "{by_node:?}"
    );
    // ... yet its sessions' URLs (and open WebSockets) still reach it.
    let (status, body) = get_text(&client, &lb, "/n3/s/token-3").await;
    assert_eq!((status, body.as_str()), (200, "n3 GET /s/token-3"));
    let ws_url = format!("{}/n3/s/ws", lb.url.replacen("http://", "ws://", 1));
    let (mut draining, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    draining.send(WsMessage::text("still")).await.unwrap();
    assert_eq!(
        draining.next().await.unwrap().unwrap(),
        WsMessage::text("n3 /s/ws still")
    );
    socket.send(WsMessage::text("pong")).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        WsMessage::text("n2 /s/ws pong")
    );

    // Ready again: back in the rotation.
    backends[2].ready.store(true, Ordering::SeqCst);
    lb.until_rotation(&["n1", "n2", "n3"], &[]).await;
    let by_node = spread(&client, &lb, "/v1/apps/demo/sessions", 6).await;
    assert!(by_node.contains_key("n3"), "{by_node:?}");
}
