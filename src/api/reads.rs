//! Read markers, unread counts and reconnection sync.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::{JsonBody, JsonInt};
use super::AppState;
use crate::domain::{ChannelId, MessageId, SyncRequest, SyncResult, UnreadChannel, UserId};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(mark_read))
        .routes(routes!(channel_unread))
        .routes(routes!(user_unread))
        .routes(routes!(sync))
}

/// Moves a member's read marker.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MarkRead {
    #[schema(value_type = uuid::Uuid)]
    user_id: String,
    /// A message of this channel (deleted ones count).
    #[schema(value_type = i64)]
    message_id: JsonInt,
}

/// The read marker in force.
#[derive(Serialize, utoipa::ToSchema)]
struct Marker {
    last_read_message_id: MessageId,
}

/// Moves the read marker forward (never backwards).
#[utoipa::path(post, path = "/v1/channels/{cid}/read", tag = "reads",
    params(("cid" = uuid::Uuid, Path, description = "Channel id")),
    request_body = MarkRead,
    responses(
        (status = 200, description = "The marker in force", body = Marker),
        (status = 400, description = "message_id is not a message of this channel", body = ErrorBody),
        (status = 403, description = "The user is not a member", body = ErrorBody),
        (status = 404, description = "No such channel", body = ErrorBody),
    ))]
async fn mark_read(
    State(state): State<AppState>,
    Path(cid): Path<String>,
    JsonBody(body): JsonBody<MarkRead>,
) -> Result<Json<Marker>, ApiError> {
    let channel = ChannelId::parse(&cid)?;
    let user = UserId::parse(&body.user_id)?;
    let marker = state
        .service
        .mark_read(channel, user, MessageId(body.message_id.0))
        .await?;
    Ok(Json(Marker {
        last_read_message_id: marker,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct UnreadQuery {
    /// The member whose unread messages are counted.
    #[param(required = true, value_type = uuid::Uuid)]
    user_id: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct UnreadCount {
    unread_count: i64,
}

/// A member's unread count in one channel: live messages of others after the marker.
#[utoipa::path(get, path = "/v1/channels/{cid}/unread", tag = "reads",
    params(("cid" = uuid::Uuid, Path, description = "Channel id"), UnreadQuery),
    responses(
        (status = 200, description = "The count", body = UnreadCount),
        (status = 400, description = "A missing or malformed id", body = ErrorBody),
        (status = 403, description = "The user is not a member", body = ErrorBody),
        (status = 404, description = "No such channel", body = ErrorBody),
    ))]
async fn channel_unread(
    State(state): State<AppState>,
    Path(cid): Path<String>,
    Query(query): Query<UnreadQuery>,
) -> Result<Json<UnreadCount>, ApiError> {
    let channel = ChannelId::parse(&cid)?;
    let user = query
        .user_id
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("the user_id query parameter is required"))
        .and_then(|u| Ok(UserId::parse(u)?))?;
    let unread_count = state.service.reads.unread(channel, user).await?;
    Ok(Json(UnreadCount { unread_count }))
}

/// Channels with unread messages, sorted by channel id.
#[derive(Serialize, utoipa::ToSchema)]
struct UserUnread {
    channels: Vec<UnreadChannel>,
}

/// A user's unread counts: every channel with a count above 0.
#[utoipa::path(get, path = "/v1/users/{uid}/unread", tag = "reads",
    params(("uid" = uuid::Uuid, Path, description = "User id")),
    responses(
        (status = 200, description = "The channels with unread messages", body = UserUnread),
        (status = 400, description = "The user id is not a UUID", body = ErrorBody),
    ))]
async fn user_unread(
    State(state): State<AppState>,
    Path(uid): Path<String>,
) -> Result<Json<UserUnread>, ApiError> {
    let user = UserId::parse(&uid)?;
    let channels = state.service.reads.user_unread(user).await?;
    Ok(Json(UserUnread { channels }))
}

/// What a reconnecting client has seen.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SyncBody {
    /// Channel id to the last `seq` the client saw (0 or more); at most 500 channels.
    #[schema(value_type = BTreeMap<uuid::Uuid, u64>)]
    channels: BTreeMap<String, JsonInt>,
    /// When given, each channel's answer carries the user's unread count.
    #[serde(default)]
    #[schema(value_type = Option<uuid::Uuid>)]
    user_id: Option<String>,
}

/// Everything that changed in each channel since the given `seq`.
#[utoipa::path(post, path = "/v1/sync", tag = "reads",
    request_body = SyncBody,
    responses(
        (status = 200, description = "Changes per channel; unknown channels listed apart", body = SyncResult),
        (status = 400, description = "More than 500 channels, a key that is not a UUID, or a negative seq", body = ErrorBody),
    ))]
async fn sync(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<SyncBody>,
) -> Result<Json<SyncResult>, ApiError> {
    let channels = body.channels.into_iter().map(|(c, s)| (c, s.0)).collect();
    let request = SyncRequest::parse(channels, body.user_id)?;
    Ok(Json(state.service.reads.sync(request).await?))
}
