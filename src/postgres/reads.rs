//! Read markers and unread counts.

use super::outbox::{outbox_cte, Ticket};
use super::rows::{self, MEMBER_COLUMNS};
use super::{Db, DbError};
use crate::domain::{ChannelId, Member, MessageId, Scope, UnreadChannel, UserId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkReadOutcome {
    /// The member after the call: its marker is the one in force (never lower than
    /// before); and the change's row in the cache outbox.
    Marked(Member, Ticket),
    NoChannel,
    NotMember,
    /// The message is not one of this channel (deleted ones count as the channel's).
    NotInChannel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnreadOutcome {
    Count(i64),
    NoChannel,
    NotMember,
}

/// Unread messages of one member (`cm`): live, after the marker, not sent by the member.
/// A correlated subquery, so each membership is one index-only range scan of
/// `idx_messages_channel_cursor` (which carries `sender_id`) after the marker.
const UNREAD_OF_MEMBER: &str = "SELECT count(*) FROM messages m
     WHERE m.channel_id = cm.channel_id
       AND m.id > COALESCE(cm.last_read_message_id, 0)
       AND m.deleted_at IS NULL
       AND m.sender_id <> cm.user_id";

impl Db {
    /// Moves the read marker forward; a lower `message` leaves it where it is. Atomic in
    /// one statement, so concurrent marks from two devices keep the higher one.
    pub async fn mark_read(
        &self,
        channel: ChannelId,
        user: UserId,
        message: MessageId,
    ) -> Result<MarkReadOutcome, DbError> {
        let client = self.client().await?;
        let sql = format!(
            "WITH target AS (
                   SELECT EXISTS (SELECT 1 FROM channels WHERE id = $1) AS has_channel,
                          EXISTS (SELECT 1 FROM channel_members
                                  WHERE channel_id = $1 AND user_id = $2) AS is_member,
                          EXISTS (SELECT 1 FROM messages
                                  WHERE id = $3 AND channel_id = $1) AS in_channel),
                 moved AS (
                   UPDATE channel_members cm
                   SET last_read_message_id = GREATEST(COALESCE(cm.last_read_message_id, 0), $3)
                   FROM target
                   WHERE target.in_channel AND cm.channel_id = $1 AND cm.user_id = $2
                   RETURNING {MEMBER_COLUMNS}),
                 {}
                 SELECT has_channel, is_member, in_channel, cm.*, (SELECT id FROM outbox)
                 FROM target LEFT JOIN moved cm ON TRUE",
            outbox_cte("moved", 4)
        );
        let stmt = client.prepare_cached(&sql).await?;
        let scopes = self.outbox_scopes(&[Scope::Channel(channel)]);
        let row = client
            .query_one(&stmt, &[&channel.0, &user.0, &message.0, &scopes])
            .await?;
        let moved = row.get::<_, Option<uuid::Uuid>>(3).is_some();
        Ok(match (row.get(0), row.get(1), row.get(2), moved) {
            (false, _, _, _) => MarkReadOutcome::NoChannel,
            (true, false, _, _) => MarkReadOutcome::NotMember,
            (true, true, false, _) => MarkReadOutcome::NotInChannel,
            (true, true, true, true) => {
                MarkReadOutcome::Marked(rows::member_at(&row, 3), Ticket(row.get(row.len() - 1)))
            }
            // The member left between the checks and the update.
            (true, true, true, false) => MarkReadOutcome::NotMember,
        })
    }

    pub async fn unread_count(
        &self,
        channel: ChannelId,
        user: UserId,
    ) -> Result<UnreadOutcome, DbError> {
        let client = self.read_client(&[Scope::Channel(channel)]).await?;
        let sql = format!(
            "SELECT cm.user_id IS NOT NULL,
                    CASE WHEN cm.user_id IS NOT NULL THEN ({UNREAD_OF_MEMBER}) END
             FROM channels c
             LEFT JOIN channel_members cm ON cm.channel_id = c.id AND cm.user_id = $2
             WHERE c.id = $1"
        );
        let stmt = client.prepare_cached(&sql).await?;
        let Some(row) = client.query_opt(&stmt, &[&channel.0, &user.0]).await? else {
            return Ok(UnreadOutcome::NoChannel);
        };
        Ok(match row.get::<_, Option<i64>>(1) {
            Some(count) if row.get(0) => UnreadOutcome::Count(count),
            _ => UnreadOutcome::NotMember,
        })
    }

    /// Every channel of the user with a count above 0, sorted by channel id.
    pub async fn user_unread(&self, user: UserId) -> Result<Vec<UnreadChannel>, DbError> {
        let client = self.read_client(&[Scope::Everything]).await?;
        // One statement for all of the user's channels, each counted once by its own range
        // scan (a join over messages let the planner hash-join millions of rows; a scalar
        // subquery in both the select list and the filter counted every channel twice).
        let sql = format!(
            "SELECT /* fan-out: all-channel unread */ cm.channel_id, u.unread_count
             FROM channel_members cm CROSS JOIN LATERAL ({UNREAD_OF_MEMBER}) AS u(unread_count)
             WHERE cm.user_id = $1 AND u.unread_count > 0
             ORDER BY cm.channel_id"
        );
        let stmt = client.prepare_cached(&sql).await?;
        Ok(client
            .query(&stmt, &[&user.0])
            .await?
            .iter()
            .map(|row| UnreadChannel {
                channel_id: ChannelId(row.get(0)),
                unread_count: row.get(1),
            })
            .collect())
    }

    /// Unread counts of one user in the given channels where the user is a member.
    pub(super) async fn unread_in(
        client: &deadpool_postgres::Transaction<'_>,
        user: UserId,
        channels: &[uuid::Uuid],
    ) -> Result<Vec<(ChannelId, i64)>, DbError> {
        let sql = format!(
            "SELECT cm.channel_id, ({UNREAD_OF_MEMBER}) FROM channel_members cm
             WHERE cm.user_id = $1 AND cm.channel_id = ANY($2)"
        );
        let stmt = client.prepare_cached(&sql).await?;
        Ok(client
            .query(&stmt, &[&user.0, &channels])
            .await?
            .iter()
            .map(|row| (ChannelId(row.get(0)), row.get(1)))
            .collect())
    }
}
