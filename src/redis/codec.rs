//! The codec of values stored in Redis. Each value starts with a format byte and a schema
//! version; a value this build cannot decode is a miss, never an error, so a rolling
//! deploy that changes the layout only costs refills. Lua reads the fixed big-endian
//! header (see `lua/README.md`); the rest is bincode.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::feed::{Event, EventId};
use crate::domain::history::Run;
use crate::domain::{Channel, ChannelId, ChannelType, Member, Message, MessageId, UserId};

/// The codec: 1 = fixed header + bincode 2 (standard config).
pub const FORMAT: u8 = 1;
/// The layout of the bincode part.
pub const SCHEMA: u8 = 1;
/// Written into the window's meta hash; a reader with another value treats it as a miss.
pub const META_FORMAT: &str = "1:1";

/// The JSON of a message page as the API writes it: a page kept in Redis by an instance
/// of another build is served only when this is the same. Raise it whenever the JSON of
/// a page changes.
pub const PAGE_FORMAT: u8 = 1;

/// The meta field a latest page of `limit` messages is kept under (`lua/store_page.lua`).
pub fn page_field(limit: u32) -> String {
    format!("page:{PAGE_FORMAT}:{limit}")
}

/// A kept page: the seq of the window it was made from (big endian, as Lua reads it),
/// then the page.
pub fn page_value(seq: i64, body: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + body.len());
    value.extend_from_slice(&seq.to_be_bytes());
    value.extend_from_slice(body);
    value
}

/// The page of a kept value, without a copy.
pub fn stored_page(value: &bytes::Bytes) -> Option<bytes::Bytes> {
    (value.len() > 8).then(|| value.slice(8..))
}

/// Length of a list element's header: format, schema, id, seq, flags.
const MESSAGE_HEADER: usize = 19;
/// Length of a member value's header: format, schema, last read id, joined at.
const MEMBER_HEADER: usize = 18;
const DELETED: u8 = 1;

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(us: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us)
}

/// `Some(None)` for no time, `None` for a time out of range (a miss).
fn optional_time(us: Option<i64>) -> Option<Option<DateTime<Utc>>> {
    match us {
        Some(us) => from_micros(us).map(Some),
        None => Some(None),
    }
}

