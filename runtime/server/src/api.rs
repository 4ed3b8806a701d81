//! The management API (`/v1`, JSON, a tenant's API key as bearer token),
//! the access URLs (`/s/...`) and `/metrics`.

mod storage;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use futures_util::FutureExt;
use futures_util::future::Either;
use serde::Deserialize;
use serde_json::{Value, json};
use tower::{Service, ServiceExt};

use crate::error::{ApiBytes, ApiError, ApiJson, ApiPath, ApiResult, session_error};
use crate::history::{SessionFilter, StoredSession, unix_ms};
use crate::{Server, access};
use sessionbox_host::IncomingCall;
use sessionbox_host::bindings::Header;
use sessionbox_host::scenario::MAX_COMPONENT_BYTES;

/// What `serve` answers with. Access URLs go straight to
/// [`access::deliver`]: they are the data plane, one request per event, and
/// the router's matching, path extraction and boxing cost more than the
/// event's delivery. Everything else goes through the API's router.
pub fn service(
    server: Arc<Server>,
) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send> + Clone + Send + 'static
{
    let api = router(Arc::clone(&server));
    tower::service_fn(move |request: Request| {
        if request.uri().path().starts_with(access::PREFIX) {
            Either::Left(access::deliver(Arc::clone(&server), request).map(Ok))
        } else {
            Either::Right(api.clone().oneshot(request))
        }
    })
}

fn router(server: Arc<Server>) -> Router {
    let body_limit = server.settings().max_body_bytes;
    // Actions on a session that lives on another node go to that node.
    let owned = Router::new()
        .route("/v1/sessions/{id}", delete(terminate_session))
        .route("/v1/sessions/{id}/log", get(session_log))
        .route("/v1/sessions/{id}/recordings", get(recordings))
        .route("/v1/sessions/{id}/recordings/{n}", get(recording))
        .route("/v1/sessions/{id}/calls/{call}/hangup", post(call_hangup))
        .route("/v1/sessions/{id}/calls/{call}/tone", post(call_tone))
        .route("/v1/sessions/{id}/calls/{call}/message", post(call_message))
        .route_layer(from_fn_with_state(Arc::clone(&server), to_owner));
    // A node without room passes new sessions on to one with room.
    let starts = Router::new()
        .route("/v1/apps/{app}/sessions", post(start_session))
        .route("/v1/apps/{app}/calls", post(incoming_call))
        .route_layer(from_fn_with_state(Arc::clone(&server), to_room));
    Router::new()
        .merge(owned)
        .merge(starts)
        .route(
            "/v1/apps/{app}/scenario",
            put(replace_scenario).layer(DefaultBodyLimit::max(MAX_COMPONENT_BYTES)),
        )
        .route("/v1/apps/{app}/storage", get(storage::list))
        .route(
            "/v1/apps/{app}/storage/{*key}",
            get(storage::get).put(storage::put).delete(storage::delete),
        )
        .route("/v1/sessions", get(list_sessions))
        .route("/v1/sessions/{id}", get(session))
        .route("/v1/admin/drain", post(drain))
        .route("/metrics", get(metrics))
        .route("/healthz", get(liveness))
        .route("/readyz", get(readiness))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|request: Request| async move {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "{} is not allowed on {}",
                    request.method(),
                    request.uri().path()
                ),
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(server)
}

/// The tenant whose API key the request carries.
struct Tenant(String);

impl FromRequestParts<Arc<Server>> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, server: &Arc<Server>) -> ApiResult<Self> {
        let key = bearer(&parts.headers)?;
        server
            .tenant_of(key)
            .map(|tenant| Tenant(tenant.to_owned()))
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unknown API key"))
    }
}

/// The bearer key a request carries.
fn bearer(headers: &HeaderMap) -> ApiResult<&str> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing API key: send Authorization: Bearer <key>",
            )
        })?;
    Ok(header.strip_prefix("Bearer ").unwrap_or_default())
}

