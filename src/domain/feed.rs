//! Activity feeds: events ("Alex commented on Task-42"), their validated input, and feed
//! pages. An event is stored once; each recipient's feed refers to it by id.

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

use super::input::{invalid, InvalidInput};
use super::model::{rfc3339_micros, rfc3339_micros_opt};
pub use super::paging::{FeedCursor, FeedRequest};
use super::{ChannelId, UserId};

/// Most channels one event may be published to.
pub const MAX_EVENT_CHANNELS: usize = 100;
/// Most users one event may name directly.
pub const MAX_EVENT_USERS: usize = 1000;
/// Longest verb, object type or target type, in characters.
const MAX_TOKEN_CHARS: usize = 64;
/// Longest object or target id, in characters.
const MAX_REF_CHARS: usize = 128;
/// Longest `client_event_id`, in characters.
const MAX_CLIENT_EVENT_ID_CHARS: usize = 64;

/// An event id: grows in publish order (a Postgres sequence drawn under the publish lock).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct EventId(pub i64);

impl EventId {
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        s.parse::<i64>()
            .map(EventId)
            .or_else(|_| invalid(format!("event id '{s}' is not an integer")))
    }
}

/// An event as it goes on the wire. `data` is its JSON text, written out as it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Event {
    pub id: EventId,
    pub actor_id: UserId,
    pub verb: String,
    pub object_type: String,
    pub object_id: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    /// A JSON object, or null (always null on a tombstone).
    #[serde(serialize_with = "raw_json")]
    #[schema(value_type = Option<Object>)]
    pub data: Option<String>,
    pub channel_ids: Vec<ChannelId>,
    #[serde(serialize_with = "rfc3339_micros")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339_micros_opt")]
    pub deleted_at: Option<DateTime<Utc>>,
}

impl Event {
    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }
}

/// Writes stored JSON text as JSON, not as a string.
fn raw_json<S: Serializer>(data: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match data {
        Some(text) => {
            let raw = serde_json::value::RawValue::from_string(text.clone())
                .map_err(serde::ser::Error::custom)?;
            raw.serialize(s)
        }
        None => s.serialize_none(),
    }
}

/// One page of a feed or of a channel's events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FeedPage {
    pub events: Vec<Event>,
    pub next_cursor: Option<EventId>,
    pub has_more: bool,
}

impl FeedPage {
    /// Builds a page from up to `limit + 1` events in page order (the extra one only says
    /// that more exist in the same direction).
    pub fn from_rows(mut rows: Vec<Event>, limit: usize) -> FeedPage {
        let has_more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = if has_more {
            rows.last().map(|e| e.id)
        } else {
            None
        };
        FeedPage {
            events: rows,
            next_cursor,
            has_more,
        }
    }
}

/// The newest event ids of one user's feed as the cache holds them (newest first), with
/// the unseen marker. Ids of deleted or expired events stay in it; reads filter them with
/// the events' bodies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedWindow {
    pub ids: Vec<EventId>,
    /// The window holds every id of the feed (it was never trimmed).
    pub complete: bool,
    pub seen: Option<EventId>,
}

impl FeedWindow {
    /// The ids past the cursor in page order, and whether they are all of the feed's ids
    /// in that direction (else a page that runs past them needs Postgres).
    pub fn candidates(&self, cursor: FeedCursor) -> (Vec<EventId>, bool) {
        match cursor {
            FeedCursor::Latest => (self.ids.clone(), self.complete),
            FeedCursor::Before(c) => (
                self.ids.iter().copied().filter(|&id| id < c).collect(),
                self.complete,
            ),
            FeedCursor::After(c) => {
                let oldest = self.ids.last().copied();
                let all = self.complete || oldest.is_some_and(|o| o <= c);
                (
                    self.ids
                        .iter()
                        .rev()
                        .copied()
                        .filter(|&id| id > c)
                        .collect(),
                    all,
                )
            }
        }
    }

    /// Approximate bytes held, for L1's weigher.
    pub fn weight(&self) -> u32 {
        (64 + self.ids.len() * 8) as u32
    }
}

/// A verb, object type or target type: 1 to 64 characters of `[a-z0-9_.-]`.
fn token(field: &str, s: String) -> Result<String, InvalidInput> {
    let ok = (1..=MAX_TOKEN_CHARS).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if ok {
        Ok(s)
    } else {
        invalid(format!(
            "{field} must be 1 to {MAX_TOKEN_CHARS} characters of [a-z0-9_.-], not {s:?}"
        ))
    }
}

/// An object or target id: 1 to 128 characters, no control characters.
fn reference(field: &str, s: String) -> Result<String, InvalidInput> {
    let chars = s.chars().count();
    if chars == 0 || chars > MAX_REF_CHARS {
        return invalid(format!("{field} must have 1 to {MAX_REF_CHARS} characters"));
    }
    if s.chars().any(|c| c <= '\u{1f}' || c == '\u{7f}') {
        return invalid(format!("{field} contains a control character"));
    }
    Ok(s)
}

