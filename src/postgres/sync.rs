//! Reconnection sync: every change after the client's seq, or a reset page, per channel,
//! read in one REPEATABLE READ snapshot so `last_seq` and `changes` agree.

use std::collections::BTreeMap;

use super::rows::{self, MESSAGE_COLUMNS};
use super::{Db, DbError};
use crate::domain::{ChannelId, Message, Scope, SyncChannel, SyncRequest, SyncResult};

/// Where sync stops listing changes and sends a reset page instead.
#[derive(Debug, Clone, Copy)]
pub struct SyncLimits {
    /// More changes than this since the client's seq: answer with a reset.
    pub reset_threshold: u32,
    /// How many newest live messages a reset carries.
    pub reset_messages: u32,
}

impl Db {
    pub async fn sync(
        &self,
        request: &SyncRequest,
        limits: SyncLimits,
    ) -> Result<SyncResult, DbError> {
        let scopes: Vec<Scope> = request
            .channels
            .keys()
            .map(|&c| Scope::Channel(c))
            .collect();
        let mut client = self.read_client(&scopes).await?;
        let tx = super::snapshot(&mut client).await?;
        let ids: Vec<uuid::Uuid> = request.channels.keys().map(|c| c.0).collect();
        let stmt = tx
            .prepare_cached("SELECT id, last_seq FROM channels WHERE id = ANY($1)")
            .await?;
        let last_seqs: BTreeMap<ChannelId, i64> = tx
            .query(&stmt, &[&ids])
            .await?
            .iter()
            .map(|row| (ChannelId(row.get(0)), row.get(1)))
            .collect();

        let mut result = SyncResult {
            channels: BTreeMap::new(),
            unknown: Vec::new(),
        };
        let (mut incremental, mut since_seqs, mut resets) = (Vec::new(), Vec::new(), Vec::new());
        for (&channel, &since) in &request.channels {
            let Some(&last_seq) = last_seqs.get(&channel) else {
                result.unknown.push(channel);
                continue;
            };
            // A client ahead of the server holds a history this server never had: reset.
            let reset = since > last_seq || last_seq - since > i64::from(limits.reset_threshold);
            if reset {
                resets.push(channel.0);
            } else if since < last_seq {
                incremental.push(channel.0);
                since_seqs.push(since);
            }
            result.channels.insert(
                channel,
                SyncChannel {
                    changes: Vec::new(),
                    last_seq,
                    reset,
                    missed: (last_seq - since).max(0),
                    unread_count: None,
                },
            );
        }

        if !incremental.is_empty() {
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS}
                 FROM unnest($1::uuid[], $2::bigint[]) AS s(channel_id, since)
                 CROSS JOIN LATERAL (
                   SELECT * FROM messages
                   WHERE channel_id = s.channel_id AND seq > s.since
                   ORDER BY seq) AS m
                 ORDER BY m.channel_id, m.seq"
            );
            let stmt = tx.prepare_cached(&sql).await?;
            for row in tx.query(&stmt, &[&incremental, &since_seqs]).await? {
                push_change(&mut result, rows::message(&row));
            }
        }
        if !resets.is_empty() {
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS}
                 FROM unnest($1::uuid[]) AS s(channel_id)
                 CROSS JOIN LATERAL (
                   SELECT * FROM messages
                   WHERE channel_id = s.channel_id AND deleted_at IS NULL
                   ORDER BY id DESC LIMIT $2) AS m
                 ORDER BY m.channel_id, m.id"
            );
            let stmt = tx.prepare_cached(&sql).await?;
            let limit = i64::from(limits.reset_messages);
            for row in tx.query(&stmt, &[&resets, &limit]).await? {
                push_change(&mut result, rows::message(&row));
            }
        }
        if let Some(user) = request.user_id {
            let known: Vec<uuid::Uuid> = result.channels.keys().map(|c| c.0).collect();
            for (channel, count) in Db::unread_in(&tx, user, &known).await? {
                if let Some(entry) = result.channels.get_mut(&channel) {
                    entry.unread_count = Some(count);
                }
            }
        }
        tx.commit().await?;
        Ok(result)
    }
}

fn push_change(result: &mut SyncResult, message: Message) {
    if let Some(entry) = result.channels.get_mut(&message.channel_id) {
        entry.changes.push(message);
    }
}
