//! Activity feed routes: publish, show and delete events; feed and channel event pages;
//! the unseen marker.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::JsonBody;
use super::AppState;
use crate::domain::feed::{Event, EventFields, EventId, FeedPage, FeedRequest, NewEvent};
use crate::domain::{ChannelId, InvalidInput, UserId};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/events", post(publish))
        .route("/v1/events/{id}", get(show).delete(delete))
        .route("/v1/users/{uid}/feed", get(feed))
        .route("/v1/users/{uid}/feed/seen", post(seen))
        .route("/v1/users/{uid}/feed/unseen", get(unseen))
        .route("/v1/channels/{cid}/events", get(channel_events))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PublishBody {
    actor_id: String,
    verb: String,
    object_type: String,
    object_id: String,
    #[serde(default)]
    target_type: Option<String>,
    #[serde(default)]
    target_id: Option<String>,
    /// `Some(Value::Null)` and absent both mean no data.
    #[serde(default)]
    data: Option<serde_json::Value>,
    #[serde(default)]
    channel_ids: Option<Vec<String>>,
    #[serde(default)]
    user_ids: Option<Vec<String>>,
    #[serde(default)]
    client_event_id: Option<String>,
}

#[derive(Serialize)]
struct Published {
    event: Event,
    recipients: i32,
}

async fn publish(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<PublishBody>,
) -> Result<(StatusCode, Json<Published>), ApiError> {
    let fields = EventFields {
        actor_id: body.actor_id,
        verb: body.verb,
        object_type: body.object_type,
        object_id: body.object_id,
        target_type: body.target_type,
        target_id: body.target_id,
        data: body.data,
        channel_ids: body.channel_ids,
        user_ids: body.user_ids,
        client_event_id: body.client_event_id,
    };
    let max_data = state.service.feed_config().max_data_bytes;
    let new = NewEvent::parse(fields, max_data)?;
    let answer = state.service.publish_event(new).await?;
    let status = if answer.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = Published {
        event: answer.event,
        recipients: answer.recipients,
    };
    Ok((status, Json(body)))
}

async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Event>, ApiError> {
    let id = EventId::parse(&id)?;
    Ok(Json(state.service.event(id).await?))
}

async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = EventId::parse(&id)?;
    state.service.delete_event(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Raw query values, validated by [`FeedRequest::parse`] for clear messages.
#[derive(Deserialize)]
struct PageQuery {
    limit: Option<String>,
    before: Option<String>,
    after: Option<String>,
}

impl PageQuery {
    fn parse(&self) -> Result<FeedRequest, InvalidInput> {
        FeedRequest::parse(
            self.limit.as_deref(),
            self.before.as_deref(),
            self.after.as_deref(),
        )
    }
}

/// The JSON of a feed page, for the service to encode once per cached feed.
fn encode_page(page: &FeedPage) -> Bytes {
    Bytes::from(serde_json::to_vec(page).expect("a feed page always serializes"))
}

async fn feed(
    State(state): State<AppState>,
    Path(uid): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let user = UserId::parse(&uid)?;
    let request = query.parse()?;
    let body = state.service.feed(user, request, encode_page).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body))
}

async fn channel_events(
    State(state): State<AppState>,
    Path(cid): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Json<FeedPage>, ApiError> {
    let channel = ChannelId::parse(&cid)?;
    let request = query.parse()?;
    Ok(Json(state.service.channel_events(channel, request).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SeenBody {
    event_id: serde_json::Value,
}

#[derive(Serialize)]
struct Seen {
    last_seen_event_id: Option<EventId>,
}

async fn seen(
    State(state): State<AppState>,
    Path(uid): Path<String>,
    JsonBody(body): JsonBody<SeenBody>,
) -> Result<Json<Seen>, ApiError> {
    let user = UserId::parse(&uid)?;
    let id = match body.event_id.as_i64() {
        Some(n) if n > 0 && body.event_id.is_i64() => EventId(n),
        _ => {
            return Err(ApiError::bad_request(format!(
                "event_id must be a positive integer, not {}",
                body.event_id
            )))
        }
    };
    let marker = state.service.mark_feed_seen(user, id).await?;
    Ok(Json(Seen {
        last_seen_event_id: Some(marker),
    }))
}

#[derive(Serialize)]
struct Unseen {
    unseen_count: i64,
    last_seen_event_id: Option<EventId>,
}

async fn unseen(
    State(state): State<AppState>,
    Path(uid): Path<String>,
) -> Result<Json<Unseen>, ApiError> {
    let user = UserId::parse(&uid)?;
    let (unseen_count, last_seen_event_id) = state.service.feed_unseen(user).await?;
    Ok(Json(Unseen {
        unseen_count,
        last_seen_event_id,
    }))
}
