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
use crate::cache::stats::ratio;
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
    /// Why Postgres is down: the client's or the server's own message.
    #[serde(skip_serializing_if = "Option::is_none")]
    postgres_error: Option<String>,
    /// Why Redis is down: it does not answer a PING, or calls fail (the breaker is open).
    #[serde(skip_serializing_if = "Option::is_none")]
    redis_error: Option<String>,
}

fn up_or_down(error: &Option<String>) -> &'static str {
    if error.is_none() {
        "up"
    } else {
        "down"
    }
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let postgres = async {
        match tokio::time::timeout(READY_TIMEOUT, state.db.ping()).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {} ms", READY_TIMEOUT.as_millis())),
        }
    };
    let (postgres_error, ping) = tokio::join!(postgres, state.redis.ping());
    // A PING can succeed while every real call fails (`MOVED`, `NOSCRIPT` loops, a
    // replica that refuses writes): the breaker's reason counts too.
    let redis_error = match ping {
        Err(e) => Some(e.to_string()),
        Ok(()) => state.service.cache().breaker().open_reason(),
    };
    let status = if postgres_error.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        postgres: up_or_down(&postgres_error),
        redis: up_or_down(&redis_error),
        postgres_error,
        redis_error,
    };
    (status, Json(body))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let cache = state.service.cache();
    let fanouts = fanouts_pending(&state).await;
    let text = state.metrics.render(
        state.db.pool_state(),
        &crate::metrics::CacheState {
            stats: cache.stats().snapshot(),
            l1_bypassed: cache.l1().is_bypassed(),
            breaker_open: cache.breaker().is_open(),
            dirty_channels: cache.dirty().len(),
            fills_pending: cache.fills_pending(),
            bounds: state.service.bounds(),
            gate: cache.gate().standings(),
            fanouts,
        },
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// Unfinished background fan-outs and their recipients to go, if Postgres answers within
/// a second.
async fn fanouts_pending(state: &AppState) -> Option<(i64, i64)> {
    let query = state.db.fanouts_pending();
    tokio::time::timeout(std::time::Duration::from_secs(1), query)
        .await
        .ok()?
        .ok()
}

/// L1 and Redis as this instance sees them.
async fn cache_stats(State(state): State<AppState>) -> Json<serde_json::Value> {
    let cache = state.service.cache();
    let stats = cache.stats().snapshot();
    let (entries, weighted_bytes, capacity_bytes) = cache.l1().usage();
    let history = cache.l1().history_usage();
    let hot_channels = cache.redis().count_windows().await.ok();
    let fanouts = fanouts_pending(&state).await;
    Json(serde_json::json!({
        "feeds": {
            "fanouts_pending": fanouts.map(|f| f.0),
            "recipients_pending": fanouts.map(|f| f.1),
        },
        "mode": cache.mode().as_str(),
        "l1": {
            "enabled": cache.l1().is_enabled(),
            "bypassed": cache.l1().is_bypassed(),
            "entries": entries,
            "weighted_bytes": weighted_bytes,
            "capacity_bytes": capacity_bytes,
            "hits": stats.l1_hits,
            "misses": stats.l1_misses,
            "hit_ratio": ratio(stats.l1_hits, stats.l1_misses),
        },
        "redis": {
            "breaker": if cache.breaker().is_open() { "open" } else { "closed" },
            "dirty_channels": cache.dirty().len(),
            "hot_channels": hot_channels,
            "hits": stats.l2_hits,
            "misses": stats.l2_misses,
            "skipped": stats.redis_skipped,
            "hit_ratio": ratio(stats.l2_hits, stats.l2_misses + stats.redis_skipped),
        },
        "history": {
            "entries": history.0,
            "weighted_bytes": history.1,
            "capacity_bytes": history.2,
            "l1_hits": stats.history_l1_hits,
            "redis_hits": stats.history_redis_hits,
            "misses": stats.history_misses,
            "fills": stats.history_fills,
        },
        "latency_by_path": cache.latency().snapshot().summary(),
        "gate": {
            "enabled": cache.gate().is_enabled(),
            "kinds": cache.gate().standings().iter()
                .map(|s| (s.kind.to_owned(), serde_json::json!(s)))
                .collect::<serde_json::Map<_, _>>(),
        },
        "bounds": state.service.bounds().iter()
            .map(|b| (b.name.to_owned(), serde_json::json!({"len": b.len, "limit": b.limit})))
            .collect::<serde_json::Map<_, _>>(),
        "postgres_reads": stats.postgres_reads,
        "fills": stats.fills,
        "fills_refused": stats.fills_refused,
        "fills_dropped": stats.fills_dropped,
        "fills_pending": cache.fills_pending(),
        "invalidations_sent": stats.invalidations_sent,
        "invalidations_received": stats.invalidations_received,
        "notices": {
            "listening": cache.notice_listener_connected(),
            "sent": stats.notices_sent,
            "received": stats.notices_received,
        },
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Flush {
    #[serde(default)]
    channel_id: Option<String>,
}

/// Drops one channel, or everything, from L1 on every instance and from Redis.
async fn flush(
    State(state): State<AppState>,
    OptionalJsonBody(body): OptionalJsonBody<Flush>,
) -> Result<StatusCode, ApiError> {
    let channel = body
        .and_then(|b| b.channel_id)
        .map(|c| ChannelId::parse(&c))
        .transpose()?;
    state.service.cache().flush(channel).await;
    Ok(StatusCode::NO_CONTENT)
}
