//! Hot feeds: a user's newest event ids in Redis and L1, event bodies stored once.
//!
//! # Read path
//! The feed's ids come from L1, else Redis (one script call, which hands out the fence
//! version on a miss and queues a fill through [`super::fills`]); the bodies of the ids
//! a page needs from L1, else one `MGET`, else Postgres by id (stored back with `SET NX`).
//! Deleted and expired events are filtered with the bodies. A page that runs past the ids
//! held, or any failure, is answered by Postgres.
//!
//! # Write path (write-through onto cached feeds only)
//! After a delivery commits: one `MGET` per 1,000 recipients finds those with a fence
//! version, and one script call for each of them bumps it and reports whether their feed
//! is cached (a user with neither costs a key in that `MGET` and nothing else). When a
//! cached feed will show it, the event's body goes to Redis once. For the cached ones, Postgres
//! says the newest id below what each gained (`prev`: final once the delivery committed,
//! thanks to the pull-forward of [`crate::postgres`]'s fan-out), and the script appends
//! only onto a feed whose newest id is that `prev`. A feed that missed a delivery (one
//! still in flight from another instance, or lost) is dropped and refilled, so a cached
//! feed is always a prefix of the user's feed in id order and an `after` pager never
//! skips. Then, for the users with a version, L1 here and one invalidation message per
//! 200 users for the others. A write that cannot reach Redis marks the feeds it touched
//! (or the event whose delete it was) dirty and announces them through Postgres; the
//! repair task drops exactly those from Redis once it answers.

use std::sync::Arc;

use bytes::Bytes;

use super::coherence::invalidation::Invalidation;
use super::coherence::Coherence;
use super::l1::{CachedFeed, Entry, Key};
use super::paths::Path;
use super::tiers::Tiers;
use super::CacheMode;
use super::{Lookup, Reach};
use crate::domain::feed::{Event, EventId, FeedCursor, FeedPage, FeedRequest};
use crate::domain::{Scope, UserId};
use crate::postgres::{DbError, Delivery, Ticket};
use crate::redis::FeedState;

/// Extra bodies read past a page's limit, for deleted or expired events among them.
const BODY_SLACK: usize = 16;

/// Hot feeds and event bodies as the service sees them.
pub struct Feeds {
    tiers: Arc<Tiers>,
    coherence: Arc<Coherence>,
}

impl Feeds {
    pub(super) fn new(tiers: Arc<Tiers>, coherence: Arc<Coherence>) -> Feeds {
        Feeds { tiers, coherence }
    }

    /// Events created at or before this are expired.
    fn expired_at_or_before(&self) -> chrono::DateTime<chrono::Utc> {
        let keep = chrono::Duration::from_std(self.tiers.settings.feed_retention.keep)
            .unwrap_or(chrono::Duration::MAX);
        chrono::Utc::now() - keep
    }

    /// A page of a user's feed from the tiers, encoded by `encode`. A page encoded from an
    /// L1 entry is remembered beside it ([`CachedFeed`]) while its events' bodies stand.
    pub async fn feed_page(
        &self,
        user: UserId,
        request: FeedRequest,
        encode: fn(&FeedPage) -> Bytes,
    ) -> Result<(Lookup<Bytes>, Path), DbError> {
        let Some((cached, path)) = self.feed_window(user).await? else {
            return Ok((Lookup::Unavailable, Path::Postgres));
        };
        let cutoff = self.expired_at_or_before();
        // Read before the bodies: a delete landing meanwhile makes the memo unusable.
        let generation = self.tiers.l1.bodies_generation();
        if let Some(body) = cached.page(request, generation, cutoff) {
            return Ok((Lookup::Found(body), path));
        }
        // Boxed: the hot answer above stays a small future to create and poll.
        Box::pin(self.compose_feed_page(cached, path, request, encode, generation, cutoff)).await
    }

    /// A feed page built from the ids and the bodies, encoded and remembered.
    #[allow(clippy::too_many_arguments)]
    async fn compose_feed_page(
        &self,
        cached: Arc<CachedFeed>,
        path: Path,
        request: FeedRequest,
        encode: fn(&FeedPage) -> Bytes,
        generation: u64,
        cutoff: chrono::DateTime<chrono::Utc>,
    ) -> Result<(Lookup<Bytes>, Path), DbError> {
        let window = &cached.window;
        let (candidates, exhaustive) = window.candidates(request.cursor);
        // Oldest first: ids missing from the window would come before the ones it holds.
        if !exhaustive && matches!(request.cursor, FeedCursor::After(_)) {
            return Ok((Lookup::Unavailable, Path::Postgres));
        }
        let want = request.limit as usize + 1;
        let take = candidates.len().min(want + BODY_SLACK);
        let Some(bodies) = self.event_bodies(&candidates[..take]).await? else {
            return Ok((Lookup::Unavailable, Path::Postgres));
        };
        let shown: Vec<Event> = bodies
            .iter()
            .filter(|e| !e.is_deleted() && e.created_at > cutoff)
            .take(want)
            .map(|e| Event::clone(e))
            .collect();
        if shown.len() < want && !(take == candidates.len() && exhaustive) {
            return Ok((Lookup::Unavailable, Path::Postgres));
        }
        let oldest = shown.iter().map(|e| e.created_at).min();
        let body = encode(&FeedPage::from_rows(shown, request.limit as usize));
        cached.remember(request, body.clone(), generation, oldest);
        Ok((Lookup::Found(body), path))
    }

