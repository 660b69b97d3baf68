//! Activity feed queries: publish, show, delete, feed and channel pages, the unseen marker.
//!
//! A publish holds one transaction-level advisory lock (the *publish lock*) from before it
//! draws the event id to its commit, so event ids commit in id order and a channel's
//! events page (written in the same transaction) never gains an older event after a newer
//! one. Feeds keep that order through the pull-forward of [`super::fanout`].

use deadpool_postgres::Transaction;
use tokio_postgres::Row;
use uuid::Uuid;

use super::fanout::{self, INLINE_AUDIENCE};
use super::feed_partitions::{is_missing_partition, Retention};
use super::outbox::{outbox_cte, Ticket};
use super::{Db, DbError};
use crate::domain::feed::{Event, EventId, FeedCursor, FeedPage, FeedRequest, NewEvent};
use crate::domain::{ChannelId, Scope, UserId};

/// The advisory lock key of publishing (ASCII "hcpublsh").
const PUBLISH_LOCK_KEY: i64 = 0x6863_7075_626c_7368;

/// The columns of an event, in the order [`event`] reads them.
pub(super) const EVENT_COLUMNS: &str = "e.id, e.actor_id, e.verb, e.object_type, e.object_id, \
     e.target_type, e.target_id, e.data::text, e.channel_ids, e.created_at, e.deleted_at";

/// "Not expired" for a table aliased `e`, with the retention in seconds as `$1`.
pub(super) const LIVE: &str = "e.created_at > now() - make_interval(secs => $1)";

