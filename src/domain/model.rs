//! The objects of the contract, shaped as they go on the wire.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};
use uuid::Uuid;

use super::ChannelType;

/// A channel id (UUID).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct ChannelId(pub Uuid);

/// A user id (UUID).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct UserId(pub Uuid);

/// A message id (Postgres BIGSERIAL).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct MessageId(pub i64);

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// RFC 3339 in UTC with the microseconds Postgres stores: `2026-11-24T10:00:00.123456Z`.
pub(super) fn rfc3339_micros<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
}

pub(super) fn rfc3339_micros_opt<S: Serializer>(
    t: &Option<DateTime<Utc>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339_micros(t, s),
        None => s.serialize_none(),
    }
}

/// A message. `content` is `None` exactly when the message is soft-deleted (a tombstone).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Message {
    pub id: MessageId,
    pub channel_id: ChannelId,
    pub sender_id: UserId,
    pub content: Option<String>,
    pub reply_to_id: Option<MessageId>,
    #[serde(serialize_with = "rfc3339_micros")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339_micros_opt")]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "rfc3339_micros_opt")]
    pub deleted_at: Option<DateTime<Utc>>,
    /// The channel-local change sequence of this message's last change.
    pub seq: i64,
}

impl Message {
    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }
}

/// A channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Channel {
    pub id: ChannelId,
    #[serde(rename = "type")]
    pub kind: ChannelType,
    pub name: Option<String>,
    #[serde(serialize_with = "rfc3339_micros")]
    pub created_at: DateTime<Utc>,
    pub last_seq: i64,
}

/// A channel member with its read marker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Member {
    pub user_id: UserId,
    pub role: String,
    pub last_read_message_id: Option<MessageId>,
    #[serde(serialize_with = "rfc3339_micros")]
    pub joined_at: DateTime<Utc>,
}

/// A member as listed in `GET …/members`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MemberSummary {
    pub user_id: UserId,
    pub role: String,
}

/// One page of live messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Page {
    pub messages: Vec<Message>,
    pub next_cursor: Option<MessageId>,
    pub has_more: bool,
}

impl Page {
    /// Builds a page from up to `limit + 1` rows in page order: the extra row only says
    /// that more live messages exist in the same direction.
    pub fn from_rows(mut rows: Vec<Message>, limit: usize) -> Page {
        let has_more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = if has_more {
            rows.last().map(|m| m.id)
        } else {
            None
        };
        Page {
            messages: rows,
            next_cursor,
            has_more,
        }
    }
}

/// A channel with its unread count, for `GET /v1/users/{uid}/unread`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UnreadChannel {
    pub channel_id: ChannelId,
    pub unread_count: i64,
}

/// The sync answer for one channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SyncChannel {
    pub changes: Vec<Message>,
    pub last_seq: i64,
    pub reset: bool,
    pub missed: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unread_count: Option<i64>,
}

/// The whole sync answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SyncResult {
    pub channels: std::collections::BTreeMap<ChannelId, SyncChannel>,
    pub unknown: Vec<ChannelId>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn message(id: i64) -> Message {
        Message {
            id: MessageId(id),
            channel_id: ChannelId(Uuid::nil()),
            sender_id: UserId(Uuid::nil()),
            content: Some("hi".into()),
            reply_to_id: None,
            created_at: Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, 0).unwrap()
                + chrono::Duration::microseconds(123_456),
            updated_at: None,
            deleted_at: None,
            seq: 1,
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let json = serde_json::to_value(message(1)).unwrap();
        assert_eq!(json["created_at"], "2026-11-24T10:00:00.123456Z");
        assert_eq!(json["updated_at"], serde_json::Value::Null);

        let mut whole_second = message(1);
        whole_second.updated_at = Some(Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, 1).unwrap());
        let json = serde_json::to_value(whole_second).unwrap();
        assert_eq!(json["updated_at"], "2026-11-24T10:00:01.000000Z");
    }

    #[test]
    fn a_page_with_an_extra_row_has_more_and_a_cursor() {
        let page = Page::from_rows(vec![message(5), message(4), message(3)], 2);
        assert!(page.has_more);
        assert_eq!(page.next_cursor, Some(MessageId(4)));
        assert_eq!(page.messages.len(), 2);

        let page = Page::from_rows(vec![message(5), message(4)], 2);
        assert!(!page.has_more);
        assert_eq!(page.next_cursor, None);
    }
}