fn i64_at(bytes: &[u8], at: usize) -> Option<i64> {
    Some(i64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn bincode_tail<T: Serialize>(mut head: Vec<u8>, value: &T) -> Vec<u8> {
    let body = bincode::serde::encode_to_vec(value, config())
        .expect("bincode encodes plain structs into a Vec");
    head.extend_from_slice(&body);
    head
}

fn decode_tail<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Option<T> {
    let (value, read) = bincode::serde::decode_from_slice(bytes, config()).ok()?;
    (read == bytes.len()).then_some(value)
}

/// The parts of a message not in the header. The channel is the key's.
#[derive(Serialize, Deserialize)]
struct StoredMessage {
    sender: u128,
    content: Option<String>,
    reply_to: Option<i64>,
    created_at: i64,
    updated_at: Option<i64>,
    deleted_at: Option<i64>,
}

pub fn encode_message(m: &Message) -> Vec<u8> {
    let mut head =
        Vec::with_capacity(MESSAGE_HEADER + 64 + m.content.as_ref().map_or(0, String::len));
    head.extend_from_slice(&[FORMAT, SCHEMA]);
    head.extend_from_slice(&m.id.0.to_be_bytes());
    head.extend_from_slice(&m.seq.to_be_bytes());
    head.push(if m.is_deleted() { DELETED } else { 0 });
    bincode_tail(
        head,
        &StoredMessage {
            sender: m.sender_id.0.as_u128(),
            content: m.content.clone(),
            reply_to: m.reply_to_id.map(|r| r.0),
            created_at: micros(m.created_at),
            updated_at: m.updated_at.map(micros),
            deleted_at: m.deleted_at.map(micros),
        },
    )
}

pub fn decode_message(channel: ChannelId, bytes: &[u8]) -> Option<Message> {
    if bytes.len() < MESSAGE_HEADER || bytes[0] != FORMAT || bytes[1] != SCHEMA {
        return None;
    }
    let stored: StoredMessage = decode_tail(&bytes[MESSAGE_HEADER..])?;
    let deleted = bytes[18] & DELETED != 0;
    if deleted != stored.deleted_at.is_some() {
        return None;
    }
    Some(Message {
        id: MessageId(i64_at(bytes, 2)?),
        channel_id: channel,
        sender_id: UserId(Uuid::from_u128(stored.sender)),
        content: stored.content,
        reply_to_id: stored.reply_to.map(MessageId),
        created_at: from_micros(stored.created_at)?,
        updated_at: optional_time(stored.updated_at)?,
        deleted_at: optional_time(stored.deleted_at)?,
        seq: i64_at(bytes, 10)?,
    })
}

/// An event body (shared by every feed that holds its id): format, schema, then bincode.
#[derive(Serialize, Deserialize)]
struct StoredEvent {
    id: i64,
    actor: u128,
    verb: String,
    object_type: String,
    object_id: String,
    target_type: Option<String>,
    target_id: Option<String>,
    data: Option<String>,
    channels: Vec<u128>,
    created_at: i64,
    deleted_at: Option<i64>,
}

pub fn encode_event(e: &Event) -> Vec<u8> {
    let head = vec![FORMAT, SCHEMA];
    bincode_tail(
        head,
        &StoredEvent {
            id: e.id.0,
            actor: e.actor_id.0.as_u128(),
            verb: e.verb.clone(),
            object_type: e.object_type.clone(),
            object_id: e.object_id.clone(),
            target_type: e.target_type.clone(),
            target_id: e.target_id.clone(),
            data: e.data.clone(),
            channels: e.channel_ids.iter().map(|c| c.0.as_u128()).collect(),
            created_at: micros(e.created_at),
            deleted_at: e.deleted_at.map(micros),
        },
    )
}

pub fn decode_event(bytes: &[u8]) -> Option<Event> {
    if bytes.len() < 2 || bytes[0] != FORMAT || bytes[1] != SCHEMA {
        return None;
    }
    let s: StoredEvent = decode_tail(&bytes[2..])?;
    Some(Event {
        id: EventId(s.id),
        actor_id: UserId(Uuid::from_u128(s.actor)),
        verb: s.verb,
        object_type: s.object_type,
        object_id: s.object_id,
        target_type: s.target_type,
        target_id: s.target_id,
        data: s.data,
        channel_ids: s
            .channels
            .into_iter()
            .map(|c| ChannelId(Uuid::from_u128(c)))
            .collect(),
        created_at: from_micros(s.created_at)?,
        deleted_at: optional_time(s.deleted_at)?,
    })
}

/// A run of deep history (`crate::domain::history`): format, schema, top, low, flags
/// (1 complete, 2 open),
/// then the bincode of its messages, each encoded as a list element of a window.
pub fn encode_run(run: &Run) -> Vec<u8> {
    let mut head = Vec::with_capacity(19);
    head.extend_from_slice(&[FORMAT, SCHEMA]);
    head.extend_from_slice(&run.top.0.to_be_bytes());
    head.extend_from_slice(&run.low.0.to_be_bytes());
    head.push(u8::from(run.complete) | (u8::from(run.open) << 1));
    let messages: Vec<Vec<u8>> = run.messages.iter().map(encode_message).collect();
    bincode_tail(head, &messages)
}

pub fn decode_run(channel: ChannelId, bytes: &[u8]) -> Option<Run> {
    if bytes.len() < 19 || bytes[0] != FORMAT || bytes[1] != SCHEMA {
        return None;
    }
    let stored: Vec<Vec<u8>> = decode_tail(&bytes[19..])?;
    let messages = stored
        .iter()
        .map(|m| decode_message(channel, m))
        .collect::<Option<Vec<_>>>()?;
    Some(Run {
        top: MessageId(i64_at(bytes, 2)?),
        low: MessageId(i64_at(bytes, 10)?),
        complete: bytes[18] & 1 != 0,
        open: bytes[18] & 2 != 0,
        messages,
    })
}

#[derive(Serialize, Deserialize)]
struct StoredChannel {
    direct: bool,
    name: Option<String>,
    created_at: i64,
}

/// The channel object without `last_seq` (that is the meta hash's `seq`).
pub fn encode_channel(c: &Channel) -> Vec<u8> {
    bincode_tail(
        vec![FORMAT, SCHEMA],
        &StoredChannel {
            direct: c.kind == ChannelType::Direct,
            name: c.name.clone(),
            created_at: micros(c.created_at),
        },
    )
}

pub fn decode_channel(id: ChannelId, last_seq: i64, bytes: &[u8]) -> Option<Channel> {
    if bytes.len() < 2 || bytes[0] != FORMAT || bytes[1] != SCHEMA {
        return None;
    }
    let stored: StoredChannel = decode_tail(&bytes[2..])?;
    Some(Channel {
        id,
        kind: if stored.direct {
            ChannelType::Direct
        } else {
            ChannelType::Group
        },
        name: stored.name,
        created_at: from_micros(stored.created_at)?,
        last_seq,
    })
}

/// A member value: header (marker, joined_at) for Lua, then the role.
pub fn encode_member(m: &Member) -> Vec<u8> {
    let mut head = Vec::with_capacity(MEMBER_HEADER + m.role.len() + 1);
    head.extend_from_slice(&[FORMAT, SCHEMA]);
    head.extend_from_slice(&m.last_read_message_id.map_or(0, |id| id.0).to_be_bytes());
    head.extend_from_slice(&micros(m.joined_at).to_be_bytes());
    bincode_tail(head, &m.role)
}

pub fn decode_member(user: UserId, bytes: &[u8]) -> Option<Member> {
    if bytes.len() < MEMBER_HEADER || bytes[0] != FORMAT || bytes[1] != SCHEMA {
        return None;
    }
    let marker = i64_at(bytes, 2)?;
    Some(Member {
        user_id: user,
        role: decode_tail(&bytes[MEMBER_HEADER..])?,
        last_read_message_id: (marker != 0).then_some(MessageId(marker)),
        joined_at: from_micros(i64_at(bytes, 10)?)?,
    })
}

/// `joined_at` as the mark_read script compares it.
pub fn joined_at_micros(m: &Member) -> i64 {
    micros(m.joined_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(us: i64) -> DateTime<Utc> {
        Utc.timestamp_micros(us).unwrap()
    }

    #[test]
    fn messages_round_trip_and_the_header_is_readable() {
        let channel = ChannelId(Uuid::new_v4());
        let live = Message {
            id: MessageId(4711),
            channel_id: channel,
            sender_id: UserId(Uuid::new_v4()),
            content: Some("héllo 👋".into()),
            reply_to_id: Some(MessageId(42)),
            created_at: t(1_795_000_000_123_456),
            updated_at: Some(t(1_795_000_001_000_000)),
            deleted_at: None,
            seq: 57,
        };
        let bytes = encode_message(&live);
        assert_eq!(&bytes[..2], &[FORMAT, SCHEMA]);
        assert_eq!(i64_at(&bytes, 2), Some(4711));
        assert_eq!(i64_at(&bytes, 10), Some(57));
        assert_eq!(bytes[18], 0);
        assert_eq!(decode_message(channel, &bytes), Some(live.clone()));

        let tombstone = Message {
            content: None,
            deleted_at: Some(t(1_795_000_002_000_000)),
            ..live
        };
        let bytes = encode_message(&tombstone);
        assert_eq!(bytes[18], DELETED);
        assert_eq!(decode_message(channel, &bytes), Some(tombstone));
    }

    #[test]
    fn values_of_another_format_or_truncated_are_misses() {
        let channel = ChannelId(Uuid::new_v4());
        let m = Message {
            id: MessageId(1),
            channel_id: channel,
            sender_id: UserId(Uuid::new_v4()),
            content: Some("x".into()),
            reply_to_id: None,
            created_at: t(0),
            updated_at: None,
            deleted_at: None,
            seq: 1,
        };
        let mut bytes = encode_message(&m);
        assert_eq!(decode_message(channel, &bytes[..bytes.len() - 1]), None);
        bytes[1] = SCHEMA + 1;
        assert_eq!(decode_message(channel, &bytes), None);
        assert_eq!(decode_message(channel, b"garbage"), None);
    }

    #[test]
    fn channels_and_members_round_trip() {
        let c = Channel {
            id: ChannelId(Uuid::new_v4()),
            kind: ChannelType::Direct,
            name: Some("dm".into()),
            created_at: t(1_000_001),
            last_seq: 9,
        };
        assert_eq!(decode_channel(c.id, 9, &encode_channel(&c)), Some(c));

        let m = Member {
            user_id: UserId(Uuid::new_v4()),
            role: "admin".into(),
            last_read_message_id: Some(MessageId(77)),
            joined_at: t(1_795_000_000_000_001),
        };
        let bytes = encode_member(&m);
        assert_eq!(i64_at(&bytes, 2), Some(77));
        assert_eq!(i64_at(&bytes, 10), Some(joined_at_micros(&m)));
        assert_eq!(decode_member(m.user_id, &bytes), Some(m.clone()));
        let never_read = Member {
            last_read_message_id: None,
            ..m
        };
        assert_eq!(
            decode_member(never_read.user_id, &encode_member(&never_read)),
            Some(never_read)
        );
    }
}
