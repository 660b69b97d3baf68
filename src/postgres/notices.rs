//! The cache's second invalidation path, through Postgres: a write whose Redis step
//! failed records a notice in `cache_notices` and sends it with `NOTIFY` in one statement
//! ([`Db::announce`]); every instance holds a connection of its own that `LISTEN`s for them
//! ([`NoticeListener`]) and can read back what it missed while it was disconnected.
//!
//! Only writes that could not reach Redis pay for this path: the normal write path never
//! touches `cache_notices`.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;
use tracing::debug;

use super::{Db, DbError};
use crate::domain::ChannelId;

/// The `NOTIFY` channel of cache notices (per database, as Postgres scopes them).
pub const NOTICE_CHANNEL: &str = "hotchan_cache";

/// The listening connection's `application_name`, to find it in `pg_stat_activity`.
pub const LISTENER_APPLICATION_NAME: &str = "hotchan-notices";

/// Notifications buffered between the listening connection and its reader. Past this,
/// notices are dropped and the reader is told so ([`Heard::Lost`]): it must assume the worst.
pub const NOTICE_BUFFER: usize = 4096;

/// Some instance (`origin`) could not tell Redis about a write to `channel` (`None`: a
/// flush of every channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheNotice {
    pub origin: String,
    pub channel: Option<ChannelId>,
}

impl CacheNotice {
    /// `<origin> <channel id>`, or `<origin> *` for every channel.
    fn encode(&self) -> String {
        match self.channel {
            Some(c) => format!("{} {c}", self.origin),
            None => format!("{} *", self.origin),
        }
    }

    fn parse(payload: &str) -> Option<CacheNotice> {
        let (origin, scope) = payload.split_once(' ')?;
        let channel = match scope {
            "*" => None,
            id => Some(ChannelId::parse(id).ok()?),
        };
        Some(CacheNotice {
            origin: origin.to_owned(),
            channel,
        })
    }
}

/// What the listening connection heard.
#[derive(Debug, PartialEq, Eq)]
pub enum Heard {
    Notice(CacheNotice),
    /// Notifications overflowed the buffer: some were dropped.
    Lost,
}

impl Db {
    /// Records the notice and notifies every listener, in one statement: the `NOTIFY` is
    /// delivered when the row commits.
    pub async fn announce(&self, notice: &CacheNotice) -> Result<(), DbError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "WITH recorded AS (
                   INSERT INTO cache_notices (origin, channel_id) VALUES ($1, $2) RETURNING 1)
                 SELECT pg_notify('{NOTICE_CHANNEL}', $3) FROM recorded"
            ))
            .await?;
        client
            .execute(
                &stmt,
                &[
                    &notice.origin,
                    &notice.channel.map(|c| c.0),
                    &notice.encode(),
                ],
            )
            .await?;
        Ok(())
    }

    /// Opens a connection of its own (outside the pool) that listens for notices.
    pub async fn listen_notices(&self) -> Result<NoticeListener, DbError> {
        let mut config = (*self.config).clone();
        config.application_name(LISTENER_APPLICATION_NAME);
        let (client, mut connection) = config.connect(self.tls.clone()).await?;
        let (sender, heard) = mpsc::channel(NOTICE_BUFFER);
        let lost = Arc::new(AtomicBool::new(false));
        let overflowed = lost.clone();
        // The connection is driven here, and forwards notifications; the task ends when
        // the connection fails or the listener is dropped.
        tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                let heard = match message {
                    Ok(AsyncMessage::Notification(n)) => match CacheNotice::parse(n.payload()) {
                        Some(notice) => Heard::Notice(notice),
                        None => continue,
                    },
                    Ok(_) => continue,
                    Err(error) => {
                        debug!(%error, "the notice listener's connection ended");
                        return;
                    }
                };
                match sender.try_send(heard) {
                    Ok(()) => {}
                    // Never wait here: this task also carries the listener's queries.
                    Err(mpsc::error::TrySendError::Full(_)) => overflowed.store(true, Relaxed),
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {NOTICE_CHANNEL}"))
            .await?;
        Ok(NoticeListener {
            client,
            heard,
            lost,
        })
    }
}

/// A connection that listens for cache notices.
pub struct NoticeListener {
    client: tokio_postgres::Client,
    heard: mpsc::Receiver<Heard>,
    /// Set when a notice was dropped because the buffer was full.
    lost: Arc<AtomicBool>,
}

impl NoticeListener {
    /// The next notice; `None` once the connection has ended.
    /// Notices waiting for the consumer (at most [`NOTICE_BUFFER`]).
    pub fn backlog(&self) -> usize {
        self.heard.len()
    }

    pub async fn next(&mut self) -> Option<Heard> {
        if self.lost.swap(false, Relaxed) {
            return Some(Heard::Lost);
        }
        self.heard.recv().await
    }

    /// The server's clock, read on this connection: proves the connection is alive, and
    /// dates it (notices are dated by the same clock).
    pub async fn server_time(&self) -> Result<DateTime<Utc>, DbError> {
        let row = self
            .client
            .query_one("SELECT clock_timestamp()", &[])
            .await?;
        Ok(row.get(0))
    }

    /// The notices recorded since `since` (server time), oldest first.
    pub async fn notices_since(&self, since: DateTime<Utc>) -> Result<Vec<CacheNotice>, DbError> {
        let rows = self
            .client
            .query(
                "SELECT origin, channel_id FROM cache_notices WHERE at >= $1 ORDER BY at",
                &[&since],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| CacheNotice {
                origin: r.get(0),
                channel: r.get::<_, Option<uuid::Uuid>>(1).map(ChannelId),
            })
            .collect())
    }

    /// Deletes notices recorded before `before` (server time); returns how many.
    pub async fn prune(&self, before: DateTime<Utc>) -> Result<u64, DbError> {
        Ok(self
            .client
            .execute("DELETE FROM cache_notices WHERE at < $1", &[&before])
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn notices_round_trip_through_their_payload() {
        for channel in [Some(ChannelId(Uuid::new_v4())), None] {
            let notice = CacheNotice {
                origin: "i1".into(),
                channel,
            };
            assert_eq!(CacheNotice::parse(&notice.encode()), Some(notice));
        }
        assert_eq!(CacheNotice::parse("i1 not-a-uuid"), None);
        assert_eq!(CacheNotice::parse("nospace"), None);
    }
}
