//! Activity feed operations (`docs/api.md` "Activity feeds"), and the two background
//! tasks of feeds: the fan-out worker and the partition upkeep.
//!
//! Feed pages and unseen counts ask the tiers first ([`crate::cache::feeds`]); writes go
//! to Postgres, then through the tiers.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::reads::Read;
use super::{pg, Error, Service};
use crate::cache::HotCache;
use crate::domain::feed::{Event, EventId, FeedPage, FeedRequest, NewEvent};
use crate::domain::{ChannelId, UserId};
use crate::metrics::Metrics;
use crate::postgres::{Db, EventDeleteOutcome, PublishOutcome, Retention};

/// The feed settings the operations need.
#[derive(Debug, Clone, Copy)]
pub struct FeedConfig {
    pub retention: Retention,
    pub max_data_bytes: usize,
    /// Feed items per background fan-out transaction.
    pub fanout_batch: usize,
}

/// A publish's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishAnswer {
    pub event: Event,
    pub recipients: i32,
    /// False for a replay of a `client_event_id` (200 instead of 201).
    pub created: bool,
}

/// Feed operations, and what they need.
pub struct Feeds {
    db: Db,
    cache: Arc<HotCache>,
    metrics: Arc<Metrics>,
    settings: FeedConfig,
    /// Wakes the background fan-out worker ([`run_fanout`]).
    fanout_wake: tokio::sync::Notify,
}

impl Feeds {
    pub(super) fn new(
        db: Db,
        cache: Arc<HotCache>,
        metrics: Arc<Metrics>,
        settings: FeedConfig,
    ) -> Feeds {
        Feeds {
            db,
            cache,
            metrics,
            settings,
            fanout_wake: tokio::sync::Notify::new(),
        }
    }

    fn retention(&self) -> Retention {
        self.settings.retention
    }

    pub fn feed_config(&self) -> FeedConfig {
        self.settings
    }

    pub async fn publish_event(&self, new: NewEvent) -> Result<PublishAnswer, Error> {
        let call = self.db.publish_event(&new, self.retention());
        match pg(&self.metrics, "publish_event", call).await? {
            PublishOutcome::Created(published) => {
                self.cache
                    .feeds
                    .after_feed_delivery(
                        Some(&published.event),
                        &published.delivered,
                        published.ticket,
                    )
                    .await;
                if published.background {
                    self.fanout_wake.notify_one();
                }
                Ok(PublishAnswer {
                    event: published.event,
                    recipients: published.recipients,
                    created: true,
                })
            }
            PublishOutcome::Replay(event, recipients) => Ok(PublishAnswer {
                event,
                recipients,
                created: false,
            }),
            PublishOutcome::NoChannel(_) => Err(Error::NotFound("channel")),
        }
    }

    pub async fn event(&self, id: EventId) -> Result<Event, Error> {
        pg(
            &self.metrics,
            "load_event",
            self.db.load_event(id, self.retention()),
        )
        .await?
        .ok_or(Error::NotFound("event"))
    }

    pub async fn delete_event(&self, id: EventId) -> Result<(), Error> {
        match pg(
            &self.metrics,
            "delete_event",
            self.db.delete_event(id, self.retention()),
        )
        .await?
        {
            EventDeleteOutcome::Deleted(tombstone, ticket) => {
                self.cache
                    .feeds
                    .after_event_delete(&tombstone, ticket)
                    .await;
                Ok(())
            }
            EventDeleteOutcome::AlreadyDeleted => Ok(()),
            EventDeleteOutcome::NotFound => Err(Error::NotFound("event")),
        }
    }

    /// A feed page, encoded by `encode`: pages served from L1 are encoded once and kept
    /// while their events stand.
    pub async fn feed(
        &self,
        user: UserId,
        request: FeedRequest,
        encode: fn(&FeedPage) -> bytes::Bytes,
    ) -> Result<bytes::Bytes, Error> {
        let mut read = Read::start(&self.cache);
        if let Some(body) = read
            .ask(self.cache.feeds.feed_page(user, request, encode))
            .await?
        {
            return Ok(body);
        }
        self.cache.note_postgres_read();
        let call = self.db.feed_page(user, request, self.retention());
        let page = pg(&self.metrics, "feed_page", call).await?;
        Ok(read.postgres(encode(&page)))
    }

    pub async fn channel_events(
        &self,
        channel: ChannelId,
        request: FeedRequest,
    ) -> Result<FeedPage, Error> {
        let call = self
            .db
            .channel_events_page(channel, request, self.retention());
        pg(&self.metrics, "channel_events_page", call)
            .await?
            .ok_or(Error::NotFound("channel"))
    }

    pub async fn mark_feed_seen(&self, user: UserId, seen: EventId) -> Result<EventId, Error> {
        let (marker, ticket) = pg(
            &self.metrics,
            "mark_feed_seen",
            self.db.mark_feed_seen(user, seen),
        )
        .await?;
        self.cache.feeds.after_feed_seen(user, marker, ticket).await;
        Ok(marker)
    }

    /// `(unseen_count, last_seen_event_id)`.
    pub async fn feed_unseen(&self, user: UserId) -> Result<(i64, Option<EventId>), Error> {
        let mut read = Read::start(&self.cache);
        if let Some(unseen) = read.ask(self.cache.feeds.feed_unseen(user)).await? {
            return Ok(unseen);
        }
        self.cache.note_postgres_read();
        let call = self.db.feed_unseen(user, self.retention());
        Ok(read.postgres(pg(&self.metrics, "feed_unseen", call).await?))
    }
}

/// How often the upkeep runs: a quarter of a partition span, from 1 s to 1 min.
pub fn upkeep_interval(retention: Retention) -> Duration {
    (retention.span / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Makes and drops feed partitions periodically (one instance at a time, by advisory lock).
pub async fn run_upkeep(db: Db, retention: Retention) {
    let mut tick = tokio::time::interval(upkeep_interval(retention));
    loop {
        tick.tick().await;
        if let Err(error) = db.feed_upkeep(retention, false).await {
            warn!(%error, cause = ?std::error::Error::source(&error), "feed partition upkeep failed; retrying");
        }
    }
}

/// Finishes background fan-outs: at start (work cut short by a crash), when this instance
/// accepts a large audience, and every second (work of other instances that died).
pub async fn run_fanout(service: Arc<Service>) {
    let feeds = &service.feeds;
    const IDLE: Duration = Duration::from_secs(1);
    let batch = feeds.settings.fanout_batch;
    // The write-through of one batch runs while the next batch is written to Postgres:
    // batches of one fan-out reach different users, and a feed that gains them in another
    // order is dropped rather than shown with a gap (`crate::cache::feeds`).
    let mut writing: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        match feeds.db.deliver_batch(batch).await {
            Ok(Some(done)) => {
                if let Some(previous) = writing.take() {
                    let _ = previous.await;
                }
                let service_ = service.clone();
                writing = Some(tokio::spawn(async move {
                    service_
                        .feeds
                        .cache
                        .feeds
                        .after_feed_delivery(None, &done.deliveries, done.ticket)
                        .await;
                }));
                if done.remaining == 0 {
                    info!(event = done.event.0, "background fan-out finished");
                }
                continue;
            }
            Ok(None) => {}
            Err(error) => {
                warn!(%error, cause = ?std::error::Error::source(&error), "a fan-out batch failed; retrying");
            }
        }
        let _ = tokio::time::timeout(IDLE, feeds.fanout_wake.notified()).await;
    }
}
