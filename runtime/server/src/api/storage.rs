//! The operators' window on an app's storage, with the tenant's key: seed
//! it, inspect it, clean it up. The same limits apply as to the app's
//! scenarios (key, value and TTL sizes, the app's quota).
//!
//! - `GET /v1/apps/{app}/storage?prefix=&after=&limit=`: a page of keys,
//!   and what the store holds
//! - `GET /v1/apps/{app}/storage/{key}`: the value's bytes
//! - `PUT /v1/apps/{app}/storage/{key}?ttl=<seconds>` (body: the value)
//! - `DELETE /v1/apps/{app}/storage/{key}`

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Tenant, no_app};
use crate::Server;
use crate::error::{ApiBytes, ApiError, ApiPath, ApiResult};
use sessionbox_host::bindings::RefusalKind;
use sessionbox_host::capabilities::Refused;
use sessionbox_host::capabilities::storage::{AppStorage, rules};
use sessionbox_host::keyvalue::StorageError;
use sessionbox_host::scenario::Scenario;

/// The app's store, and the scenario whose limits apply, if the tenant has
/// the app.
fn store_of(server: &Server, tenant: &str, app: &str) -> ApiResult<(AppStorage, Arc<Scenario>)> {
    let found = server.app(tenant, app).ok_or_else(|| no_app(app))?;
    let store = found.state.storage.ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "this node has no storage")
    })?;
    Ok((store, found.scenario))
}

/// A refusal as an answer: what the rule said, with the status that fits.
fn refused(refused: Refused) -> ApiError {
    let status = match refused.kind {
        RefusalKind::Quota | RefusalKind::Full => StatusCode::INSUFFICIENT_STORAGE,
        RefusalKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        RefusalKind::Unknown => StatusCode::NOT_FOUND,
        RefusalKind::Phase | RefusalKind::Rule => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, refused.reason)
}

fn failed(error: StorageError) -> ApiError {
    refused(error.into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    #[serde(default)]
    prefix: String,
    after: Option<String>,
    limit: Option<u32>,
}

pub(super) async fn list(
    State(server): State<Arc<Server>>,
    Tenant(tenant): Tenant,
    ApiPath(app): ApiPath<String>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (store, scenario) = store_of(&server, &tenant, &app)?;
    let limits = scenario.limits();
    let limit = query.limit.unwrap_or(100);
    rules::check_listing(limits, &query.prefix, limit).map_err(refused)?;
    let page = store
        .backend
        .list(&store.app, &query.prefix, query.after.as_deref(), limit)
        .await
        .map_err(failed)?;
    let used = store.backend.usage(&store.app).await.map_err(failed)?;
    Ok(Json(json!({
        "keys": page.keys,
        "next": page.next,
        "usage": { "keys": used.keys, "bytes": used.bytes },
    })))
}

pub(super) async fn get(
    State(server): State<Arc<Server>>,
    Tenant(tenant): Tenant,
    ApiPath((app, key)): ApiPath<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let (store, scenario) = store_of(&server, &tenant, &app)?;
    let limits = scenario.limits();
    rules::check_key(limits, &key).map_err(refused)?;
    let value = store
        .backend
        .get(&store.app, &key)
        .await
        .map_err(failed)?
        .ok_or_else(|| ApiError::not_found(format!("no key {key:?}")))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], value))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PutQuery {
    /// Seconds until the key expires; never without.
    ttl: Option<u32>,
}

pub(super) async fn put(
    State(server): State<Arc<Server>>,
    Tenant(tenant): Tenant,
    ApiPath((app, key)): ApiPath<(String, String)>,
    query: Result<Query<PutQuery>, axum::extract::rejection::QueryRejection>,
    ApiBytes(value): ApiBytes,
) -> ApiResult<Json<Value>> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (store, scenario) = store_of(&server, &tenant, &app)?;
    let limits = scenario.limits();
    let ttl = rules::check_write(limits, &key, &value, query.ttl).map_err(refused)?;
    let bytes = value.len();
    let quota = rules::quota(limits);
    store
        .backend
        .set(&store.app, &key, value.to_vec(), ttl, quota)
        .await
        .map_err(failed)?;
    Ok(Json(
        json!({ "key": key, "bytes": bytes, "ttl": query.ttl }),
    ))
}

pub(super) async fn delete(
    State(server): State<Arc<Server>>,
    Tenant(tenant): Tenant,
    ApiPath((app, key)): ApiPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    let (store, scenario) = store_of(&server, &tenant, &app)?;
    let limits = scenario.limits();
    rules::check_key(limits, &key).map_err(refused)?;
    let deleted = store
        .backend
        .delete(&store.app, &key)
        .await
        .map_err(failed)?;
    Ok(Json(json!({ "key": key, "deleted": deleted })))
}
