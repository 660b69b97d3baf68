//! Activity feed routes: publish, show and delete events; feed and channel event pages;
//! the unseen marker.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::{encode_json, json_bytes, JsonBody, JsonInt, PageQuery};
use super::AppState;
use crate::domain::feed::{Event, EventFields, EventId, FeedPage, FeedRequest, NewEvent};
use crate::domain::{ChannelId, UserId};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(publish))
        .routes(routes!(show, delete))
        .routes(routes!(feed))
        .routes(routes!(seen))
        .routes(routes!(unseen))
        .routes(routes!(channel_events))
}

/// A new event. `target_type` and `target_id` come together or not at all.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PublishBody {
    #[schema(value_type = uuid::Uuid)]
    actor_id: String,
    #[schema(pattern = "^[a-z0-9_.-]{1,64}$")]
    verb: String,
    #[schema(pattern = "^[a-z0-9_.-]{1,64}$")]
    object_type: String,
    /// 1 to 128 characters, no control characters.
    #[schema(min_length = 1, max_length = 128, pattern = "^[^\\x00-\\x1f\\x7f]*$")]
    object_id: String,
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9_.-]{1,64}$")]
    target_type: Option<String>,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128, pattern = "^[^\\x00-\\x1f\\x7f]*$")]
    target_id: Option<String>,
    /// A JSON object of at most 4 KiB (compact encoding; `--feed-max-data-bytes`), or null.
    /// `Some(Value::Null)` and absent both mean no data.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    data: Option<serde_json::Value>,
    /// Channels whose members receive the event (at most 100).
    #[serde(default)]
    #[schema(value_type = Option<Vec<uuid::Uuid>>, max_items = 100)]
    channel_ids: Option<Vec<String>>,
    /// Users who receive the event (at most 1,000).
    #[serde(default)]
    #[schema(value_type = Option<Vec<uuid::Uuid>>, max_items = 1000)]
    user_ids: Option<Vec<String>>,
    /// Makes a retry safe: the same id from the same actor answers 200 with the original.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64, pattern = "^[^\\x00]*$")]
    client_event_id: Option<String>,
}

/// A published event and how many feeds it went to.
#[derive(Serialize, utoipa::ToSchema)]
struct Published {
    event: Event,
    recipients: i32,
}

/// Publishes an event to channels' members and to users (fan-out on write).
#[utoipa::path(post, path = "/v1/events", tag = "feeds",
    request_body = PublishBody,
    responses(
        (status = 201, description = "The new event", body = Published),
        (status = 200, description = "The original event: this client_event_id was used by this actor before", body = Published),
        (status = 400, description = "A field breaks its rule, or target_type without target_id (or the reverse)", body = ErrorBody),
        (status = 404, description = "A channel in channel_ids does not exist", body = ErrorBody),
    ))]
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
    let max_data = state.service.feeds.feed_config().max_data_bytes;
    let new = NewEvent::parse(fields, max_data)?;
    let answer = state.service.feeds.publish_event(new).await?;
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

/// One event (a tombstone when deleted).
#[utoipa::path(get, path = "/v1/events/{id}", tag = "feeds",
    params(("id" = String, Path, pattern = "^-?[0-9]{1,18}$", description = "Event id (an integer)")),
    responses(
        (status = 200, description = "The event", body = Event),
        (status = 400, description = "The id is not an integer", body = ErrorBody),
        (status = 404, description = "No such event, or it expired", body = ErrorBody),
    ))]
async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Event>, ApiError> {
    let id = EventId::parse(&id)?;
    Ok(Json(state.service.feeds.event(id).await?))
}

/// Deletes an event from every feed.
#[utoipa::path(delete, path = "/v1/events/{id}", tag = "feeds",
    params(("id" = String, Path, pattern = "^-?[0-9]{1,18}$", description = "Event id (an integer)")),
    responses(
        (status = 204, description = "Deleted (also when it already was)"),
        (status = 400, description = "The id is not an integer", body = ErrorBody),
        (status = 404, description = "No such event, or it expired", body = ErrorBody),
    ))]
