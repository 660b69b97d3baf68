//! The read behind a fill of deep history: one run of a channel's live messages
//! (`crate::domain::history`), read in one snapshot.

use super::rows::{self, MESSAGE_COLUMNS};
use super::{Db, DbError};
use crate::domain::history::{Run, RUN_MESSAGES};
use crate::domain::{ChannelId, MessageId, Scope};

/// Where a run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Anchor {
    /// Going down from this id (a `before` cursor): the run's top.
    Down(MessageId),
    /// Going up from this id (an `after` cursor): the run's low.
    Up(MessageId),
}

impl Db {
    /// A run at `anchor`; `None` when there is no channel, or nothing to hold.
    pub async fn load_run(
        &self,
        channel: ChannelId,
        anchor: Anchor,
    ) -> Result<Option<Run>, DbError> {
        let mut client = self.read_client(&[Scope::Channel(channel)]).await?;
        let tx = super::snapshot(&mut client).await?;
        // The newest live message: ids of one channel commit in order, so every later post
        // lands above it, and a run never reaches past it.
        let stmt = tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM channels WHERE id = $1),
                        (SELECT m.id FROM messages m WHERE m.channel_id = $1
                           AND m.deleted_at IS NULL ORDER BY m.id DESC LIMIT 1)",
            )
            .await?;
        let row = tx.query_one(&stmt, &[&channel.0]).await?;
        if !row.get::<_, bool>(0) {
            return Ok(None);
        }
        let Some(newest) = row.get::<_, Option<i64>>(1) else {
            return Ok(None);
        };
        let fetch = RUN_MESSAGES as i64 + 1;
        let (filter, order, at) = match anchor {
            Anchor::Down(top) => ("m.id < $3", "DESC", top.0.min(newest + 1)),
            Anchor::Up(low) => ("m.id > $3", "ASC", low.0),
        };
        let stmt = tx
            .prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages m
                 WHERE m.channel_id = $1 AND m.deleted_at IS NULL AND {filter}
                 ORDER BY m.id {order} LIMIT $2"
            ))
            .await?;
        let mut messages: Vec<_> = tx
            .query(&stmt, &[&channel.0, &fetch, &at])
            .await?
            .iter()
            .map(rows::message)
            .collect();
        tx.commit().await?;
        let past = (messages.len() > RUN_MESSAGES).then(|| messages[RUN_MESSAGES].id);
        messages.truncate(RUN_MESSAGES);
        Ok(Some(match anchor {
            Anchor::Down(_) => Run {
                top: MessageId(at),
                low: past.unwrap_or(MessageId(0)),
                complete: past.is_none(),
                open: at == newest + 1,
                messages,
            },
            Anchor::Up(_) if messages.is_empty() => return Ok(None),
            Anchor::Up(low) => {
                messages.reverse();
                Run {
                    // The row past the run is not in it; short of that, the newest is.
                    top: past.unwrap_or(MessageId(newest + 1)),
                    low,
                    complete: false,
                    open: past.is_none(),
                    messages,
                }
            }
        }))
    }
}
