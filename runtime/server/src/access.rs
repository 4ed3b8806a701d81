//! Access URLs: `{public_url}/s/{session id}{secret}` and everything below.
//! A plain request becomes an HttpRequest event and the scenario's answer
//! is the response; a WebSocket upgrade becomes a WebSocket event (or
//! NewWebSocketFailed, past calls + 3).
//!
//! An unknown session and a wrong secret get the same 404; a finished
//! session (with the right secret) gets 410. A session that lives on
//! another node (a load balancer sent the request to the wrong one) is
//! reached there: a request is forwarded, a WebSocket redirected (307) to
//! the access URL that names its node.

use std::sync::Arc;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;

use crate::error::session_error;
use crate::error::{ApiError, ApiResult, body_error};
use crate::postgres::nodes::Node;
use crate::{Gone, Server};
use sessionbox_host::bindings::{Header, HttpRequestEvent, HttpResponse, Message};
use sessionbox_host::capabilities::websockets::SocketCommand;
use sessionbox_host::session::{SessionHandle, WebsocketLink};

/// Hex characters of a session id, then of its secret.
const ID_LEN: usize = 32;

/// Delivers a request below [`PREFIX`] (matched by [`crate::service`], not
/// by the API's router): an HttpRequest event answered with the scenario's
/// response, or a WebSocket upgrade.
pub async fn deliver(server: Arc<Server>, request: Request) -> Response {
    handle(&server, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Where access URLs start.
pub const PREFIX: &str = "/s/";

async fn handle(server: &Server, request: Request) -> ApiResult<Response> {
    let (token, path) = split_target(request.uri());
    let (handle, message_limit) = match find(server, token).await? {
        Found::Here(handle, message_limit) => (handle, message_limit),
        Found::Elsewhere(node) => return Ok(elsewhere(server, &node, request).await),
    };
    let headers: Vec<Header> = request
        .headers()
        .iter()
        .map(|(name, value)| Header {
            name: name.as_str().to_owned(),
            value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
        })
        .collect();

    if is_websocket_upgrade(&request) {
        let (mut parts, _) = request.into_parts();
        let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        let link = handle
            .open_websocket(path, headers)
            .await
            .map_err(session_error)?;
        return Ok(upgrade
            .max_message_size(message_limit)
            .on_upgrade(move |socket| pump(socket, link, handle))
            .into_response());
    }

    let method = request.method().as_str().to_owned();
    let body = read_body(request.into_body(), server.settings().max_body_bytes).await?;
    let event = HttpRequestEvent {
        method,
        path,
        headers,
        body,
    };
    let response = handle.http_request(event).await.map_err(session_error)?;
    into_http(response)
}

/// The token of an access URL and what the scenario sees of it: the path
/// and query below it, as the client sent them (not percent-decoded),
/// starting with `/`.
fn split_target(uri: &Uri) -> (&str, String) {
    let target = uri.path_and_query().map_or("/", |target| target.as_str());
    let below = target.strip_prefix(PREFIX).unwrap_or_default();
    let end = below.find(['/', '?']).unwrap_or(below.len());
    let (token, path) = below.split_at(end);
    if path.starts_with('/') {
        (token, path.to_owned())
    } else {
        (token, format!("/{path}"))
    }
}

/// A request body read whole into one buffer (the event's), or 413 past
/// `limit` bytes.
async fn read_body(mut body: Body, limit: usize) -> ApiResult<Vec<u8>> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over {limit} bytes"),
        )
    };
    let announced = usize::try_from(body.size_hint().lower()).unwrap_or(usize::MAX);
    if announced > limit {
        return Err(too_large());
    }
    // Up front only what a small body needs: an announced length is not
    // yet data, and a slow client should not hold a large buffer for it.
    let mut bytes = Vec::with_capacity(announced.min(64 << 10));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            body_error(&e, StatusCode::BAD_REQUEST, || {
                format!("reading the body: {e}")
            })
        })?;
        if let Some(data) = frame.data_ref() {
            if bytes.len() + data.len() > limit {
                return Err(too_large());
            }
            bytes.extend_from_slice(data);
        }
    }
    Ok(bytes)
}

/// Where the session a token names lives.
enum Found {
    /// Here: its handle and its WebSocket message limit.
    Here(SessionHandle, usize),
    /// On another node.
    Elsewhere(Node),
}

