//! Message queries. Every change (post, edit, delete) runs in one transaction that first
//! takes the channel row lock by bumping `channels.last_seq`, then writes the message
//! with that seq. The id of a post is drawn after the lock is taken and the lock is held
//! to commit, so ids and seqs of one channel commit in order and an `after` cursor never
//! skips a message that commits late. Locks are always taken channel row first, then
//! message row, so two changes can never deadlock.

use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::outbox::Ticket;
use super::rows::{self, MESSAGE_COLUMNS};
use super::{Db, DbError};
use crate::domain::{
    ChannelId, ClientMsgId, Content, Cursor, Message, MessageId, Page, PageRequest, Scope, UserId,
};

/// A post, validated.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub sender: UserId,
    pub content: Content,
    pub reply_to: Option<MessageId>,
    pub client_msg_id: Option<ClientMsgId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostOutcome {
    /// The message, and its row in the cache outbox.
    Created(Message, Ticket),
    /// The `client_msg_id` was used before in this channel: the original message.
    Duplicate(Message),
    NoChannel,
    NotMember,
    /// `reply_to_id` is not a message of this channel.
    BadReplyTo,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditOutcome {
    Edited(Message, Ticket),
    NotFound,
    /// Tombstones cannot be edited.
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted(Message, Ticket),
    /// Deleting a tombstone changes nothing and takes no seq.
    AlreadyDeleted,
    NotFound,
}

/// Takes the channel row lock and the channel's next seq; `None` when there is no channel.
async fn next_seq(tx: &Transaction<'_>, channel: ChannelId) -> Result<Option<i64>, DbError> {
    let stmt = tx
        .prepare_cached(
            "UPDATE channels SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq",
        )
        .await?;
    Ok(tx.query_opt(&stmt, &[&channel.0]).await?.map(|r| r.get(0)))
}

/// The channel of a message, read before its channel's lock is taken (it never changes).
async fn channel_of(tx: &Transaction<'_>, id: MessageId) -> Result<Option<ChannelId>, DbError> {
    let stmt = tx
        .prepare_cached(
            "SELECT /* fan-out: message by id */ channel_id FROM messages WHERE id = $1",
        )
        .await?;
    Ok(tx
        .query_opt(&stmt, &[&id.0])
        .await?
        .map(|r| ChannelId(r.get(0))))
}

impl Db {
    pub async fn post_message(
        &self,
        channel: ChannelId,
        new: &NewMessage,
    ) -> Result<PostOutcome, DbError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(seq) = next_seq(&tx, channel).await? else {
            return Ok(PostOutcome::NoChannel);
        };
        // Checked under the channel lock, so two posts with one client_msg_id serialise
        // here and the second finds the first (each statement sees what committed before).
        let stmt = tx
            .prepare_cached(
                "SELECT
                   (SELECT id FROM messages WHERE channel_id = $1 AND client_msg_id = $2),
                   EXISTS (SELECT 1 FROM channel_members WHERE channel_id = $1 AND user_id = $3),
                   $4::BIGINT IS NULL
                     OR EXISTS (SELECT 1 FROM messages WHERE id = $4 AND channel_id = $1)",
            )
            .await?;
        let client_msg_id = new.client_msg_id.as_ref().map(ClientMsgId::as_str);
        let reply_to = new.reply_to.map(|m| m.0);
        let checks = tx
            .query_one(
                &stmt,
                &[&channel.0, &client_msg_id, &new.sender.0, &reply_to],
            )
            .await?;
        if let Some(original) = checks.get::<_, Option<i64>>(0) {
            // Dropping the transaction rolls the seq back.
            let message = load_message_in(&tx, channel, MessageId(original)).await?;
            return Ok(message.map_or(PostOutcome::NoChannel, PostOutcome::Duplicate));
        }
        if !checks.get::<_, bool>(1) {
            return Ok(PostOutcome::NotMember);
        }
        if !checks.get::<_, bool>(2) {
            return Ok(PostOutcome::BadReplyTo);
        }
        let sql = format!(
            "INSERT INTO messages AS m (channel_id, sender_id, content, reply_to_id, seq, client_msg_id)
             VALUES ($1, $2, $3, $4, $5, $6)
             RETURNING {MESSAGE_COLUMNS}"
        );
        let stmt = tx.prepare_cached(&sql).await?;
        // The outbox row goes out with the insert, in one round trip (pipelined).
        let content = new.content.as_str();
        let scopes = [Scope::Channel(channel)];
        let (row, ticket) = tokio::try_join!(
            async {
                let params: [&(dyn ToSql + Sync); 6] = [
                    &channel.0,
                    &new.sender.0,
                    &content,
                    &reply_to,
                    &seq,
                    &client_msg_id,
                ];
                Ok::<_, DbError>(tx.query_one(&stmt, &params).await?)
            },
            self.record_outbox(&tx, &scopes),
        )?;
        tx.commit().await?;
        Ok(PostOutcome::Created(rows::message(&row), ticket))
    }

    pub async fn edit_message(
        &self,
        id: MessageId,
        content: &Content,
    ) -> Result<EditOutcome, DbError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(channel) = channel_of(&tx, id).await? else {
            return Ok(EditOutcome::NotFound);
        };
        let Some(seq) = next_seq(&tx, channel).await? else {
            return Ok(EditOutcome::NotFound);
        };
        let sql = format!(
            "UPDATE messages AS m SET content = $2, updated_at = now(), seq = $3
             WHERE m.channel_id = $4 AND m.id = $1 AND m.deleted_at IS NULL
             RETURNING {MESSAGE_COLUMNS}"
        );
        let stmt = tx.prepare_cached(&sql).await?;
        let content = content.as_str();
        let scopes = [Scope::Channel(channel)];
        let (row, ticket) = tokio::try_join!(
            async {
                let params: [&(dyn ToSql + Sync); 4] = [&id.0, &content, &seq, &channel.0];
                Ok::<_, DbError>(tx.query_opt(&stmt, &params).await?)
            },
            self.record_outbox(&tx, &scopes),
        )?;
        let Some(row) = row else {
            // Dropping the transaction rolls back the seq and the outbox row.
            return Ok(EditOutcome::Deleted);
        };
        tx.commit().await?;
        Ok(EditOutcome::Edited(rows::message(&row), ticket))
    }

    pub async fn delete_message(&self, id: MessageId) -> Result<DeleteOutcome, DbError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(channel) = channel_of(&tx, id).await? else {
            return Ok(DeleteOutcome::NotFound);
        };
        let Some(seq) = next_seq(&tx, channel).await? else {
            return Ok(DeleteOutcome::NotFound);
        };
        let sql = format!(
            "UPDATE messages AS m SET deleted_at = now(), seq = $2
             WHERE m.channel_id = $3 AND m.id = $1 AND m.deleted_at IS NULL
             RETURNING {MESSAGE_COLUMNS}"
        );
        let stmt = tx.prepare_cached(&sql).await?;
        let scopes = [Scope::Channel(channel)];
        let (row, ticket) = tokio::try_join!(
            async {
                let params: [&(dyn ToSql + Sync); 3] = [&id.0, &seq, &channel.0];
                Ok::<_, DbError>(tx.query_opt(&stmt, &params).await?)
            },
            self.record_outbox(&tx, &scopes),
        )?;
        let Some(row) = row else {
            return Ok(DeleteOutcome::AlreadyDeleted);
        };
        tx.commit().await?;
        Ok(DeleteOutcome::Deleted(rows::message(&row), ticket))
    }

    /// One message, tombstones included.
    pub async fn load_message(&self, id: MessageId) -> Result<Option<Message>, DbError> {
        let client = self.read_client(&[Scope::Everything]).await?;
        let sql = format!(
            "SELECT /* fan-out: message by id */ {MESSAGE_COLUMNS} FROM messages m WHERE m.id = $1"
        );
        let stmt = client.prepare_cached(&sql).await?;
        Ok(client
            .query_opt(&stmt, &[&id.0])
            .await?
            .map(|r| rows::message(&r)))
    }

    /// A page of live messages with the seed's cursor queries; `None` when there is no
    /// channel.
    pub async fn load_page(
        &self,
        channel: ChannelId,
        request: PageRequest,
    ) -> Result<Option<Page>, DbError> {
        let client = self.read_client(&[Scope::Channel(channel)]).await?;
        let (filter, order, cursor) = match request.cursor {
            Cursor::Latest => ("TRUE", "DESC", None),
            Cursor::Before(id) => ("m.id < $3", "DESC", Some(id.0)),
            Cursor::After(id) => ("m.id > $3", "ASC", Some(id.0)),
        };
        // One row past the limit tells whether more exist in the same direction.
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m
             WHERE m.channel_id = $1 AND m.deleted_at IS NULL AND {filter}
             ORDER BY m.id {order} LIMIT $2"
        );
        let stmt = client.prepare_cached(&sql).await?;
        let fetch = i64::from(request.limit) + 1;
        let found = match cursor {
            None => client.query(&stmt, &[&channel.0, &fetch]).await?,
            Some(c) => client.query(&stmt, &[&channel.0, &fetch, &c]).await?,
        };
        if found.is_empty() && !channel_exists(&client, channel).await? {
            return Ok(None);
        }
        let messages = found.iter().map(rows::message).collect();
        Ok(Some(Page::from_rows(messages, request.limit as usize)))
    }
}

pub(super) async fn channel_exists(
    client: &deadpool_postgres::Client,
    channel: ChannelId,
) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM channels WHERE id = $1)")
        .await?;
    Ok(client.query_one(&stmt, &[&channel.0]).await?.get(0))
}

async fn load_message_in(
    tx: &Transaction<'_>,
    channel: ChannelId,
    id: MessageId,
) -> Result<Option<Message>, DbError> {
    let sql =
        format!("SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.channel_id = $1 AND m.id = $2");
    let stmt = tx.prepare_cached(&sql).await?;
    Ok(tx
        .query_opt(&stmt, &[&channel.0, &id.0])
        .await?
        .map(|r| rows::message(&r)))
}
