//! Operations routes: health, readiness, metrics (open), and cache administration (under
//! `/v1`, so behind the token).

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::OptionalJsonBody;
use super::AppState;
use crate::cache::stats::ratio;
use crate::domain::ChannelId;

/// How long `/readyz` waits for Postgres before it reports it down.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

pub fn open_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(super::openapi::serve))
        .routes(routes!(super::admin::page))
}

pub fn admin_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(cache_stats))
        .routes(routes!(cache_advice))
        .routes(routes!(flush))
}

#[derive(Serialize, utoipa::ToSchema)]
struct Health {
    #[schema(pattern = "^ok$")]
    status: &'static str,
}

/// 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process runs", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Serialize, utoipa::ToSchema)]
struct Readiness {
    #[schema(pattern = "^(up|down)$")]
    postgres: &'static str,
    #[schema(pattern = "^(up|down)$")]
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

/// Whether Postgres and Redis answer, with their own messages when they do not.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Postgres answers (Redis may be down: hotchan then serves from Postgres)", body = Readiness),
        (status = 503, description = "Postgres does not answer", body = Readiness),
    ))]
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
        Ok(()) => state.service.cache().breakers().open_reason(),
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

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let fanouts = fanouts_pending(&state).await;
    let mut text = state.metrics.render(
        state.db.pool_state(),
        &state.service.cache().snapshot(),
        &state.service.bounds(),
        fanouts,
    );
    text.push_str(&admission_text(&state));
    text.push_str(&replica_text(&state));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// Admission control in the Prometheus text format.
fn admission_text(state: &AppState) -> String {
    let a = state.0.admission.state();
    let (reads, share) = state.db.reads_in_flight();
    format!(
        "# HELP hotchan_admission_in_flight /v1 requests running now (at most --max-in-flight).\n\
         # TYPE hotchan_admission_in_flight gauge\nhotchan_admission_in_flight {}\n\
         # HELP hotchan_admission_queued /v1 requests waiting for a slot (at most --max-queued).\n\
         # TYPE hotchan_admission_queued gauge\nhotchan_admission_queued {}\n\
         # HELP hotchan_requests_refused_total Requests refused as overloaded (503): the queue was full, or the wait ran out.\n\
         # TYPE hotchan_requests_refused_total counter\n\
         hotchan_requests_refused_total{{reason=\"queue_full\"}} {}\n\
         hotchan_requests_refused_total{{reason=\"wait\"}} {}\n\
         # HELP hotchan_postgres_reads_in_flight Postgres reads holding a pooled connection, and their share of the pool.\n\
         # TYPE hotchan_postgres_reads_in_flight gauge\n\
         hotchan_postgres_reads_in_flight {reads}\nhotchan_postgres_read_share {share}\n",
        a.in_flight, a.queued, a.refused_full, a.refused_late
    )
}

/// Postgres read replicas and failovers in the Prometheus text format.
fn replica_text(state: &AppState) -> String {
    let mut text = format!(
        "# HELP hotchan_postgres_failovers_total Times a new connection found the primary on a new timeline.\n\
         # TYPE hotchan_postgres_failovers_total counter\nhotchan_postgres_failovers_total {}\n",
        state.db.failovers()
    );
    let Some((primary, replicas)) = state.db.replica_health() else {
        return text;
    };
    text.push_str(
        "# HELP hotchan_postgres_node_reads_total Reads (misses, fills, deep history, counts) each Postgres node answered, with read replicas set.\n\
         # TYPE hotchan_postgres_node_reads_total counter\n",
    );
    text.push_str(&format!(
        "hotchan_postgres_node_reads_total{{node=\"primary\"}} {primary}\n"
    ));
    for r in &replicas {
        text.push_str(&format!(
            "hotchan_postgres_node_reads_total{{node=\"{}\"}} {}\n",
            r.replica, r.reads
        ));
    }
    text.push_str(
        "# HELP hotchan_postgres_replica_lag_seconds How long a replica has been behind a position the primary had (sampled, or a write this instance knows of).\n\
         # TYPE hotchan_postgres_replica_lag_seconds gauge\n",
    );
    for r in &replicas {
        text.push_str(&format!(
            "hotchan_postgres_replica_lag_seconds{{replica=\"{}\"}} {}\n",
            r.replica,
            r.lag_ms as f64 / 1000.0
        ));
    }
    text.push_str(
        "# HELP hotchan_postgres_replica_up 1 while a replica is in the read rotation.\n\
         # TYPE hotchan_postgres_replica_up gauge\n",
    );
    for r in &replicas {
        text.push_str(&format!(
            "hotchan_postgres_replica_up{{replica=\"{}\"}} {}\n",
            r.replica,
            u8::from(r.up)
        ));
    }
    text
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
#[utoipa::path(get, path = "/v1/admin/cache", tag = "operations",
    responses((status = 200, description = "Entries, sizes, hits, misses and hit ratios per tier (see docs/operations.md)", body = Object)))]
