//! Row → domain conversions, and the column lists they expect.

use tokio_postgres::Row;

use crate::domain::{Channel, ChannelId, ChannelType, Member, Message, MessageId, UserId};

/// The columns of a message, in the order [`message`] reads them. Tombstones carry no
/// content: it stays in the table for moderation but never leaves the database.
pub const MESSAGE_COLUMNS: &str = "m.id, m.channel_id, m.sender_id, \
     CASE WHEN m.deleted_at IS NULL THEN m.content END AS content, \
     m.reply_to_id, m.created_at, m.updated_at, m.deleted_at, m.seq";

pub fn message(row: &Row) -> Message {
    Message {
        id: MessageId(row.get(0)),
        channel_id: ChannelId(row.get(1)),
        sender_id: UserId(row.get(2)),
        content: row.get(3),
        reply_to_id: row.get::<_, Option<i64>>(4).map(MessageId),
        created_at: row.get(5),
        updated_at: row.get(6),
        deleted_at: row.get(7),
        seq: row.get(8),
    }
}

/// The columns of a channel, in the order [`channel`] reads them.
pub const CHANNEL_COLUMNS: &str = "c.id, c.type, c.name, c.created_at, c.last_seq";

pub fn channel(row: &Row) -> Channel {
    let kind: &str = row.get(1);
    Channel {
        id: ChannelId(row.get(0)),
        kind: ChannelType::parse(kind).unwrap_or(ChannelType::Group),
        name: row.get(2),
        created_at: row.get(3),
        last_seq: row.get(4),
    }
}

/// The columns of a member, in the order [`member`] reads them.
pub const MEMBER_COLUMNS: &str = "cm.user_id, cm.role, cm.last_read_message_id, cm.joined_at";

pub fn member(row: &Row) -> Member {
    member_at(row, 0)
}

/// A member whose columns start at `at`.
pub fn member_at(row: &Row, at: usize) -> Member {
    Member {
        user_id: UserId(row.get(at)),
        role: row.get::<_, Option<String>>(at + 1).unwrap_or_default(),
        last_read_message_id: row.get::<_, Option<i64>>(at + 2).map(MessageId),
        joined_at: row.get(at + 3),
    }
}
