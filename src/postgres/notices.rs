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
use crate::domain::{ChannelId, Scope};

/// The `NOTIFY` channel of cache notices (per database, as Postgres scopes them).
pub const NOTICE_CHANNEL: &str = "hotchan_cache";

/// The listening connection's `application_name`, to find it in `pg_stat_activity`.
pub const LISTENER_APPLICATION_NAME: &str = "hotchan-notices";

/// Notifications buffered between the listening connection and its reader. Past this,
/// notices are dropped and the reader is told so ([`Heard::Lost`]): it must assume the worst.
pub const NOTICE_BUFFER: usize = 4096;

/// Some instance (`origin`) could not tell Redis about a write to `scope`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheNotice {
    pub origin: String,
    pub scope: Scope,
}

impl CacheNotice {
    /// `<origin> <scope>` ([`Scope::encode`]).
    fn encode(&self) -> String {
        format!("{} {}", self.origin, self.scope.encode())
    }

    fn parse(payload: &str) -> Option<CacheNotice> {
        let (origin, scope) = payload.split_once(' ')?;
        Some(CacheNotice {
            origin: origin.to_owned(),
            scope: Scope::parse(scope)?,
        })
    }

    /// The row's columns: `channel_id` for a channel (NULL for everything, as before
    /// schema 7), `scope` for a feed or an event (which older versions read as
    /// everything, a safe reading).
    fn columns(&self) -> (Option<uuid::Uuid>, Option<String>) {
        match self.scope {
            Scope::Everything => (None, None),
            Scope::Channel(c) => (Some(c.0), None),
            Scope::Feed(_) | Scope::Event(_) => (None, Some(self.scope.encode())),
        }
    }

    fn from_columns(origin: String, channel: Option<uuid::Uuid>, scope: Option<String>) -> Self {
        let scope = match (channel, scope.as_deref().and_then(Scope::parse)) {
            (_, Some(scope)) => scope,
            (Some(c), None) => Scope::Channel(ChannelId(c)),
            (None, None) => Scope::Everything,
        };
        CacheNotice { origin, scope }
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
    /// Records the notices and notifies every listener, in one statement: the `NOTIFY`s
    /// are delivered when the rows commit.
    pub async fn announce(&self, notices: &[CacheNotice]) -> Result<(), DbError> {
        if notices.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        // A data-modifying WITH runs once and to completion whether or not the main
        // query reads it.
        let stmt = client
            .prepare_cached(&format!(
                "WITH recorded AS (
                   INSERT INTO cache_notices (origin, channel_id, scope)
                   SELECT origin, channel_id, scope
                   FROM unnest($1::text[], $2::uuid[], $3::text[]) AS t(origin, channel_id, scope))
                 SELECT pg_notify('{NOTICE_CHANNEL}', payload) FROM unnest($4::text[]) AS payload"
            ))
            .await?;
        let (channels, scopes): (Vec<_>, Vec<_>) = notices.iter().map(CacheNotice::columns).unzip();
        let origins: Vec<&str> = notices.iter().map(|n| n.origin.as_str()).collect();
        let payloads: Vec<String> = notices.iter().map(CacheNotice::encode).collect();
        client
            .execute(&stmt, &[&origins, &channels, &scopes, &payloads])
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
                "SELECT origin, channel_id, scope FROM cache_notices WHERE at >= $1 ORDER BY at",
                &[&since],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| CacheNotice::from_columns(r.get(0), r.get(1), r.get(2)))
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
    fn notices_round_trip_through_their_payload_and_their_row() {
        for scope in [
            Scope::Everything,
            Scope::Channel(ChannelId(Uuid::new_v4())),
            Scope::Feed(crate::domain::UserId(Uuid::new_v4())),
            Scope::Event(crate::domain::feed::EventId(7)),
        ] {
            let notice = CacheNotice {
                origin: "i1".into(),
                scope,
            };
            assert_eq!(CacheNotice::parse(&notice.encode()), Some(notice.clone()));
            let (channel, text) = notice.columns();
            assert_eq!(
                CacheNotice::from_columns("i1".into(), channel, text),
                notice
            );
        }
        assert_eq!(CacheNotice::parse("i1 not-a-uuid"), None);
        assert_eq!(CacheNotice::parse("nospace"), None);
    }
}