/// The `data` of an event: a JSON object (or null), at most `max_bytes` in its compact
/// encoding, with no NUL in any key or string (Postgres `jsonb` cannot store one).
fn event_data(
    data: Option<serde_json::Value>,
    max_bytes: usize,
) -> Result<Option<String>, InvalidInput> {
    use serde_json::Value;
    let Some(value) = data else { return Ok(None) };
    let object = match value {
        Value::Null => return Ok(None),
        Value::Object(_) => value,
        _ => return invalid("data must be a JSON object or null"),
    };
    fn has_nul(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().any(has_nul),
            Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            _ => false,
        }
    }
    if has_nul(&object) {
        return invalid("data contains a NUL character");
    }
    let text = serde_json::to_string(&object).expect("a JSON value always serializes");
    if text.len() > max_bytes {
        return invalid(format!(
            "data is {} bytes of compact JSON, more than the limit of {max_bytes}",
            text.len()
        ));
    }
    Ok(Some(text))
}

/// The fields of `POST /v1/events`, as the body gave them (absent and null are both `None`).
#[derive(Debug, Default)]
pub struct EventFields {
    pub actor_id: String,
    pub verb: String,
    pub object_type: String,
    pub object_id: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub data: Option<serde_json::Value>,
    pub channel_ids: Option<Vec<String>>,
    pub user_ids: Option<Vec<String>>,
    pub client_event_id: Option<String>,
}

/// An event to publish, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub actor: UserId,
    pub verb: String,
    pub object_type: String,
    pub object_id: String,
    /// Type and id, together or not at all.
    pub target: Option<(String, String)>,
    pub data: Option<String>,
    /// Duplicates removed, first occurrence kept.
    pub channels: Vec<ChannelId>,
    /// Duplicates removed.
    pub users: Vec<UserId>,
    pub client_event_id: Option<String>,
}