    /// `(unseen_count, last_seen_event_id)` from the tiers, when the hot feed holds every
    /// id above the marker.
    pub async fn feed_unseen(
        &self,
        user: UserId,
    ) -> Result<(Lookup<(i64, Option<EventId>)>, Path), DbError> {
        let Some((window, path)) = self.feed_window(user).await? else {
            return Ok((Lookup::Unavailable, Path::Postgres));
        };
        let seen = window.window.seen;
        let (above, exhaustive) = window
            .window
            .candidates(FeedCursor::After(seen.unwrap_or(EventId(0))));
        if !exhaustive {
            return Ok((Lookup::Unavailable, Path::Postgres));
        }
        let Some(bodies) = self.event_bodies(&above).await? else {
            return Ok((Lookup::Unavailable, Path::Postgres));
        };
        let cutoff = self.expired_at_or_before();
        let count = bodies
            .iter()
            .filter(|e| !e.is_deleted() && e.created_at > cutoff)
            .count() as i64;
        Ok((Lookup::Found((count, seen)), path))
    }

    /// The user's hot feed from L1 or Redis; `None` when the tiers cannot answer.
    async fn feed_window(&self, user: UserId) -> Result<Option<(Arc<CachedFeed>, Path)>, DbError> {
        Ok(
            match self
                .tiers
                .fetch(&super::sources::FeedSource { user }, Reach::Fill)
                .await?
            {
                (Lookup::Found(feed), path) => Some((feed, path)),
                (Lookup::Unavailable, _) => None,
            },
        )
    }

    /// The bodies of `ids`, in order: from L1, else Redis, else Postgres (and stored back
    /// in both); an event Postgres no longer has (past the retention) is left out. `None`
    /// when a tier failed.
    async fn event_bodies(&self, ids: &[EventId]) -> Result<Option<Vec<Arc<Event>>>, DbError> {
        if self
            .tiers
            .dirty
            .contains_any(ids.iter().map(|&id| Scope::Event(id)))
        {
            return Ok(None);
        }
        let mut bodies: Vec<Option<Arc<Event>>> = ids
            .iter()
            .map(|&id| match self.tiers.l1.peek(Key::Event(id)) {
                Some(Entry::Event(e)) => Some(e),
                _ => None,
            })
            .collect();
        let missing: Vec<(usize, EventId)> = ids
            .iter()
            .enumerate()
            .filter(|(i, _)| bodies[*i].is_none())
            .map(|(i, &id)| (i, id))
            .collect();
        if missing.is_empty() {
            return Ok(Some(bodies.into_iter().flatten().collect()));
        }
        let tickets: Vec<_> = missing
            .iter()
            .map(|&(_, id)| self.tiers.l1.ticket(Key::Event(id)))
            .collect();
        let wanted: Vec<EventId> = missing.iter().map(|&(_, id)| id).collect();
        let scopes: Vec<Scope> = wanted.iter().map(|&id| Scope::Event(id)).collect();
        let Some(found) = self
            .tiers
            .redis_call_many(&scopes, "bodies", self.tiers.redis.bodies(&wanted))
            .await
        else {
            return Ok(None);
        };
        let absent: Vec<EventId> = wanted
            .iter()
            .zip(&found)
            .filter(|(_, f)| f.is_none())
            .map(|(&id, _)| id)
            .collect();
        let mut loaded = Vec::new();
        let mut gone = Vec::new();
        if !absent.is_empty() {
            let load = self
                .tiers
                .db
                .load_events(&absent, self.tiers.settings.feed_retention);
            loaded = self.tiers.pg_call("load_events", load).await?;
            for event in &loaded {
                let put = self.tiers.redis.put_body_if_absent(event);
                let scope = Scope::Event(event.id);
                if self
                    .tiers
                    .redis_call(scope, "put_body", put)
                    .await
                    .is_none()
                {
                    return Ok(None);
                }
            }
        }
        for ((&(at, id), ticket), from_redis) in missing.iter().zip(tickets).zip(found) {
            let body = from_redis.or_else(|| loaded.iter().find(|e| e.id == id).cloned());
            let Some(body) = body else {
                // Past the retention (its id came from a feed, so it existed): shown as
                // nothing, like an expired body.
                gone.push(at);
                continue;
            };
            let body = Arc::new(body);
            self.tiers
                .l1
                .install_with(Key::Event(id), ticket, Entry::Event(body.clone()));
            bodies[at] = Some(body);
        }
        Ok(Some(
            bodies
                .into_iter()
                .enumerate()
                .filter(|(at, _)| !gone.contains(at))
                .filter_map(|(_, body)| body)
                .collect(),
        ))
    }