/// The live session a token names, or the right error.
async fn find(server: &Server, token: &str) -> ApiResult<Found> {
    let not_found = || ApiError::not_found("no such session");
    if token.len() != 2 * ID_LEN || !token.is_ascii() {
        return Err(not_found());
    }
    let (id, secret) = token.split_at(ID_LEN);
    match server.access(id, secret).await {
        Ok(Some((handle, message_limit))) => Ok(Found::Here(handle, message_limit)),
        Ok(None) => Err(not_found()),
        Err(Gone::Elsewhere(node)) => Ok(Found::Elsewhere(node)),
        Err(Gone::Finished) => Err(ApiError::new(StatusCode::GONE, "the session has finished")),
        Err(Gone::Unreadable(error)) => Err(ApiError::internal(error)),
    }
}

/// A request for a session on `node`: forwarded there, or, for a
/// WebSocket (which a forward would have to carry for its whole life),
/// redirected to the access URL that names the node.
async fn elsewhere(server: &Server, node: &Node, request: Request) -> Response {
    let cluster = server
        .cluster
        .as_ref()
        .expect("only a cluster knows other nodes");
    if is_websocket_upgrade(&request) {
        let target = request
            .uri()
            .path_and_query()
            .map_or("/", |target| target.as_str());
        let location = format!("{}{target}", node.public_url);
        return match HeaderValue::from_str(&location) {
            Ok(location) => (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, location)],
            )
                .into_response(),
            Err(_) => {
                ApiError::internal("the node's public URL is not a valid header").into_response()
            }
        };
    }
    cluster.forward(node, request).await
}

fn is_websocket_upgrade(request: &Request) -> bool {
    request
        .headers()
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"))
}

/// The scenario's answer as an HTTP response; an answer HTTP cannot carry
/// is the scenario's fault (502), said plainly.
fn into_http(response: HttpResponse) -> ApiResult<Response> {
    let bad = |what: String| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("the scenario answered with {what}"),
        )
    };
    let status = StatusCode::from_u16(response.status)
        .ok()
        .filter(|s| (100..=599).contains(&s.as_u16()))
        .ok_or_else(|| bad(format!("an invalid status {}", response.status)))?;
    let mut http = Response::builder().status(status);
    for Header { name, value } in response.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad(format!("an invalid header name {name:?}")))?;
        let value = HeaderValue::from_str(&value)
            .map_err(|_| bad(format!("an invalid value for header {name}")))?;
        http = http.header(name, value);
    }
    http.body(Body::from(response.body))
        .map_err(|e| bad(e.to_string()))
}

/// Carries one WebSocket: client messages and close to the session as
/// events; the scenario's sends and close to the client.
async fn pump(socket: WebSocket, mut link: WebsocketLink, handle: SessionHandle) {
    let id = link.id;
    let (mut to_client, mut from_client) = socket.split();
    loop {
        tokio::select! {
            incoming = from_client.next() => {
                let event = match incoming {
                    Some(Ok(WsMessage::Text(text))) => {
                        handle.websocket_message(id, Message::Text(text.to_string()))
                    }
                    Some(Ok(WsMessage::Binary(bytes))) => {
                        handle.websocket_message(id, Message::Binary(bytes.to_vec()))
                    }
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                    Some(Ok(WsMessage::Close(frame))) => {
                        let (code, reason) = frame
                            .map(|f| (f.code, f.reason.to_string()))
                            .unwrap_or((1005, String::new()));
                        let _ = handle.websocket_closed(id, code, reason);
                        return;
                    }
                    // The connection dropped without a close frame.
                    Some(Err(_)) | None => {
                        let _ = handle.websocket_closed(id, 1006, "connection lost".into());
                        return;
                    }
                };
                if event.is_err() {
                    // The session is gone or not keeping up: end the socket.
                    let _ = to_client.send(close(1011, "session unavailable")).await;
                    return;
                }
            }
            command = link.commands.recv() => match command {
                Some(SocketCommand::Send(Message::Text(text))) => {
                    if to_client.send(WsMessage::Text(text.into())).await.is_err() {
                        let _ = handle.websocket_closed(id, 1006, "connection lost".into());
                        return;
                    }
                }
                Some(SocketCommand::Send(Message::Binary(bytes))) => {
                    if to_client.send(WsMessage::Binary(Bytes::from(bytes))).await.is_err() {
                        let _ = handle.websocket_closed(id, 1006, "connection lost".into());
                        return;
                    }
                }
                Some(SocketCommand::Close { code, reason }) => {
                    let _ = to_client.send(close(code, &reason)).await;
                    return;
                }
                None => {
                    let _ = to_client.send(close(1001, "session ended")).await;
                    return;
                }
            },
        }
    }
}

fn close(code: u16, reason: &str) -> WsMessage {
    WsMessage::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}
