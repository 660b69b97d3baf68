//! Validated inputs. Each `parse` either returns a valid value or an [`InvalidInput`] that
//! says, in words a client developer understands, what was wrong.

use std::collections::BTreeMap;

use serde::Serialize;
use uuid::Uuid;

use super::{ChannelId, MessageId, UserId};

/// Default page size when `limit` is absent.
pub const DEFAULT_PAGE_LIMIT: u32 = 50;
/// Largest page size; larger limits answer 400.
pub const MAX_PAGE_LIMIT: u32 = 200;
/// Most channels in one sync request; more answer 400.
pub const MAX_SYNC_CHANNELS: usize = 500;
/// Longest channel name, in characters.
const MAX_NAME_CHARS: usize = 100;
/// Longest role, in characters.
const MAX_ROLE_CHARS: usize = 20;
/// Longest `client_msg_id`, in characters.
const MAX_CLIENT_MSG_ID_CHARS: usize = 64;

/// Input that breaks the contract; becomes a 400 with this text as its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

pub(super) fn invalid<T>(message: impl Into<String>) -> Result<T, InvalidInput> {
    Err(InvalidInput(message.into()))
}

fn parse_uuid(what: &str, s: &str) -> Result<Uuid, InvalidInput> {
    Uuid::try_parse(s).or_else(|_| invalid(format!("{what} '{s}' is not a UUID")))
}

impl ChannelId {
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        parse_uuid("channel id", s).map(ChannelId)
    }
}

impl UserId {
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        parse_uuid("user id", s).map(UserId)
    }
}

impl MessageId {
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        s.parse::<i64>()
            .map(MessageId)
            .or_else(|_| invalid(format!("message id '{s}' is not an integer")))
    }
}

/// `direct` or `group`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChannelType {
    Direct,
    Group,
}

