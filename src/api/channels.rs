//! `/v1/channels` and membership routes.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::{JsonBody, OptionalJsonBody};
use super::AppState;
use crate::domain::{
    Channel, ChannelId, ChannelName, ChannelType, Member, MemberSummary, Role, UserId,
};
use crate::service::NewChannel;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(show))
        .routes(routes!(members))
        .routes(routes!(member, put_member, remove_member))
}

/// A new channel. A `direct` channel has exactly 2 distinct members.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateChannel {
    #[serde(rename = "type")]
    #[schema(value_type = ChannelType)]
    kind: String,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 100, pattern = "^[^\\x00]*$")]
    name: Option<String>,
    /// The channel's id; a new one is made when absent.
    #[serde(default)]
    #[schema(value_type = Option<uuid::Uuid>)]
    id: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Vec<uuid::Uuid>>)]
    members: Option<Vec<String>>,
}

/// Creates a channel, with its first members.
#[utoipa::path(post, path = "/v1/channels", tag = "channels",
    request_body = CreateChannel,
    responses(
        (status = 201, description = "The new channel", body = Channel),
        (status = 400, description = "A bad type or name, a member id that is not a UUID, or a direct channel without exactly 2 distinct members", body = ErrorBody),
        (status = 409, description = "A channel with this id exists", body = ErrorBody),
    ))]
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

/// One channel.
#[utoipa::path(get, path = "/v1/channels/{cid}", tag = "channels",
    params(("cid" = uuid::Uuid, Path, description = "Channel id")),
    responses(
        (status = 200, description = "The channel", body = Channel),
        (status = 400, description = "The channel id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such channel", body = ErrorBody),
    ))]
async fn show(
    State(state): State<AppState>,
    Path(cid): Path<String>,
) -> Result<Json<Channel>, ApiError> {
    let channel = ChannelId::parse(&cid)?;
    Ok(Json(state.service.reads.channel(channel).await?))
}

/// A channel's members, sorted by user id.
#[derive(Serialize, utoipa::ToSchema)]
struct MemberList {
    members: Vec<MemberSummary>,
}

/// A channel's members.
#[utoipa::path(get, path = "/v1/channels/{cid}/members", tag = "channels",
    params(("cid" = uuid::Uuid, Path, description = "Channel id")),
    responses(
        (status = 200, description = "The members, sorted by user id", body = MemberList),
        (status = 400, description = "The channel id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such channel", body = ErrorBody),
    ))]
async fn members(
    State(state): State<AppState>,
    Path(cid): Path<String>,
) -> Result<Json<MemberList>, ApiError> {
    let channel = ChannelId::parse(&cid)?;
    let members = state.service.reads.members(channel).await?;
    Ok(Json(MemberList { members }))
}

fn ids(cid: &str, uid: &str) -> Result<(ChannelId, UserId), ApiError> {
    Ok((ChannelId::parse(cid)?, UserId::parse(uid)?))
}

/// One member, with its read marker.
#[utoipa::path(get, path = "/v1/channels/{cid}/members/{uid}", tag = "channels",
    params(("cid" = uuid::Uuid, Path, description = "Channel id"),
           ("uid" = uuid::Uuid, Path, description = "User id")),
    responses(
        (status = 200, description = "The member", body = Member),
        (status = 400, description = "An id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such channel, or the user is not a member", body = ErrorBody),
    ))]
async fn member(
    State(state): State<AppState>,
    Path((cid, uid)): Path<(String, String)>,
) -> Result<Json<Member>, ApiError> {
    let (channel, user) = ids(&cid, &uid)?;
    Ok(Json(state.service.reads.member(channel, user).await?))
}

/// A member's role (default "member").
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PutMember {
    #[serde(default)]
    #[schema(min_length = 1, max_length = 20, pattern = "^[^\\x00]*$")]
    role: Option<String>,
}

/// Adds a member or changes its role. Without a role, a new member gets "member" and an
/// existing member keeps the role it has.
#[utoipa::path(put, path = "/v1/channels/{cid}/members/{uid}", tag = "channels",
    params(("cid" = uuid::Uuid, Path, description = "Channel id"),
           ("uid" = uuid::Uuid, Path, description = "User id")),
    request_body(content = Option<PutMember>, description = "Optional: an empty body keeps the role (or gives \"member\" to a new member)"),
    responses(
        (status = 200, description = "The member as it is now", body = Member),
        (status = 400, description = "An id is not a UUID, or a bad role", body = ErrorBody),
        (status = 404, description = "No such channel", body = ErrorBody),
    ))]
async fn put_member(
    State(state): State<AppState>,
    Path((cid, uid)): Path<(String, String)>,
    OptionalJsonBody(body): OptionalJsonBody<PutMember>,
) -> Result<Json<Member>, ApiError> {
    let (channel, user) = ids(&cid, &uid)?;
    let role = body.and_then(|b| b.role).map(Role::parse).transpose()?;
    Ok(Json(state.service.put_member(channel, user, role).await?))
}

/// Removes a member.
#[utoipa::path(delete, path = "/v1/channels/{cid}/members/{uid}", tag = "channels",
    params(("cid" = uuid::Uuid, Path, description = "Channel id"),
           ("uid" = uuid::Uuid, Path, description = "User id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "An id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such channel, or the user is not a member", body = ErrorBody),
    ))]
async fn remove_member(
    State(state): State<AppState>,
    Path((cid, uid)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (channel, user) = ids(&cid, &uid)?;
    state.service.remove_member(channel, user).await?;
    Ok(StatusCode::NO_CONTENT)
}