pub(super) fn event(row: &Row) -> Event {
    Event {
        id: EventId(row.get(0)),
        actor_id: UserId(row.get(1)),
        verb: row.get(2),
        object_type: row.get(3),
        object_id: row.get(4),
        target_type: row.get(5),
        target_id: row.get(6),
        data: row.get(7),
        channel_ids: row
            .get::<_, Vec<Uuid>>(8)
            .into_iter()
            .map(ChannelId)
            .collect(),
        created_at: row.get(9),
        deleted_at: row.get(10),
    }
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishOutcome {
    Created(Published),
    /// The actor used this `client_event_id` before: the original and its recipient count.
    Replay(Event, i32),
    /// A channel of `channel_ids` does not exist.
    NoChannel(ChannelId),
}

/// A new event and where it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub event: Event,
    pub recipients: i32,
    /// What each recipient's feed gained (an audience up to [`INLINE_AUDIENCE`]).
    pub delivered: Vec<fanout::Delivery>,
    /// Whether the rest is left to the background fan-out.
    pub background: bool,
    /// The feeds it changed, in the cache outbox.
    pub ticket: Ticket,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventDeleteOutcome {
    /// The tombstone, and the body's row in the cache outbox.
    Deleted(Box<Event>, Ticket),
    AlreadyDeleted,
    NotFound,
}

impl Db {
    /// Publishes an event: stores it, records it on its channels, and delivers it (or
    /// commits its background fan-out), in one transaction.
    pub async fn publish_event(
        &self,
        new: &NewEvent,
        retention: Retention,
    ) -> Result<PublishOutcome, DbError> {
        match self.try_publish(new, retention).await {
            Err(e) if is_missing_partition(&e) => {
                // The periodic upkeep is late (or this is the first event): make the
                // partitions, then try once more.
                self.feed_upkeep(retention, true).await?;
                self.try_publish(new, retention).await
            }
            other => other,
        }
    }

    async fn try_publish(
        &self,
        new: &NewEvent,
        retention: Retention,
    ) -> Result<PublishOutcome, DbError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let channels: Vec<Uuid> = new.channels.iter().map(|c| c.0).collect();
        if !channels.is_empty() {
            let stmt = tx
                .prepare_cached("SELECT id FROM channels WHERE id = ANY($1)")
                .await?;
            let found: Vec<Uuid> = tx
                .query(&stmt, &[&channels])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            if let Some(missing) = channels.iter().find(|c| !found.contains(c)) {
                return Ok(PublishOutcome::NoChannel(ChannelId(*missing)));
            }
        }
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PUBLISH_LOCK_KEY])
            .await?;
        if let Some(key) = &new.client_event_id {
            if let Some(replay) = find_replay(&tx, new.actor, key, retention).await? {
                return Ok(replay);
            }
        }
        let audience = audience(&tx, new, &channels).await?;
        let (target_type, target_id) = match &new.target {
            Some((t, id)) => (Some(t.as_str()), Some(id.as_str())),
            None => (None, None),
        };
        let sql = format!(
            "INSERT INTO events AS e (id, created_at, actor_id, verb, object_type, object_id,
                 target_type, target_id, data, channel_ids, client_event_id, recipients)
             VALUES (nextval('events_id_seq'), now(), $1, $2, $3, $4, $5, $6, $7::text::jsonb,
                     $8, $9, $10)
             RETURNING {EVENT_COLUMNS}"
        );
        let stmt = tx.prepare_cached(&sql).await?;
        let recipients = audience.len() as i32;
        let row = tx
            .query_one(
                &stmt,
                &[
                    &new.actor.0,
                    &new.verb,
                    &new.object_type,
                    &new.object_id,
                    &target_type,
                    &target_id,
                    &new.data,
                    &channels,
                    &new.client_event_id,
                    &recipients,
                ],
            )
            .await?;
        let event = event(&row);
        let (id, created_at) = (event.id.0, event.created_at);
        if !channels.is_empty() {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO channel_events (channel_id, event_id, created_at)
                     SELECT c, $2, $3 FROM unnest($1::uuid[]) c",
                )
                .await?;
            tx.execute(&stmt, &[&channels, &id, &created_at]).await?;
        }
        let background = audience.len() > INLINE_AUDIENCE;
        let delivered = if background {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO fanouts (event_id, created_at, audience) VALUES ($1, $2, $3)",
                )
                .await?;
            tx.execute(&stmt, &[&id, &created_at, &audience]).await?;
            Vec::new()
        } else {
            fanout::deliver(&tx, &self.audiences, id, created_at, &audience).await?
        };
        let feeds: Vec<Scope> = delivered.iter().map(|(u, _)| Scope::Feed(*u)).collect();
        let ticket = self.record_outbox(&tx, &feeds).await?;
        tx.commit().await?;
        Ok(PublishOutcome::Created(Published {
            event,
            recipients,
            delivered,
            background,
            ticket,
        }))
    }

    /// An event, a tombstone when deleted; `None` when missing or expired.
    pub async fn load_event(
        &self,
        id: EventId,
        retention: Retention,
    ) -> Result<Option<Event>, DbError> {
        let client = self.read_client(&[Scope::Event(id)]).await?;
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events e WHERE {LIVE} AND e.id = $2");
        let stmt = client.prepare_cached(&sql).await?;
        Ok(client
            .query_opt(&stmt, &[&retention.keep_secs(), &id.0])
            .await?
            .map(|r| event(&r)))
    }

    /// Soft-deletes an event: `data` goes, the rest stays as a tombstone.
    pub async fn delete_event(
        &self,
        id: EventId,
        retention: Retention,
    ) -> Result<EventDeleteOutcome, DbError> {
        let client = self.client().await?;
        let sql = format!(
            "WITH e AS (
               UPDATE events e SET deleted_at = now(), data = NULL
               WHERE {LIVE} AND e.id = $2 AND e.deleted_at IS NULL
               RETURNING {EVENT_COLUMNS}),
             {}
             SELECT e.*, (SELECT id FROM outbox) FROM e",
            outbox_cte("e", 3)
        );
        let stmt = client.prepare_cached(&sql).await?;
        let keep = retention.keep_secs();
        let scopes = self.outbox_scopes(&[Scope::Event(id)]);
        if let Some(row) = client.query_opt(&stmt, &[&keep, &id.0, &scopes]).await? {
            let ticket = Ticket(row.get(row.len() - 1));
            return Ok(EventDeleteOutcome::Deleted(Box::new(event(&row)), ticket));
        }
        drop(client);
        Ok(match self.load_event(id, retention).await? {
            Some(_) => EventDeleteOutcome::AlreadyDeleted,
            None => EventDeleteOutcome::NotFound,
        })
    }

    /// A page of a user's feed: live, unexpired events.
    pub async fn feed_page(
        &self,
        user: UserId,
        request: FeedRequest,
        retention: Retention,
    ) -> Result<FeedPage, DbError> {
        self.items_page("feed_items", "user_id", user.0, request, retention)
            .await
    }

    /// A page of the events published to a channel; `None` when there is no channel.
    pub async fn channel_events_page(
        &self,
        channel: ChannelId,
        request: FeedRequest,
        retention: Retention,
    ) -> Result<Option<FeedPage>, DbError> {
        let client = self.read_client(&[Scope::Everything]).await?;
        let stmt = client
            .prepare_cached("SELECT 1 FROM channels WHERE id = $1")
            .await?;
        if client.query_opt(&stmt, &[&channel.0]).await?.is_none() {
            return Ok(None);
        }
        drop(client);
        let page = self
            .items_page(
                "channel_events",
                "channel_id",
                channel.0,
                request,
                retention,
            )
            .await?;
        Ok(Some(page))
    }

    /// A page of `table` (feed items or channel events) for `owner` in `column`.
    async fn items_page(
        &self,
        table: &str,
        column: &str,
        owner: Uuid,
        request: FeedRequest,
        retention: Retention,
    ) -> Result<FeedPage, DbError> {
        let (bound, order, cursor) = match request.cursor {
            // The newest: below every id.
            FeedCursor::Latest => ("i.event_id < $3", "DESC", i64::MAX),
            FeedCursor::Before(id) => ("i.event_id < $3", "DESC", id.0),
            FeedCursor::After(id) => ("i.event_id > $3", "ASC", id.0),
        };
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM {table} i
             JOIN events e ON e.id = i.event_id AND e.created_at = i.created_at
             WHERE i.{column} = $2 AND {bound}
               AND i.created_at > now() - make_interval(secs => $1)
               AND {LIVE} AND e.deleted_at IS NULL
             ORDER BY i.event_id {order} LIMIT $4"
        );
        // A page shows events whose deletes are scoped to each event: it needs every
        // write this instance knows of.
        let client = self.read_client(&[Scope::Everything]).await?;
        let stmt = client.prepare_cached(&sql).await?;
        let limit = i64::from(request.limit) + 1;
        let rows = client
            .query(&stmt, &[&retention.keep_secs(), &owner, &cursor, &limit])
            .await?;
        let events = rows.iter().map(event).collect();
        Ok(FeedPage::from_rows(events, request.limit as usize))
    }

    /// Moves a user's unseen marker forward (never back); the marker in force, and the
    /// feed's row in the cache outbox.
    pub async fn mark_feed_seen(
        &self,
        user: UserId,
        seen: EventId,
    ) -> Result<(EventId, Ticket), DbError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "WITH s AS (
                   INSERT INTO feed_seen AS s (user_id, last_seen_event_id) VALUES ($1, $2)
                   ON CONFLICT (user_id) DO UPDATE
                     SET last_seen_event_id = GREATEST(s.last_seen_event_id, EXCLUDED.last_seen_event_id)
                   RETURNING last_seen_event_id),
                 {}
                 SELECT last_seen_event_id, (SELECT id FROM outbox) FROM s",
                outbox_cte("s", 3)
            ))
            .await?;
        let scopes = self.outbox_scopes(&[Scope::Feed(user)]);
        let row = client
            .query_one(&stmt, &[&user.0, &seen.0, &scopes])
            .await?;
        Ok((EventId(row.get(0)), Ticket(row.get(1))))
    }

    /// A user's unseen marker and the live, unexpired events of their feed above it.
    pub async fn feed_unseen(
        &self,
        user: UserId,
        retention: Retention,
    ) -> Result<(i64, Option<EventId>), DbError> {
        let client = self.read_client(&[Scope::Feed(user)]).await?;
        let sql = format!(
            "WITH seen AS (SELECT last_seen_event_id FROM feed_seen WHERE user_id = $2)
             SELECT (SELECT last_seen_event_id FROM seen),
                    (SELECT count(*) FROM feed_items i
                     JOIN events e ON e.id = i.event_id AND e.created_at = i.created_at
                     WHERE i.user_id = $2
                       AND i.event_id > COALESCE((SELECT last_seen_event_id FROM seen), 0)
                       AND i.created_at > now() - make_interval(secs => $1)
                       AND {LIVE} AND e.deleted_at IS NULL)"
        );
        let stmt = client.prepare_cached(&sql).await?;
        let row = client
            .query_one(&stmt, &[&retention.keep_secs(), &user.0])
            .await?;
        Ok((row.get(1), row.get::<_, Option<i64>>(0).map(EventId)))
    }
}