async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = EventId::parse(&id)?;
    state.service.feeds.delete_event(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A page of a user's feed.
#[utoipa::path(get, path = "/v1/users/{uid}/feed", tag = "feeds",
    params(("uid" = uuid::Uuid, Path, description = "User id"), PageQuery),
    responses(
        (status = 200, description = "A page", body = FeedPage),
        (status = 400, description = "A bad id, limit or cursor", body = ErrorBody),
    ))]
async fn feed(
    State(state): State<AppState>,
    Path(uid): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let user = UserId::parse(&uid)?;
    let request: FeedRequest = query.parse()?;
    let body = state.service.feeds.feed(user, request, encode_json).await?;
    Ok(json_bytes(body))
}

/// A page of the events published to a channel.
#[utoipa::path(get, path = "/v1/channels/{cid}/events", tag = "feeds",
    params(("cid" = uuid::Uuid, Path, description = "Channel id"), PageQuery),
    responses(
        (status = 200, description = "A page", body = FeedPage),
        (status = 400, description = "A bad id, limit or cursor", body = ErrorBody),
        (status = 404, description = "No such channel", body = ErrorBody),
    ))]
async fn channel_events(
    State(state): State<AppState>,
    Path(cid): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Json<FeedPage>, ApiError> {
    let channel = ChannelId::parse(&cid)?;
    let request: FeedRequest = query.parse()?;
    Ok(Json(
        state.service.feeds.channel_events(channel, request).await?,
    ))
}

/// The newest event the user has seen.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SeenBody {
    /// A positive integer.
    #[schema(value_type = i64, minimum = 1)]
    event_id: serde_json::Value,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Seen {
    last_seen_event_id: Option<EventId>,
}

/// Moves the user's seen marker forward (never backwards).
#[utoipa::path(post, path = "/v1/users/{uid}/feed/seen", tag = "feeds",
    params(("uid" = uuid::Uuid, Path, description = "User id")),
    request_body = SeenBody,
    responses(
        (status = 200, description = "The marker in force", body = Seen),
        (status = 400, description = "event_id is not a positive integer", body = ErrorBody),
    ))]
async fn seen(
    State(state): State<AppState>,
    Path(uid): Path<String>,
    JsonBody(body): JsonBody<SeenBody>,
) -> Result<Json<Seen>, ApiError> {
    let user = UserId::parse(&uid)?;
    let id = match serde_json::from_value::<JsonInt>(body.event_id.clone()) {
        Ok(JsonInt(n)) if n > 0 => EventId(n),
        _ => {
            return Err(ApiError::bad_request(format!(
                "event_id must be a positive integer, not {}",
                body.event_id
            )))
        }
    };
    let marker = state.service.feeds.mark_feed_seen(user, id).await?;
    Ok(Json(Seen {
        last_seen_event_id: Some(marker),
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
struct Unseen {
    unseen_count: i64,
    last_seen_event_id: Option<EventId>,
}

/// How many live events in the user's feed are newer than the seen marker.
#[utoipa::path(get, path = "/v1/users/{uid}/feed/unseen", tag = "feeds",
    params(("uid" = uuid::Uuid, Path, description = "User id")),
    responses(
        (status = 200, description = "The count and the marker", body = Unseen),
        (status = 400, description = "The user id is not a UUID", body = ErrorBody),
    ))]
async fn unseen(
    State(state): State<AppState>,
    Path(uid): Path<String>,
) -> Result<Json<Unseen>, ApiError> {
    let user = UserId::parse(&uid)?;
    let (unseen_count, last_seen_event_id) = state.service.feeds.feed_unseen(user).await?;
    Ok(Json(Unseen {
        unseen_count,
        last_seen_event_id,
    }))
}