/// Sends an action on a session to the node it lives on, when that is
/// another (once: a forwarded request is answered where it lands).
async fn to_owner(
    State(server): State<Arc<Server>>,
    Path(params): Path<HashMap<String, String>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(cluster) = &server.cluster else {
        return next.run(request).await;
    };
    let id = params.get("id").map_or("", String::as_str);
    if cluster.is_forwarded(request.headers()) || server.live.handle(id).is_some() {
        return next.run(request).await;
    }
    // The handler answers a request without a tenant's key.
    let Some(tenant) = bearer(request.headers())
        .ok()
        .and_then(|key| server.tenant_of(key))
    else {
        return next.run(request).await;
    };
    match cluster.owner(id, Some(tenant)).await {
        Ok(Some(node)) => cluster.forward(&node, request).await,
        Ok(None) => next.run(request).await,
        Err(error) => ApiError::internal(format!("{error:#}")).into_response(),
    }
}

/// Passes a new session to another node with room when this one has none
/// (it drains, or is full). The rule: a node takes what reaches it while it
/// has room, since the load balancer already spreads the starts; only then
/// does it pick, among the nodes whose lease holds and that do not drain,
/// the one with the most free places.
async fn to_room(State(server): State<Arc<Server>>, request: Request, next: Next) -> Response {
    let Some(cluster) = &server.cluster else {
        return next.run(request).await;
    };
    if cluster.is_forwarded(request.headers()) || server.no_room().is_none() {
        return next.run(request).await;
    }
    match cluster.with_room().await {
        Ok(Some(node)) => cluster.forward(&node, request).await,
        // The handler refuses it, saying why.
        Ok(None) => next.run(request).await,
        Err(error) => ApiError::internal(format!("{error:#}")).into_response(),
    }
}

fn no_app(name: &str) -> ApiError {
    ApiError::not_found(format!("no app named {name:?}"))
}

fn no_session() -> ApiError {
    ApiError::not_found("no such session")
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StartRequest {
    #[serde(default)]
    custom_data: String,
}

/// `POST /v1/apps/{app}/sessions`: a new session; Started is delivered.
async fn start_session(
    State(server): State<Arc<Server>>,
    Tenant(tenant): Tenant,
    ApiPath(app_name): ApiPath<String>,
    ApiBytes(body): ApiBytes,
) -> ApiResult<impl IntoResponse> {
    let app = server
        .app(&tenant, &app_name)
        .ok_or_else(|| no_app(&app_name))?;
    // An empty body is a start without custom data.
    let request: StartRequest = if body.is_empty() {
        StartRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))?
    };
    let started = server
        .start_session(&app_name, &app, request.custom_data)
        .await?;
    let id = started.handle.id();
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "session_id": id,
            "access_url": started.access_url,
            "log_url": server.log_url(id),
        })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallRequest {
    from: String,
    to: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    headers: HashMap<String, String>,
}

/// `POST /v1/apps/{app}/calls`: an incoming call from the in-process
/// telephony source: a new session, Started, then CallAlerting.
async fn incoming_call(
    State(server): State<Arc<Server>>,
    Tenant(tenant): Tenant,
    ApiPath(app_name): ApiPath<String>,
    ApiJson(call): ApiJson<CallRequest>,
) -> ApiResult<impl IntoResponse> {
    let app = server
        .app(&tenant, &app_name)
        .ok_or_else(|| no_app(&app_name))?;
    let started = server.start_session(&app_name, &app, String::new()).await?;
    let mut headers: Vec<_> = call
        .headers
        .into_iter()
        .map(|(name, value)| Header { name, value })
        .collect();
    headers.sort_by(|a, b| a.name.cmp(&b.name));
    let call_id = started
        .handle
        .incoming_call(IncomingCall {
            caller_id: call.from,
            destination: call.to,
            display_name: call.display_name,
            headers,
        })
        .map_err(session_error)?;
    let id = started.handle.id();
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "session_id": id,
            "call_id": call_id,
            "access_url": started.access_url,
            "log_url": server.log_url(id),
        })),
    ))
}

