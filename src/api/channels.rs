//! `/v1/channels` and membership routes.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{JsonBody, OptionalJsonBody};
use super::AppState;
use crate::domain::{
    Channel, ChannelId, ChannelName, ChannelType, Member, MemberSummary, Role, UserId,
};
use crate::service::NewChannel;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/channels", post(create))
        .route("/v1/channels/{cid}", get(show))
        .route("/v1/channels/{cid}/members", get(members))
        .route(
            "/v1/channels/{cid}/members/{uid}",
            get(member).put(put_member).delete(remove_member),
        )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateChannel {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    members: Option<Vec<String>>,
}

async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateChannel>,
) -> Result<(StatusCode, Json<Channel>), ApiError> {
    let kind = ChannelType::parse(&body.kind)?;
    let name = body.name.map(ChannelName::parse).transpose()?;
    let id = body.id.as_deref().map(ChannelId::parse).transpose()?;
    let members = body
        .members
        .unwrap_or_default()
        .iter()
        .map(|m| UserId::parse(m))
        .collect::<Result<Vec<_>, _>>()?;
    let new = NewChannel::parse(id, kind, name, members)?;
    let channel = state.service.create_channel(new).await?;
    Ok((StatusCode::CREATED, Json(channel)))
}

async fn show(
    State(state): State<AppState>,
    Path(cid): Path<String>,
) -> Result<Json<Channel>, ApiError> {
    let channel = ChannelId::parse(&cid)?;
    Ok(Json(state.service.channel(channel).await?))
}

#[derive(Serialize)]
struct MemberList {
    members: Vec<MemberSummary>,
}

async fn members(
    State(state): State<AppState>,
    Path(cid): Path<String>,
) -> Result<Json<MemberList>, ApiError> {
    let channel = ChannelId::parse(&cid)?;
    let members = state.service.members(channel).await?;
    Ok(Json(MemberList { members }))
}

fn ids(cid: &str, uid: &str) -> Result<(ChannelId, UserId), ApiError> {
    Ok((ChannelId::parse(cid)?, UserId::parse(uid)?))
}

async fn member(
    State(state): State<AppState>,
    Path((cid, uid)): Path<(String, String)>,
) -> Result<Json<Member>, ApiError> {
    let (channel, user) = ids(&cid, &uid)?;
    Ok(Json(state.service.member(channel, user).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PutMember {
    #[serde(default)]
    role: Option<String>,
}

/// Adds a member or changes its role. Without a role, a new member gets "member" and an
/// existing member keeps the role it has.
async fn put_member(
    State(state): State<AppState>,
    Path((cid, uid)): Path<(String, String)>,
    OptionalJsonBody(body): OptionalJsonBody<PutMember>,
) -> Result<Json<Member>, ApiError> {
    let (channel, user) = ids(&cid, &uid)?;
    let role = body.and_then(|b| b.role).map(Role::parse).transpose()?;
    Ok(Json(state.service.put_member(channel, user, role).await?))
}

async fn remove_member(
    State(state): State<AppState>,
    Path((cid, uid)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (channel, user) = ids(&cid, &uid)?;
    state.service.remove_member(channel, user).await?;
    Ok(StatusCode::NO_CONTENT)
}