impl ChannelType {
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        match s {
            "direct" => Ok(ChannelType::Direct),
            "group" => Ok(ChannelType::Group),
            other => invalid(format!(
                "type must be \"direct\" or \"group\", not {other:?}"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelType::Direct => "direct",
            ChannelType::Group => "group",
        }
    }
}

/// A channel name of 1 to 100 characters (an absent or null name is no name at all).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelName(String);

impl ChannelName {
    pub fn parse(s: String) -> Result<Self, InvalidInput> {
        let chars = s.chars().count();
        if chars == 0 || chars > MAX_NAME_CHARS {
            return invalid(format!("name must have 1 to {MAX_NAME_CHARS} characters"));
        }
        if s.contains('\0') {
            return invalid("name contains a NUL byte");
        }
        Ok(ChannelName(s))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A member role of 1 to 20 characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role(String);

impl Role {
    pub fn parse(s: String) -> Result<Self, InvalidInput> {
        let chars = s.chars().count();
        if chars == 0 || chars > MAX_ROLE_CHARS {
            return invalid(format!("role must have 1 to {MAX_ROLE_CHARS} characters"));
        }
        if s.contains('\0') {
            return invalid("role contains a NUL byte");
        }
        Ok(Role(s))
    }
    pub fn member() -> Self {
        Role("member".into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Message content: not empty, at most the configured number of UTF-8 bytes, no NUL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Content(String);

impl Content {
    pub fn parse(s: String, max_bytes: usize) -> Result<Self, InvalidInput> {
        if s.is_empty() {
            return invalid("content is empty");
        }
        if s.len() > max_bytes {
            return invalid(format!(
                "content is {} bytes of UTF-8, more than the limit of {max_bytes}",
                s.len()
            ));
        }
        if s.contains('\0') {
            return invalid("content contains a NUL byte");
        }
        Ok(Content(s))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The client's idempotency key for a post: 1 to 64 characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientMsgId(String);

impl ClientMsgId {
    pub fn parse(s: String) -> Result<Self, InvalidInput> {
        let chars = s.chars().count();
        if chars == 0 || chars > MAX_CLIENT_MSG_ID_CHARS {
            return invalid(format!(
                "client_msg_id must have 1 to {MAX_CLIENT_MSG_ID_CHARS} characters"
            ));
        }
        if s.contains('\0') {
            return invalid("client_msg_id contains a NUL byte");
        }
        Ok(ClientMsgId(s))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The `limit` of a page: 1 to 200, 50 when absent.
pub(super) fn page_limit(limit: Option<&str>) -> Result<u32, InvalidInput> {
    match limit {
        None => Ok(DEFAULT_PAGE_LIMIT),
        Some(s) => match s.parse::<u32>() {
            Ok(n) if (1..=MAX_PAGE_LIMIT).contains(&n) => Ok(n),
            _ => invalid(format!(
                "limit must be an integer from 1 to {MAX_PAGE_LIMIT}, not '{s}'"
            )),
        },
    }
}

/// A validated sync request: channel → the seq the client has seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncRequest {
    pub channels: BTreeMap<ChannelId, i64>,
    pub user_id: Option<UserId>,
}

impl SyncRequest {
    pub fn parse(
        channels: BTreeMap<String, i64>,
        user_id: Option<String>,
    ) -> Result<Self, InvalidInput> {
        if channels.len() > MAX_SYNC_CHANNELS {
            return invalid(format!(
                "sync takes at most {MAX_SYNC_CHANNELS} channels, got {}",
                channels.len()
            ));
        }
        let mut parsed = BTreeMap::new();
        for (cid, since) in channels {
            if since < 0 {
                return invalid(format!("since_seq of channel {cid} is negative"));
            }
            parsed.insert(ChannelId::parse(&cid)?, since);
        }
        let user_id = user_id.as_deref().map(UserId::parse).transpose()?;
        Ok(SyncRequest {
            channels: parsed,
            user_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Cursor, PageRequest};

    #[test]
    fn content_limits_are_bytes_and_nul_is_refused() {
        assert!(Content::parse("é".repeat(8192), 16384).is_ok());
        assert!(Content::parse(format!("{}x", "é".repeat(8192)), 16384).is_err());
        assert!(Content::parse(String::new(), 16384).is_err());
        assert!(Content::parse("a\0b".into(), 16384).is_err());
    }

    #[test]
    fn names_and_roles_count_characters() {
        assert!(ChannelName::parse("ü".repeat(100)).is_ok());
        assert!(ChannelName::parse("ü".repeat(101)).is_err());
        assert!(ChannelName::parse(String::new()).is_err());
        assert!(ChannelName::parse("a\0".into()).is_err());
        assert!(ClientMsgId::parse("k\0".into()).is_err());
        assert!(Role::parse("\0".into()).is_err());
        assert!(Role::parse("r".repeat(20)).is_ok());
        assert!(Role::parse("r".repeat(21)).is_err());
        assert!(Role::parse(String::new()).is_err());
    }

    #[test]
    fn page_requests_validate_limit_and_cursor() {
        let latest = PageRequest::parse(None, None, None).unwrap();
        assert_eq!(latest.limit, DEFAULT_PAGE_LIMIT);
        assert_eq!(latest.cursor, Cursor::Latest);
        assert_eq!(
            PageRequest::parse(Some("200"), Some("7"), None)
                .unwrap()
                .cursor,
            Cursor::Before(MessageId(7))
        );
        for bad in ["0", "201", "-1", "ten", ""] {
            assert!(PageRequest::parse(Some(bad), None, None).is_err(), "{bad}");
        }
        assert!(PageRequest::parse(None, Some("1"), Some("2")).is_err());
        assert!(PageRequest::parse(None, Some("1.5"), None).is_err());
        assert!(PageRequest::parse(None, None, Some("x")).is_err());
    }

    #[test]
    fn sync_requests_are_bounded() {
        let many: BTreeMap<String, i64> =
            (0..501).map(|_| (Uuid::new_v4().to_string(), 0)).collect();
        assert!(SyncRequest::parse(many, None).is_err());
        let bad_key = BTreeMap::from([("nope".to_string(), 0)]);
        assert!(SyncRequest::parse(bad_key, None).is_err());
        let negative = BTreeMap::from([(Uuid::new_v4().to_string(), -1)]);
        assert!(SyncRequest::parse(negative, None).is_err());
    }
}
