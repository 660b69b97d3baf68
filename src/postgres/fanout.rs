//! Fan-out on write: feed items for every recipient of an event.
//!
//! Audiences up to [`INLINE_AUDIENCE`] are written in the event's own transaction. Larger
//! ones are committed with the event as a `fanouts` row (the sorted audience and how far
//! delivery got) and written by [`Db::deliver_batch`] in batches, each its own
//! transaction that advances the row; any instance may run a batch (`FOR UPDATE SKIP
//! LOCKED`), and `ON CONFLICT DO NOTHING` on the feed items' key makes a repeated batch
//! (after a crash) deliver nothing twice.
//!
//! # No skipped events
//! Event ids commit in order (the publish lock). A user's feed must also gain events in id
//! order, or an `after` pager past a newer event would never see an older one delivered
//! later. So every delivery of event `e` to a user `u` (inline or in a batch) also
//! delivers, in the same transaction, every older event whose background fan-out still has
//! `u` to go: the *pull-forward*. A user's delivered events are therefore always every
//! accepted event of theirs up to some id, whatever order batches run in. The audiences of
//! unfinished fan-outs are cached in-process ([`Audiences`]), so the check costs a binary
//! search per recipient.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use uuid::Uuid;

use super::{Db, DbError};
use crate::domain::feed::EventId;
use crate::domain::UserId;

/// Largest audience delivered before the publish answers (the contract's promise 1).
pub const INLINE_AUDIENCE: usize = 1000;

/// One feed item to write.
pub(super) type Item = (Uuid, i64, DateTime<Utc>);

/// The sorted audiences of unfinished background fan-outs, by event id.
#[derive(Default)]
pub struct Audiences(Mutex<HashMap<i64, Arc<Vec<Uuid>>>>);

/// An unfinished fan-out, as the pull-forward needs it.
struct Pending {
    event: i64,
    created_at: DateTime<Utc>,
    next: usize,
    audience: Arc<Vec<Uuid>>,
}

/// What one batch delivered.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub event: EventId,
    /// What each user gained: this event, and perhaps older ones pulled forward.
    pub deliveries: Vec<Delivery>,
    /// Recipients still to go after this batch.
    pub remaining: usize,
    /// The feeds this batch changed, in the cache outbox.
    pub ticket: super::Ticket,
}

/// The unfinished fan-outs of events older than `below`, with their audiences.
async fn pending_below(
    tx: &Transaction<'_>,
    audiences: &Audiences,
    below: i64,
) -> Result<Vec<Pending>, DbError> {
    let stmt = tx
        .prepare_cached(
            "SELECT event_id, created_at, next FROM fanouts WHERE event_id < $1 ORDER BY event_id",
        )
        .await?;
    let rows = tx.query(&stmt, &[&below]).await?;
    // Fan-outs that finished (here or on another instance) leave the cache.
    audiences
        .0
        .lock()
        .expect("poisoned")
        .retain(|&event, _| event >= below || rows.iter().any(|r| r.get::<_, i64>(0) == event));
    let mut pending = Vec::with_capacity(rows.len());
    for row in rows {
        let event: i64 = row.get(0);
        let next: i32 = row.get(2);
        let cached = audiences.0.lock().expect("poisoned").get(&event).cloned();
        let audience = match cached {
            Some(a) => a,
            None => {
                let Some(row) = tx
                    .query_opt(
                        "SELECT audience FROM fanouts WHERE event_id = $1",
                        &[&event],
                    )
                    .await?
                else {
                    continue; // finished meanwhile
                };
                let a = Arc::new(row.get::<_, Vec<Uuid>>(0));
                audiences
                    .0
                    .lock()
                    .expect("poisoned")
                    .insert(event, a.clone());
                a
            }
        };
        pending.push(Pending {
            event,
            created_at: row.get(1),
            next: next.max(0) as usize,
            audience,
        });
    }
    Ok(pending)
}

/// The items of `users` for older unfinished fan-outs (the pull-forward).
async fn pulled_forward(
    tx: &Transaction<'_>,
    audiences: &Audiences,
    users: &[Uuid],
    below: i64,
) -> Result<Vec<Item>, DbError> {
    let mut items = Vec::new();
    for p in pending_below(tx, audiences, below).await? {
        for &u in users {
            if let Ok(at) = p.audience.binary_search(&u) {
                if at >= p.next {
                    items.push((u, p.event, p.created_at));
                }
            }
        }
    }
    Ok(items)
}