/// `PUT /v1/apps/{app}/scenario` (body: the component): validated, then
/// used for new sessions; live sessions keep theirs.
async fn replace_scenario(
    State(server): State<Arc<Server>>,
    Tenant(tenant): Tenant,
    ApiPath(app_name): ApiPath<String>,
    ApiBytes(body): ApiBytes,
) -> ApiResult<Json<Value>> {
    server
        .app(&tenant, &app_name)
        .ok_or_else(|| no_app(&app_name))?;
    let scenario = server
        .replace_scenario(&app_name, &body)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}")))?;
    Ok(Json(json!({
        "app": app_name,
        "scenario_sha256": scenario.content_hash(),
    })))
}

/// `GET /v1/sessions/{id}`: status, timestamps, finish reason, counters.
async fn session(
    State(server): State<Arc<Server>>,
    Tenant(tenant): Tenant,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let session = tenants_session(&server, &tenant, &id).await?;
    Ok(Json(
        serde_json::to_value(session).map_err(ApiError::internal)?,
    ))
}

/// `GET /v1/sessions/{id}/log`: the log so far (live) or in full (finished).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    /// Wait (up to `LOG_WAIT`) for a live session to finish, and answer
    /// with its whole log: no polling, no sleeping.
    #[serde(default)]
    wait: bool,
}

/// The longest `?wait=true` holds a request.
const LOG_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

async fn session_log(
    State(server): State<Arc<Server>>,
    Tenant(tenant): Tenant,
    ApiPath(id): ApiPath<String>,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if let Some(handle) = server.live_session(&tenant, &id) {
        if query.wait {
            let _ = tokio::time::timeout(LOG_WAIT, handle.finished()).await;
        }
        // A session that finished is answered from its record, whether or
        // not the history has it yet.
        let (state, log) = match handle.record() {
            Some(record) => ("finished", record.log.clone()),
            None => ("live", handle.log()),
        };
        return Ok(Json(json!({
            "session_id": id,
            "state": state,
            "lines": log.lines,
            "dropped_lines": log.dropped_lines,
        })));
    }
    stored_log(&server, &tenant, &id).await
}

async fn stored_log(server: &Server, tenant: &str, id: &str) -> ApiResult<Json<Value>> {
    let stored = tenants_session(server, tenant, id).await?;
    let lines = server.history().log(id).await.map_err(ApiError::internal)?;
    Ok(Json(json!({
        "session_id": id,
        "state": stored.state,
        "lines": lines,
        "dropped_lines": stored.dropped_log_lines,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    app: Option<String>,
    state: Option<String>,
    finish_reason: Option<String>,
    /// Unix milliseconds.
    since: Option<u64>,
    limit: Option<u32>,
}

/// `GET /v1/sessions?app=&state=&finish_reason=&since=&limit=`
async fn list_sessions(
    State(server): State<Arc<Server>>,
    Tenant(tenant): Tenant,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if let Some(state) = &query.state
        && !["live", "finished", "interrupted"].contains(&state.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "state must be live, finished or interrupted, not {state:?}"
        )));
    }
    if let Some(since) = query.since
        && i64::try_from(since).is_err()
    {
        return Err(ApiError::bad_request(format!(
            "since is unix milliseconds, at most {}, not {since}",
            i64::MAX
        )));
    }
    let filter = SessionFilter {
        tenant,
        app: query.app,
        state: query.state,
        finish_reason: query.finish_reason,
        since_ms: query.since,
        limit: query.limit.unwrap_or(100).min(1_000),
    };
    let sessions = server
        .history()
        .list(&filter)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({
        "sessions": sessions,
        "as_of_ms": unix_ms(std::time::SystemTime::now()),
    })))
}

/// `DELETE /v1/sessions/{id}`: asks a live session to end (Terminating,
/// then Terminated).
async fn terminate_session(
    State(server): State<Arc<Server>>,
    Tenant(tenant): Tenant,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let handle = server.live_session(&tenant, &id).ok_or_else(no_session)?;
    handle.terminate().map_err(session_error)?;
    Ok(StatusCode::ACCEPTED)
}

