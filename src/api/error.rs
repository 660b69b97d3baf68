//! The one HTTP error type. Every non-2xx answer carries the contract's body:
//! `{"error": code, "message": text}`. 5xx causes are logged here, once, and never sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::InvalidInput;
use crate::service;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

/// The body of every non-2xx answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    error: ErrorCode,
    /// What went wrong, in words a client developer understands.
    message: &'a str,
}

/// The contract's error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    PayloadTooLarge,
    Unavailable,
    /// 503 with `Retry-After`: more work than the instance can start in time.
    Overloaded,
    Internal,
}

/// The contract's error code for a status.
fn code(status: StatusCode) -> ErrorCode {
    match status {
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
        StatusCode::FORBIDDEN => ErrorCode::Forbidden,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::CONFLICT => ErrorCode::Conflict,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Unavailable,
        s if s.is_server_error() => ErrorCode::Internal,
        _ => ErrorCode::BadRequest,
    }
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code(status),
            message: message.into(),
        }
    }

    /// 503 `overloaded`, with `Retry-After` (API.md promise 9).
    pub fn overloaded(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: ErrorCode::Overloaded,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<InvalidInput> for ApiError {
    fn from(e: InvalidInput) -> Self {
        ApiError::bad_request(e.0)
    }
}

impl From<service::Error> for ApiError {
    fn from(e: service::Error) -> Self {
        use service::Error as E;
        if let E::Overloaded(cause) = &e {
            tracing::debug!(cause = %cause, "answering 503 overloaded");
            return ApiError::overloaded(e.to_string());
        }
        let status = match &e {
            E::Invalid(_) => StatusCode::BAD_REQUEST,
            E::NotFound(_) => StatusCode::NOT_FOUND,
            E::Forbidden(_) => StatusCode::FORBIDDEN,
            E::Conflict(_) => StatusCode::CONFLICT,
            E::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            E::Unavailable(cause) => {
                tracing::warn!(error = %e, cause = %cause, "answering 503");
                StatusCode::SERVICE_UNAVAILABLE
            }
            E::Internal(cause) => {
                tracing::error!(error = %e, cause = ?cause, "answering 500");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&ErrorBody {
            error: self.code,
            message: &self.message,
        })
        .expect("an error body always serializes");
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.code == ErrorCode::Overloaded {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Gives the contract's error body to errors the framework made itself (unknown route,
/// wrong method, a body over the limit, a malformed query string), which come as text.
pub async fn json_error_bodies(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let message = match status {
        StatusCode::NOT_FOUND => "no such route".to_owned(),
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this route".to_owned(),
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is too large".to_owned(),
        _ => {
            let bytes = axum::body::to_bytes(response.into_body(), 4096)
                .await
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes).trim().to_owned();
            return ApiError::new(status, text).into_response();
        }
    };
    let mut answer = ApiError::new(status, message).into_response();
    if status == StatusCode::METHOD_NOT_ALLOWED {
        if let Some(allow) = response.headers().get(header::ALLOW) {
            answer.headers_mut().insert(header::ALLOW, allow.clone());
        }
    }
    answer
}
