//! Operations routes: health, readiness, metrics (open), and cache administration (under
//! `/v1`, so behind the token).

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::OptionalJsonBody;
use super::AppState;
use crate::domain::ChannelId;

/// How long `/readyz` waits for Postgres before it reports it down.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

pub fn open_routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

pub fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/cache", get(cache_stats))
        .route("/v1/admin/cache/flush", post(flush))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

#[derive(Serialize)]
struct Readiness {
    postgres: &'static str,
    redis: &'static str,
}

fn up_or_down(up: bool) -> &'static str {
    if up {
        "up"
    } else {
        "down"
    }
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let postgres = async {
        matches!(
            tokio::time::timeout(READY_TIMEOUT, state.db.ping()).await,
            Ok(Ok(()))
        )
    };
    let (postgres, redis) = tokio::join!(postgres, state.redis.is_up());
    let status = if postgres {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        postgres: up_or_down(postgres),
        redis: up_or_down(redis),
    };
    (status, Json(body))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let text = state.metrics.render(state.db.pool_state());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// Until the cache tiers land every mode reads from Postgres, so there are no tiers to
/// report: `tiers` is empty and `effective_mode` says "off".
async fn cache_stats(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "mode": state.service.cache_mode().as_str(),
        "effective_mode": "off",
        "tiers": {},
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Flush {
    #[serde(default)]
    channel_id: Option<String>,
}

/// Validates the request; with no cache tiers yet, there is nothing to drop.
async fn flush(OptionalJsonBody(body): OptionalJsonBody<Flush>) -> Result<StatusCode, ApiError> {
    if let Some(cid) = body.and_then(|b| b.channel_id) {
        ChannelId::parse(&cid)?;
    }
    Ok(StatusCode::NO_CONTENT)
}