/// The session `id` of `tenant`, live or past; 404 for any other.
async fn tenants_session(server: &Server, tenant: &str, id: &str) -> ApiResult<StoredSession> {
    server
        .session_of(tenant, id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(no_session)
}

/// `GET /v1/sessions/{id}/recordings`: the session's kept recordings.
async fn recordings(
    State(server): State<Arc<Server>>,
    Tenant(tenant): Tenant,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    tenants_session(&server, &tenant, &id).await?;
    let recordings = server
        .recordings()
        .list(&id)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({ "session_id": id, "recordings": recordings })))
}

/// `GET /v1/sessions/{id}/recordings/{n}`: one recording, as WAV.
async fn recording(
    State(server): State<Arc<Server>>,
    Tenant(tenant): Tenant,
    ApiPath((id, n)): ApiPath<(String, u32)>,
) -> ApiResult<impl IntoResponse> {
    tenants_session(&server, &tenant, &id).await?;
    let wav = server
        .recordings()
        .wav(&id, n)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("session {id} has no recording {n}")))?;
    Ok(([(axum::http::header::CONTENT_TYPE, "audio/wav")], wav))
}

async fn call_hangup(
    State(server): State<Arc<Server>>,
    Tenant(tenant): Tenant,
    ApiPath((id, call)): ApiPath<(String, u32)>,
) -> ApiResult<impl IntoResponse> {
    let handle = server.live_session(&tenant, &id).ok_or_else(no_session)?;
    handle.remote_hangup(call).map_err(session_error)?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToneRequest {
    tone: String,
}

async fn call_tone(
    State(server): State<Arc<Server>>,
    Tenant(tenant): Tenant,
    ApiPath((id, call)): ApiPath<(String, u32)>,
    ApiJson(request): ApiJson<ToneRequest>,
) -> ApiResult<impl IntoResponse> {
    let valid = request.tone.len() == 1 && "0123456789*#ABCD".contains(request.tone.as_str());
    if !valid {
        return Err(ApiError::bad_request(format!(
            "a tone is one of 0-9, *, #, A-D, not {:?}",
            request.tone
        )));
    }
    let handle = server.live_session(&tenant, &id).ok_or_else(no_session)?;
    handle
        .remote_tone(call, &request.tone)
        .map_err(session_error)?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageRequest {
    text: String,
}

async fn call_message(
    State(server): State<Arc<Server>>,
    Tenant(tenant): Tenant,
    ApiPath((id, call)): ApiPath<(String, u32)>,
    ApiJson(request): ApiJson<MessageRequest>,
) -> ApiResult<impl IntoResponse> {
    let handle = server.live_session(&tenant, &id).ok_or_else(no_session)?;
    handle
        .remote_message(call, &request.text)
        .map_err(session_error)?;
    Ok(StatusCode::ACCEPTED)
}

/// `GET /healthz`: the process serves.
async fn liveness() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 while the node can take new sessions; 503 while it
/// drains, is full, cannot renew its lease, or cannot write the history
/// (starts would be refused).
async fn readiness(State(server): State<Arc<Server>>) -> (StatusCode, Json<Value>) {
    let history = server.history_health();
    if history.is_degraded() {
        let body = json!({ "status": "degraded", "history": history });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body));
    }
    if let Some(reason) = server.no_room() {
        let status = if server.is_draining() {
            "draining"
        } else {
            "unavailable"
        };
        let body = json!({ "status": status, "reason": reason });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body));
    }
    (StatusCode::OK, Json(json!({ "status": "ready" })))
}

/// `POST /v1/admin/drain` (the operator's key): begins a drain, as SIGTERM
/// does, without stopping the process.
async fn drain(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    let Some(admin_key) = &server.settings().admin_key else {
        return Err(ApiError::not_found(
            "the operator's endpoints are off: set server.admin_key",
        ));
    };
    let key = bearer(&headers)?;
    if !crate::live::constant_time_eq(key.as_bytes(), admin_key.as_bytes()) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "not the operator's key",
        ));
    }
    server.drain();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "node": server.node_id,
            "draining": true,
            "live_sessions": server.live.count(),
            "drain_deadline_ms": server.settings().drain_deadline,
        })),
    ))
}

/// `GET /metrics`, Prometheus text format.
async fn metrics(State(server): State<Arc<Server>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        server.runtime().metrics().render(),
    )
}