async fn cache_stats(State(state): State<AppState>) -> Json<serde_json::Value> {
    let cache = state.service.cache();
    let now = cache.snapshot();
    let stats = now.stats;
    let hot_channels = cache.redis().count_windows().await.ok();
    let fanouts = fanouts_pending(&state).await;
    Json(serde_json::json!({
        "feeds": {
            "fanouts_pending": fanouts.map(|f| f.0),
            "recipients_pending": fanouts.map(|f| f.1),
        },
        "mode": now.mode.as_str(),
        "l1": {
            "enabled": now.l1_enabled,
            "bypassed": now.l1_bypassed,
            "entries": now.l1.entries,
            "weighted_bytes": now.l1.weighted_bytes,
            "capacity_bytes": now.l1.capacity_bytes,
            "hits": stats.l1_hits,
            "misses": stats.l1_misses,
            "hit_ratio": ratio(stats.l1_hits, stats.l1_misses),
        },
        "redis": {
            "breaker": if now.breaker_open { "open" } else { "closed" },
            "nodes": now.nodes.iter().map(|n| serde_json::json!({
                "node": &*n.node,
                "breaker": if n.open { "open" } else { "closed" },
                "reason": n.reason,
            })).collect::<Vec<_>>(),
            "dirty_channels": now.dirty,
            "hot_channels": hot_channels,
            "hits": stats.l2_hits,
            "misses": stats.l2_misses,
            "skipped": stats.redis_skipped,
            "hit_ratio": ratio(stats.l2_hits, stats.l2_misses + stats.redis_skipped),
        },
        "history": {
            "entries": now.history.entries,
            "weighted_bytes": now.history.weighted_bytes,
            "capacity_bytes": now.history.capacity_bytes,
            "l1_hits": stats.history_l1_hits,
            "redis_hits": stats.history_redis_hits,
            "misses": stats.history_misses,
            "fills": stats.history_fills,
        },
        "latency_by_path": cache.latency().snapshot().summary(),
        "bounds": state.service.bounds().iter()
            .map(|b| (b.name.to_owned(), serde_json::json!({"len": b.len, "limit": b.limit})))
            .collect::<serde_json::Map<_, _>>(),
        "audit": now.audit,
        "postgres_reads": stats.postgres_reads,
        "fills": stats.fills,
        "fills_refused": stats.fills_refused,
        "fills_dropped": stats.fills_dropped,
        "fills_pending": now.fills_pending,
        "invalidations_sent": stats.invalidations_sent,
        "invalidations_received": stats.invalidations_received,
        "notices": {
            "listening": now.notices_listening,
            "sent": stats.notices_sent,
            "received": stats.notices_received,
        },
        "outbox_replayed": stats.outbox_replayed,
        "admission": state.0.admission.state(),
        "postgres": postgres_nodes(&state),
    }))
}

/// The Postgres nodes' side of `/v1/admin/cache`: failovers seen, and with read replicas,
/// the reads each node answered and each replica's state.
fn postgres_nodes(state: &AppState) -> serde_json::Value {
    let health = state.db.replica_health();
    serde_json::json!({
        "failovers": state.db.failovers(),
        "primary_reads": health.as_ref().map(|(primary_reads, _)| primary_reads),
        "replicas": health.map(|(_, replicas)| replicas).unwrap_or_default(),
    })
}

/// What to flush: one channel, or everything when absent.
/// Sizing advice from live traffic: an online miss-ratio curve of channel reads.
#[utoipa::path(get, path = "/v1/admin/cache/advice", tag = "operations",
    responses((status = 200, description = "Predicted hit ratios for L1 at ¼× to 4× today's size and for hot windows of 50 to 1,000 messages, with a one-line recommendation (see docs/operations.md)", body = Object)))]
async fn cache_advice(State(state): State<AppState>) -> Json<crate::cache::advice::Advice> {
    let cache = state.service.cache();
    let (entries, bytes) = cache.l1().window_usage();
    let capacity = cache.l1_budget();
    Json(
        cache
            .advice()
            .advice(capacity, entries, bytes, cache.hot_window()),
    )
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Flush {
    #[serde(default)]
    #[schema(value_type = Option<uuid::Uuid>)]
    channel_id: Option<String>,
}

/// Drops one channel, or everything, from L1 on every instance and from Redis.
#[utoipa::path(post, path = "/v1/admin/cache/flush", tag = "operations",
    request_body(content = Option<Flush>, description = "Optional: an empty body flushes everything"),
    responses(
        (status = 204, description = "Flushed"),
        (status = 400, description = "channel_id is not a UUID", body = ErrorBody),
    ))]
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
