//! Message routes: post, page, show, edit, delete.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::error::ApiError;
use super::extract::JsonBody;
use super::AppState;
use crate::domain::{
    ChannelId, ClientMsgId, Content, Message, MessageId, Page, PageRequest, UserId,
};
use crate::postgres::NewMessage;
use crate::service::Posted;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/channels/{cid}/messages", post(create).get(page))
        .route("/v1/messages/{id}", get(show).patch(edit).delete(delete))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PostMessage {
    sender_id: String,
    content: String,
    #[serde(default)]
    reply_to_id: Option<i64>,
    #[serde(default)]
    client_msg_id: Option<String>,
}

async fn create(
    State(state): State<AppState>,
    Path(cid): Path<String>,
    JsonBody(body): JsonBody<PostMessage>,
) -> Result<(StatusCode, Json<Message>), ApiError> {
    let channel = ChannelId::parse(&cid)?;
    let new = NewMessage {
        sender: UserId::parse(&body.sender_id)?,
        content: Content::parse(body.content, state.max_content_bytes)?,
        reply_to: body.reply_to_id.map(MessageId),
        client_msg_id: body.client_msg_id.map(ClientMsgId::parse).transpose()?,
    };
    let (message, posted) = state.service.post(channel, new).await?;
    let status = match posted {
        Posted::Created => StatusCode::CREATED,
        Posted::Duplicate => StatusCode::OK,
    };
    Ok((status, Json(message)))
}

/// Raw query values, validated by [`PageRequest::parse`] for clear messages.
#[derive(Deserialize)]
struct PageQuery {
    limit: Option<String>,
    before: Option<String>,
    after: Option<String>,
}

/// The JSON of a page, for the service to encode once per cached window.
fn encode_page(page: &Page) -> Bytes {
    Bytes::from(serde_json::to_vec(page).expect("a page always serializes"))
}

async fn page(
    State(state): State<AppState>,
    Path(cid): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let channel = ChannelId::parse(&cid)?;
    let request = PageRequest::parse(
        query.limit.as_deref(),
        query.before.as_deref(),
        query.after.as_deref(),
    )?;
    let body = state.service.page(channel, request, encode_page).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body))
}

async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Message>, ApiError> {
    let id = MessageId::parse(&id)?;
    Ok(Json(state.service.message(id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EditMessage {
    content: String,
}

async fn edit(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<EditMessage>,
) -> Result<Json<Message>, ApiError> {
    let id = MessageId::parse(&id)?;
    let content = Content::parse(body.content, state.max_content_bytes)?;
    Ok(Json(state.service.edit(id, content).await?))
}

async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = MessageId::parse(&id)?;
    state.service.delete(id).await?;
    Ok(StatusCode::NO_CONTENT)
}
