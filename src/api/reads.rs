//! Read markers, unread counts and reconnection sync.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::JsonBody;
use super::AppState;
use crate::domain::{ChannelId, MessageId, SyncRequest, SyncResult, UnreadChannel, UserId};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/channels/{cid}/read", post(mark_read))
        .route("/v1/channels/{cid}/unread", get(channel_unread))
        .route("/v1/users/{uid}/unread", get(user_unread))
        .route("/v1/sync", post(sync))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MarkRead {
    user_id: String,
    message_id: i64,
}

#[derive(Serialize)]
struct Marker {
    last_read_message_id: MessageId,
}

async fn mark_read(
    State(state): State<AppState>,
    Path(cid): Path<String>,
    JsonBody(body): JsonBody<MarkRead>,
) -> Result<Json<Marker>, ApiError> {
    let channel = ChannelId::parse(&cid)?;
    let user = UserId::parse(&body.user_id)?;
    let marker = state
        .service
        .mark_read(channel, user, MessageId(body.message_id))
        .await?;
    Ok(Json(Marker {
        last_read_message_id: marker,
    }))
}

#[derive(Deserialize)]
struct UnreadQuery {
    user_id: Option<String>,
}

#[derive(Serialize)]
struct UnreadCount {
    unread_count: i64,
}

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
    let unread_count = state.service.unread(channel, user).await?;
    Ok(Json(UnreadCount { unread_count }))
}

#[derive(Serialize)]
struct UserUnread {
    channels: Vec<UnreadChannel>,
}

async fn user_unread(
    State(state): State<AppState>,
    Path(uid): Path<String>,
) -> Result<Json<UserUnread>, ApiError> {
    let user = UserId::parse(&uid)?;
    let channels = state.service.user_unread(user).await?;
    Ok(Json(UserUnread { channels }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SyncBody {
    channels: BTreeMap<String, i64>,
    #[serde(default)]
    user_id: Option<String>,
}

async fn sync(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<SyncBody>,
) -> Result<Json<SyncResult>, ApiError> {
    let request = SyncRequest::parse(body.channels, body.user_id)?;
    Ok(Json(state.service.sync(request).await?))
}