/// The original of a replayed `client_event_id`, if it is not expired.
async fn find_replay(
    tx: &Transaction<'_>,
    actor: UserId,
    key: &str,
    retention: Retention,
) -> Result<Option<PublishOutcome>, DbError> {
    let sql = format!(
        "SELECT /* fan-out: event by client id */ {EVENT_COLUMNS}, e.recipients FROM events e
         WHERE {LIVE} AND e.actor_id = $2 AND e.client_event_id = $3"
    );
    let stmt = tx.prepare_cached(&sql).await?;
    let row = tx
        .query_opt(&stmt, &[&retention.keep_secs(), &actor.0, &key])
        .await?;
    Ok(row.map(|r| PublishOutcome::Replay(event(&r), r.get(11))))
}

/// The recipients: members of the channels now, plus the named users, each once, minus
/// the actor unless named. Sorted (the order batches deliver in).
async fn audience(
    tx: &Transaction<'_>,
    new: &NewEvent,
    channels: &[Uuid],
) -> Result<Vec<Uuid>, DbError> {
    let mut users: Vec<Uuid> = if channels.is_empty() {
        Vec::new()
    } else {
        let stmt = tx
            .prepare_cached(
                "SELECT DISTINCT user_id FROM channel_members WHERE channel_id = ANY($1)",
            )
            .await?;
        tx.query(&stmt, &[&channels])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let named = new.users.contains(&new.actor);
    users.retain(|&u| u != new.actor.0);
    users.extend(new.users.iter().map(|u| u.0));
    if named {
        users.push(new.actor.0);
    }
    users.sort_unstable();
    users.dedup();
    Ok(users)
}
