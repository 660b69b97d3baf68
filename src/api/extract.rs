//! Extractors and middleware: JSON bodies that must be objects and refuse unknown fields,
//! answering with the contract's error body; bearer-token auth; per-route request metrics.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequest, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;
use crate::domain::{InvalidInput, PageId, Paging};

/// The raw query of a page (of messages, a feed, or a channel's events), validated by
/// [`Paging::parse`] so that a bad value gets a clear message.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct PageQuery {
    /// Page size, 1 to 200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// Newest first, ids below this one. Not together with `after`.
    #[param(value_type = Option<String>, pattern = "^-?[0-9]{1,18}$")]
    before: Option<String>,
    /// Oldest first, ids above this one. Not together with `before`.
    #[param(value_type = Option<String>, pattern = "^-?[0-9]{1,18}$")]
    after: Option<String>,
}

impl PageQuery {
    pub(super) fn parse<Id: PageId>(&self) -> Result<Paging<Id>, InvalidInput> {
        Paging::parse(
            self.limit.as_deref(),
            self.before.as_deref(),
            self.after.as_deref(),
        )
    }
}

/// The JSON of a page, for the service to encode once per cached entry. The buffer is
/// cut to its length: L1 keeps it, and a growing `Vec` may hold twice its length.
pub fn encode_json<T: serde::Serialize>(page: &T) -> Bytes {
    let mut json = serde_json::to_vec(page).expect("a page always serializes");
    json.shrink_to_fit();
    Bytes::from(json)
}

/// An answer of JSON already encoded.
pub(super) fn json_bytes(body: Bytes) -> impl axum::response::IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], body)
}

/// A JSON request body. The `Content-Type` header is not required; the body must be a JSON
/// object (see [`parse_json`]), and the target types refuse unknown fields
/// (`deny_unknown_fields`).
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A JSON body that may be absent: an empty body is `None`.
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<T, S> FromRequest<S> for OptionalJsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(None));
        }
        parse_json(&bytes).map(|v| OptionalJsonBody(Some(v)))
    }
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is larger than the limit",
            )
        } else {
            ApiError::bad_request(rejection.body_text())
        }
    })
}

/// Parses a request body into `T`. The body must be a JSON object: serde would also fill a
/// struct from an array, by position, which bypasses field names and the unknown-field
/// rule (`["admin"]` as a member body). Checking the first byte here, once for every
/// route, costs nothing on the hot path; the slower look at what the body is instead
/// happens only on the way to a 400.
pub(super) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let is_json_space = |b: &&u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    if bytes.iter().find(|b| !is_json_space(b)) != Some(&b'{') {
        return Err(ApiError::bad_request(not_an_object(bytes)));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Why a body that does not start with `{` is refused.
fn not_an_object(bytes: &[u8]) -> String {
    use serde_json::Value;
    let what = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Array(_)) => "an array",
        Ok(Value::String(_)) => "a string",
        Ok(Value::Number(_)) => "a number",
        Ok(Value::Bool(_)) => "a boolean",
        Ok(Value::Null) => "null",
        // Unreachable: a JSON object starts with `{` after JSON whitespace.
        Ok(Value::Object(_)) => "an object",
        Err(e) => return format!("invalid JSON body: {e}"),
    };
    format!("the request body must be a JSON object, not {what}")
}

/// Refuses a `/v1` request without the configured bearer token (401). The comparison
/// takes the same time wherever the first differing byte is.
pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if token_allows(&state, bearer(request.headers())) {
        Ok(next.run(request).await)
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is required",
        ))
    }
}

/// The bearer token a request presents (empty when none).
pub fn bearer(headers: &axum::http::HeaderMap) -> &str {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

/// Whether `presented` lets a request in: always without a configured token, else when
/// it is the token (compared in constant time).
pub fn token_allows(state: &AppState, presented: &str) -> bool {
    match &state.token {
        None => true,
        Some(token) => presented.as_bytes().ct_eq(token.0.as_bytes()).into(),
    }
}

/// The one middleware every request passes: admits `/v1` requests
/// ([`super::admission`]), gives errors the framework made itself the contract's body
/// ([`super::error::json_error_bodies`]), then counts the request and records its latency
/// under its route template. One layer, not three: each layer of axum's costs a boxed
/// future and a clone of the service behind it on every request.
pub async fn finish(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    // Cheap clones: the matched path is shared, a standard method is a plain value.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let guarded = route
        .as_ref()
        .is_some_and(|r| r.as_str().starts_with("/v1/"));
    let response = match state.0.admission.admit(guarded).await {
        Ok(_slot) => super::error::json_error_bodies(next.run(request).await).await,
        Err(refused) => refused,
    };
    state.0.requests.record(
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        method.as_str(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// A JSON integer in a request body. As in JSON Schema, a number with a zero fraction
/// (`5.0`) is that integer too: JSON itself does not tell the two apart, and clients that
/// hold every number as a double (JavaScript) send them so. `5.5`, and numbers outside
/// the 64-bit range, are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsonInt(pub i64);

impl<'de> serde::Deserialize<'de> for JsonInt {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let number = serde_json::Number::deserialize(d)?;
        if let Some(n) = number.as_i64() {
            return Ok(JsonInt(n));
        }
        // 2^63 is exact as a double; every integral double below it in magnitude fits.
        const LIMIT: f64 = 9_223_372_036_854_775_808.0;
        match number.as_f64() {
            Some(f) if f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f) => Ok(JsonInt(f as i64)),
            _ => Err(serde::de::Error::custom(format_args!(
                "expected a 64-bit integer, not {number}"
            ))),
        }
    }
}