/// Writes `items` and every item they pull forward; duplicates are skipped. Rows go in in
/// (event, user) order, so two transactions wait on each other's keys in one order and
/// never deadlock.
pub(super) async fn deliver(
    tx: &Transaction<'_>,
    audiences: &Audiences,
    event: i64,
    created_at: DateTime<Utc>,
    users: &[Uuid],
) -> Result<Vec<Delivery>, DbError> {
    let mut items: Vec<Item> = users.iter().map(|&u| (u, event, created_at)).collect();
    items.extend(pulled_forward(tx, audiences, users, event).await?);
    items.sort_unstable_by_key(|&(u, e, _)| (e, u));
    let (mut us, mut es, mut ts) = (
        Vec::with_capacity(items.len()),
        Vec::with_capacity(items.len()),
        Vec::with_capacity(items.len()),
    );
    for (u, e, t) in items {
        us.push(u);
        es.push(e);
        ts.push(t);
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO feed_items (user_id, event_id, created_at)
             SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::timestamptz[])
             ON CONFLICT DO NOTHING
             RETURNING user_id, event_id",
        )
        .await?;
    let rows = tx.query(&stmt, &[&us, &es, &ts]).await?;
    Ok(by_user(rows.iter().map(|r| (r.get(0), r.get(1)))))
}

/// One user's new feed items from one transaction, ascending.
pub type Delivery = (UserId, Vec<EventId>);

/// Groups written items by user, each user's ids ascending.
fn by_user(items: impl Iterator<Item = (Uuid, i64)>) -> Vec<Delivery> {
    let mut map: HashMap<Uuid, Vec<EventId>> = HashMap::new();
    for (u, e) in items {
        map.entry(u).or_default().push(EventId(e));
    }
    map.into_iter()
        .map(|(u, mut ids)| {
            ids.sort_unstable();
            (UserId(u), ids)
        })
        .collect()
}

impl Db {
    /// Delivers one batch of the oldest background fan-out no other instance is working on.
    /// `None` when none is left.
    pub async fn deliver_batch(&self, batch: usize) -> Result<Option<Delivered>, DbError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let stmt = tx
            .prepare_cached(
                "SELECT event_id, created_at, next FROM fanouts
                 ORDER BY event_id LIMIT 1 FOR UPDATE SKIP LOCKED",
            )
            .await?;
        let Some(row) = tx.query_opt(&stmt, &[]).await? else {
            return Ok(None);
        };
        let (event, created_at, next): (i64, DateTime<Utc>, i32) =
            (row.get(0), row.get(1), row.get(2));
        let audience = self.audience_of(&tx, event).await?;
        let from = (next.max(0) as usize).min(audience.len());
        let to = (from + batch).min(audience.len());
        let users = &audience[from..to];
        let deliveries = deliver(&tx, &self.audiences, event, created_at, users).await?;
        let feeds: Vec<crate::domain::Scope> = deliveries
            .iter()
            .map(|(u, _)| crate::domain::Scope::Feed(*u))
            .collect();
        let ticket = self.record_outbox(&tx, &feeds).await?;
        if to == audience.len() {
            tx.execute("DELETE FROM fanouts WHERE event_id = $1", &[&event])
                .await?;
        } else {
            tx.execute(
                "UPDATE fanouts SET next = $2 WHERE event_id = $1",
                &[&event, &(to as i32)],
            )
            .await?;
        }
        tx.commit().await?;
        if to == audience.len() {
            self.audiences.0.lock().expect("poisoned").remove(&event);
        }
        Ok(Some(Delivered {
            event: EventId(event),
            deliveries,
            remaining: audience.len() - to,
            ticket,
        }))
    }

    /// The audience of a fan-out (cached while it is unfinished).
    async fn audience_of(
        &self,
        tx: &Transaction<'_>,
        event: i64,
    ) -> Result<Arc<Vec<Uuid>>, DbError> {
        if let Some(a) = self.audiences.0.lock().expect("poisoned").get(&event) {
            return Ok(a.clone());
        }
        let row = tx
            .query_one(
                "SELECT audience FROM fanouts WHERE event_id = $1",
                &[&event],
            )
            .await?;
        let audience = Arc::new(row.get::<_, Vec<Uuid>>(0));
        self.audiences
            .0
            .lock()
            .expect("poisoned")
            .insert(event, audience.clone());
        Ok(audience)
    }

    /// Background fan-outs not finished yet, and the recipients they still have to reach.
    pub async fn fanouts_pending(&self) -> Result<(i64, i64), DbError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT count(*), COALESCE(sum(cardinality(audience) - next), 0)::bigint FROM fanouts",
                &[],
            )
            .await?;
        Ok((row.get(0), row.get(1)))
    }
}

impl Db {
    /// The benchmark's baseline: writes one feed item per user for `event` (an id no event
    /// has) with `COPY`, in one transaction, as fast as this Postgres takes feed items.
    pub async fn copy_feed_items(&self, users: &[Uuid], event: i64) -> Result<(), DbError> {
        use futures::SinkExt;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let now: DateTime<Utc> = tx.query_one("SELECT now()", &[]).await?.get(0);
        let sink = tx
            .copy_in("COPY feed_items (user_id, event_id, created_at) FROM STDIN")
            .await?;
        let stamp = now.to_rfc3339();
        let mut text = String::with_capacity(users.len() * 80);
        for u in users {
            use std::fmt::Write;
            let _ = writeln!(text, "{u}\t{event}\t{stamp}");
        }
        futures::pin_mut!(sink);
        sink.send(bytes::Bytes::from(text)).await?;
        sink.finish().await?;
        tx.commit().await?;
        Ok(())
    }
}
