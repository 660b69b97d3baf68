//! Message routes: post, page, show, edit, delete.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::{encode_json, json_bytes, JsonBody, JsonInt, PageQuery};
use super::AppState;
use crate::domain::{
    ChannelId, ClientMsgId, Content, Message, MessageId, Page, PageRequest, UserId,
};
use crate::postgres::NewMessage;
use crate::service::Posted;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, page))
        .routes(routes!(show, edit, delete))
}

/// A new message.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PostMessage {
    #[schema(value_type = uuid::Uuid)]
    sender_id: String,
    /// At most the configured limit (`--max-content-bytes`, default 16 KiB) in UTF-8 bytes.
    #[schema(min_length = 1, max_length = 16384, pattern = "^[^\\x00]*$")]
    content: String,
    /// A message of the same channel.
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    reply_to_id: Option<JsonInt>,
    /// Makes a retry safe: a second post with the same id answers 200 with the original.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64, pattern = "^[^\\x00]*$")]
    client_msg_id: Option<String>,
}

/// Posts a message.
#[utoipa::path(post, path = "/v1/channels/{cid}/messages", tag = "messages",
    params(("cid" = uuid::Uuid, Path, description = "Channel id")),
    request_body = PostMessage,
    responses(
        (status = 201, description = "The new message", body = Message),
        (status = 200, description = "The original message: this client_msg_id was used in this channel before", body = Message),
        (status = 400, description = "Empty content, content over the limit, a NUL byte, or reply_to_id not a message of this channel", body = ErrorBody),
        (status = 403, description = "The sender is not a member", body = ErrorBody),
        (status = 404, description = "No such channel", body = ErrorBody),
    ))]
async fn create(
    State(state): State<AppState>,
    Path(cid): Path<String>,
    JsonBody(body): JsonBody<PostMessage>,
) -> Result<(StatusCode, Json<Message>), ApiError> {
    let channel = ChannelId::parse(&cid)?;
    let new = NewMessage {
        sender: UserId::parse(&body.sender_id)?,
        content: Content::parse(body.content, state.max_content_bytes)?,
        reply_to: body.reply_to_id.map(|id| MessageId(id.0)),
        client_msg_id: body.client_msg_id.map(ClientMsgId::parse).transpose()?,
    };
    let (message, posted) = state.service.post(channel, new).await?;
    let status = match posted {
        Posted::Created => StatusCode::CREATED,
        Posted::Duplicate => StatusCode::OK,
    };
    Ok((status, Json(message)))
}

/// A page of live messages: the newest without a cursor.
#[utoipa::path(get, path = "/v1/channels/{cid}/messages", tag = "messages",
    params(("cid" = uuid::Uuid, Path, description = "Channel id"), PageQuery),
    responses(
        (status = 200, description = "A page", body = Page),
        (status = 400, description = "limit outside 1..=200, both before and after, or a cursor that is not an integer", body = ErrorBody),
        (status = 404, description = "No such channel", body = ErrorBody),
    ))]
async fn page(
    State(state): State<AppState>,
    Path(cid): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let channel = ChannelId::parse(&cid)?;
    let request: PageRequest = query.parse()?;
    let body = state
        .service
        .reads
        .page(channel, request, encode_json)
        .await?;
    Ok(json_bytes(body))
}

/// One message (a tombstone when deleted).
#[utoipa::path(get, path = "/v1/messages/{id}", tag = "messages",
    params(("id" = String, Path, pattern = "^-?[0-9]{1,18}$", description = "Message id (an integer)")),
    responses(
        (status = 200, description = "The message", body = Message),
        (status = 400, description = "The id is not an integer", body = ErrorBody),
        (status = 404, description = "No such message", body = ErrorBody),
    ))]
async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Message>, ApiError> {
    let id = MessageId::parse(&id)?;
    Ok(Json(state.service.reads.message(id).await?))
}

/// A message's new content.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct EditMessage {
    /// As for a new message.
    #[schema(min_length = 1, max_length = 16384, pattern = "^[^\\x00]*$")]
    content: String,
}

/// Edits a message: `updated_at` is set and it gets a new `seq`.
#[utoipa::path(patch, path = "/v1/messages/{id}", tag = "messages",
    params(("id" = String, Path, pattern = "^-?[0-9]{1,18}$", description = "Message id (an integer)")),
    request_body = EditMessage,
    responses(
        (status = 200, description = "The edited message", body = Message),
        (status = 400, description = "The id is not an integer, or bad content", body = ErrorBody),
        (status = 404, description = "No such message", body = ErrorBody),
        (status = 409, description = "The message is deleted", body = ErrorBody),
    ))]
async fn edit(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<EditMessage>,
) -> Result<Json<Message>, ApiError> {
    let id = MessageId::parse(&id)?;
    let content = Content::parse(body.content, state.max_content_bytes)?;
    Ok(Json(state.service.edit(id, content).await?))
}

/// Soft-deletes a message (it stays as a tombstone).
#[utoipa::path(delete, path = "/v1/messages/{id}", tag = "messages",
    params(("id" = String, Path, pattern = "^-?[0-9]{1,18}$", description = "Message id (an integer)")),
    responses(
        (status = 204, description = "Deleted (also when it already was)"),
        (status = 400, description = "The id is not an integer", body = ErrorBody),
        (status = 404, description = "No such message", body = ErrorBody),
    ))]
async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = MessageId::parse(&id)?;
    state.service.delete(id).await?;
    Ok(StatusCode::NO_CONTENT)
}