    /// Write-through of deliveries that committed: `event`'s body (a new event), then the
    /// recipients' cached feeds, L1 here, and the other instances.
    pub async fn after_feed_delivery(
        &self,
        event: Option<&Event>,
        deliveries: &[Delivery],
        ticket: Ticket,
    ) {
        if event.is_none() && deliveries.is_empty() {
            return;
        }
        let users: Vec<UserId> = deliveries.iter().map(|(u, _)| *u).collect();
        let mut scopes: Vec<Scope> = users.iter().map(|&u| Scope::Feed(u)).collect();
        scopes.extend(event.map(|e| Scope::Event(e.id)));
        let position = self.coherence.position(&scopes).await;
        if self.tiers.settings.mode == CacheMode::Off {
            return;
        }
        crate::crash::point(crate::crash::AFTER_COMMIT);
        let at = position.as_ref().ok().copied().flatten();
        let versioned = match self.coherence.raise(&scopes, &position).await {
            true => self.deliver_onto_cached(event, deliveries, &users).await,
            false => None,
        };
        let reached = versioned.is_some();
        // Without a version a user has no feed in Redis or in any L1; when Redis failed,
        // every recipient counts.
        let touched = versioned.unwrap_or(users);
        let changed: Vec<Invalidation> = touched
            .into_iter()
            .map(|user| Invalidation::Key(Key::Feed(user)))
            .collect();
        self.coherence.settle(reached, &changed, ticket, at).await;
    }

    /// The fence bump of every recipient and the append onto cached feeds, after the new
    /// event's body when a cached feed will show it (uncached feeds get bodies when they
    /// are filled). The recipients who have a fence version; `None` when Redis failed.
    async fn deliver_onto_cached(
        &self,
        event: Option<&Event>,
        deliveries: &[Delivery],
        users: &[UserId],
    ) -> Option<Vec<UserId>> {
        let feeds: Vec<Scope> = users.iter().map(|&u| Scope::Feed(u)).collect();
        let states = if users.is_empty() {
            Vec::new()
        } else {
            self.tiers
                .redis_call_many(&feeds, "feed_tops", self.tiers.redis.feed_tops(users))
                .await?
        };
        let versioned: Vec<UserId> = users
            .iter()
            .zip(&states)
            .filter(|(_, state)| **state != FeedState::NoVersion)
            .map(|(u, _)| *u)
            .collect();
        let cached: Vec<&Delivery> = deliveries
            .iter()
            .zip(&states)
            .filter(|(_, state)| matches!(state, FeedState::Cached(_)))
            .map(|(d, _)| d)
            .collect();
        if cached.is_empty() {
            return Some(versioned);
        }
        if let Some(event) = event {
            let put = self.tiers.redis.put_body(event);
            self.tiers
                .redis_call(Scope::Event(event.id), "put_body", put)
                .await?;
        }
        let below: Vec<(UserId, EventId)> = cached
            .iter()
            .map(|(u, ids)| (*u, ids.first().copied().unwrap_or(EventId(0))))
            .collect();
        let prevs = self
            .tiers
            .pg_call(
                "feed_prevs",
                self.tiers
                    .db
                    .feed_prevs(&below, self.tiers.settings.feed_retention),
            )
            .await
            // Unknown: no cached feed can match -1, so each is dropped and refilled.
            .unwrap_or_else(|_| vec![-1; below.len()]);
        if let Some(hook) = &self.tiers.hooks.before_feed_deliver {
            hook(cached[0].0).await;
        }
        let hot = self.tiers.settings.feed_hot;
        let appends = cached
            .iter()
            .zip(prevs)
            .map(|((user, ids), prev)| self.tiers.redis.feed_deliver(*user, prev, ids, hot));
        // One call as the breakers see it (it spans the recipients' nodes).
        let all = futures::future::try_join_all(appends);
        self.tiers
            .redis_call_many(&feeds, "feed_deliver", all)
            .await?;
        Some(versioned)
    }

    /// Write-through of a user's unseen marker (the one now in force).
    pub async fn after_feed_seen(&self, user: UserId, seen: EventId, ticket: Ticket) {
        let call = self.tiers.redis.feed_seen(user, seen);
        let changed = [Invalidation::Key(Key::Feed(user))];
        self.coherence
            .write_through("feed_seen", call, &changed, ticket)
            .await;
    }

    /// Write-through of a delete: the tombstone replaces the body everywhere.
    pub async fn after_event_delete(&self, tombstone: &Event, ticket: Ticket) {
        let call = self.tiers.redis.put_body(tombstone);
        let changed = [Invalidation::Key(Key::Event(tombstone.id))];
        self.coherence
            .write_through("put_body", call, &changed, ticket)
            .await;
    }
}