impl NewEvent {
    /// Validates every field before anything is looked up.
    pub fn parse(fields: EventFields, max_data_bytes: usize) -> Result<NewEvent, InvalidInput> {
        let actor = UserId::parse(&fields.actor_id)?;
        let verb = token("verb", fields.verb)?;
        let object_type = token("object_type", fields.object_type)?;
        let object_id = reference("object_id", fields.object_id)?;
        let target = match (fields.target_type, fields.target_id) {
            (None, None) => None,
            (Some(t), Some(id)) => Some((token("target_type", t)?, reference("target_id", id)?)),
            _ => return invalid("target_type and target_id come together or not at all"),
        };
        let data = event_data(fields.data, max_data_bytes)?;
        let channel_ids = fields.channel_ids.unwrap_or_default();
        if channel_ids.len() > MAX_EVENT_CHANNELS {
            return invalid(format!(
                "channel_ids takes at most {MAX_EVENT_CHANNELS} channels, got {}",
                channel_ids.len()
            ));
        }
        let mut channels: Vec<ChannelId> = Vec::with_capacity(channel_ids.len());
        for cid in &channel_ids {
            let id = ChannelId::parse(cid)?;
            if !channels.contains(&id) {
                channels.push(id);
            }
        }
        let user_ids = fields.user_ids.unwrap_or_default();
        if user_ids.len() > MAX_EVENT_USERS {
            return invalid(format!(
                "user_ids takes at most {MAX_EVENT_USERS} users, got {}",
                user_ids.len()
            ));
        }
        let mut users = user_ids
            .iter()
            .map(|u| UserId::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        users.sort_unstable();
        users.dedup();
        let client_event_id = match fields.client_event_id {
            None => None,
            Some(id) => {
                let chars = id.chars().count();
                if chars == 0 || chars > MAX_CLIENT_EVENT_ID_CHARS {
                    return invalid(format!(
                        "client_event_id must have 1 to {MAX_CLIENT_EVENT_ID_CHARS} characters"
                    ));
                }
                if id.contains('\0') {
                    return invalid("client_event_id contains a NUL byte");
                }
                Some(id)
            }
        };
        Ok(NewEvent {
            actor,
            verb,
            object_type,
            object_id,
            target,
            data,
            channels,
            users,
            client_event_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields() -> EventFields {
        EventFields {
            actor_id: uuid::Uuid::new_v4().to_string(),
            verb: "comment".into(),
            object_type: "task".into(),
            object_id: "Task-42".into(),
            ..EventFields::default()
        }
    }

    #[test]
    fn a_minimal_event_is_valid_and_keeps_its_fields() {
        let event = NewEvent::parse(fields(), 4096).unwrap();
        assert_eq!(event.verb, "comment");
        assert_eq!(event.target, None);
        assert!(event.channels.is_empty() && event.users.is_empty());
    }

    #[test]
    fn tokens_and_references_follow_the_contract() {
        for bad in ["", "Comment", "com ment", "ü", &"v".repeat(65)] {
            let f = EventFields {
                verb: bad.to_string(),
                ..fields()
            };
            assert!(NewEvent::parse(f, 4096).is_err(), "{bad:?}");
        }
        let f = EventFields {
            verb: "a.b-c_9".into(),
            object_id: "ü".repeat(128),
            ..fields()
        };
        assert!(NewEvent::parse(f, 4096).is_ok());
        for bad in [
            String::new(),
            "x".repeat(129),
            "a\u{7f}".into(),
            "a\nb".into(),
        ] {
            let f = EventFields {
                object_id: bad.clone(),
                ..fields()
            };
            assert!(NewEvent::parse(f, 4096).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_target_needs_both_halves() {
        let half = EventFields {
            target_type: Some("project".into()),
            ..fields()
        };
        assert!(NewEvent::parse(half, 4096).is_err());
        let whole = EventFields {
            target_type: Some("project".into()),
            target_id: Some("P-7".into()),
            ..fields()
        };
        let event = NewEvent::parse(whole, 4096).unwrap();
        assert_eq!(event.target, Some(("project".into(), "P-7".into())));
    }

    #[test]
    fn data_is_an_object_within_the_limit_without_nul() {
        let with = |data| EventFields {
            data: Some(data),
            ..fields()
        };
        assert_eq!(
            NewEvent::parse(with(json!({"a": [1, "x"]})), 4096)
                .unwrap()
                .data,
            Some(r#"{"a":[1,"x"]}"#.to_string())
        );
        assert_eq!(NewEvent::parse(with(json!(null)), 4096).unwrap().data, None);
        for bad in [json!([1]), json!("s"), json!(3), json!({"k": "a\u{0}b"})] {
            assert!(NewEvent::parse(with(bad.clone()), 4096).is_err(), "{bad}");
        }
        // The limit counts the compact encoding: {"k":"xxxx"} is 8 + 4 bytes.
        assert!(NewEvent::parse(with(json!({"k": "xxxx"})), 12).is_ok());
        assert!(NewEvent::parse(with(json!({"k": "xxxxx"})), 12).is_err());
    }

    #[test]
    fn audiences_are_bounded_and_deduplicated_in_order() {
        let a = uuid::Uuid::new_v4().to_string();
        let b = uuid::Uuid::new_v4().to_string();
        let f = EventFields {
            channel_ids: Some(vec![b.clone(), a.clone(), b.clone()]),
            user_ids: Some(vec![a.clone(), a.clone()]),
            ..fields()
        };
        let event = NewEvent::parse(f, 4096).unwrap();
        let ids: Vec<String> = event.channels.iter().map(|c| c.0.to_string()).collect();
        assert_eq!(ids, [b, a]);
        assert_eq!(event.users.len(), 1);
        let many = EventFields {
            channel_ids: Some(vec![uuid::Uuid::new_v4().to_string(); 101]),
            ..fields()
        };
        assert!(NewEvent::parse(many, 4096).is_err());
        let many = EventFields {
            user_ids: Some(vec![uuid::Uuid::new_v4().to_string(); 1001]),
            ..fields()
        };
        assert!(NewEvent::parse(many, 4096).is_err());
    }

    #[test]
    fn a_window_knows_when_it_holds_every_id_past_a_cursor() {
        let w = FeedWindow {
            ids: vec![EventId(9), EventId(7), EventId(4)],
            complete: false,
            seen: None,
        };
        assert_eq!(w.candidates(FeedCursor::Latest), (w.ids.clone(), false));
        assert_eq!(
            w.candidates(FeedCursor::Before(EventId(8))),
            (vec![EventId(7), EventId(4)], false)
        );
        assert_eq!(
            w.candidates(FeedCursor::After(EventId(4))),
            (vec![EventId(7), EventId(9)], true)
        );
        assert!(!w.candidates(FeedCursor::After(EventId(3))).1);
        let whole = FeedWindow {
            complete: true,
            ..w.clone()
        };
        assert!(whole.candidates(FeedCursor::After(EventId(0))).1);
    }

    #[test]
    fn feed_requests_use_the_page_rules() {
        let r = FeedRequest::parse(Some("200"), None, Some("9")).unwrap();
        assert_eq!(r.cursor, FeedCursor::After(EventId(9)));
        assert!(FeedRequest::parse(Some("0"), None, None).is_err());
        assert!(FeedRequest::parse(None, Some("1"), Some("2")).is_err());
        assert!(FeedRequest::parse(None, Some("x"), None).is_err());
    }
}
