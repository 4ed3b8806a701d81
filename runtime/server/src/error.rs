//! API errors: a status and a sentence, answered as `{"error": "..."}`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use sessionbox_host::runtime::StartError;
use sessionbox_host::session::SessionError;

use crate::listener::BodyTimedOut;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {error}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "error": self.message }));
        (self.status, body).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// `Json<T>` whose rejections (malformed JSON, wrong content type, a body
/// over the limit) are answered in the API's own error shape.
pub struct ApiJson<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for ApiJson<T>
where
    axum::Json<T>:
        axum::extract::FromRequest<S, Rejection = axum::extract::rejection::JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(body_error(&rejection, rejection.status(), || {
                rejection.body_text()
            })),
        }
    }
}

/// The request body, whole (within the route's size limit), with its
/// rejections in the API's error shape: 413 past the limit, 408 when the
/// client did not send it in time.
pub struct ApiBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(request, state)
            .await
            .map(ApiBytes)
            .map_err(|rejection| {
                body_error(&rejection, rejection.status(), || rejection.body_text())
            })
    }
}

/// Path parameters, with rejections (a call id that is not a number, say)
/// in the API's error shape.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(ApiError::new(rejection.status(), rejection.body_text())),
        }
    }
}

/// A body that could not be read: 408 when it timed out, otherwise
/// `status` and `text`.
pub fn body_error(
    error: &(dyn std::error::Error + 'static),
    status: StatusCode,
    text: impl FnOnce() -> String,
) -> ApiError {
    let mut cause = Some(error);
    while let Some(inner) = cause {
        if inner.is::<BodyTimedOut>() {
            return ApiError::new(StatusCode::REQUEST_TIMEOUT, BodyTimedOut.to_string());
        }
        cause = inner.source();
    }
    ApiError::new(status, text())
}

/// A start the runtime refused, as the API answers it.
pub fn start_error(error: StartError) -> ApiError {
    let status = match error {
        StartError::AtCapacity { .. } => StatusCode::SERVICE_UNAVAILABLE,
        StartError::CustomDataTooLong { .. } => StatusCode::BAD_REQUEST,
        StartError::Instantiation(_) => StatusCode::UNPROCESSABLE_ENTITY,
        StartError::SharedMemoryFull { .. } => StatusCode::TOO_MANY_REQUESTS,
    };
    ApiError::new(status, error.to_string())
}

/// An event a session could not take, as the API answers it.
pub fn session_error(error: SessionError) -> ApiError {
    let status = match error {
        SessionError::Busy => StatusCode::SERVICE_UNAVAILABLE,
        SessionError::Finished => StatusCode::GONE,
        SessionError::Refused(_) => StatusCode::TOO_MANY_REQUESTS,
        SessionError::ScenarioFailed(_) => StatusCode::BAD_GATEWAY,
        SessionError::Lost => StatusCode::INTERNAL_SERVER_ERROR,
        SessionError::UnknownCall(_) => StatusCode::NOT_FOUND,
    };
    ApiError::new(status, error.to_string())
}
