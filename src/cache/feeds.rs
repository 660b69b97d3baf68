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

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::l1::{CachedFeed, Entry, Key, Loaded};
use super::paths::Path;
use super::stats::bump;
use super::CacheMode;
use super::{HotCache, Lookup, Reach};
use crate::domain::feed::{Event, EventId, FeedCursor, FeedPage, FeedRequest};
use crate::domain::{Scope, UserId};
use crate::postgres::{DbError, Delivery};
use crate::redis::{FeedRead, FeedState};

/// Extra bodies read past a page's limit, for deleted or expired events among them.
const BODY_SLACK: usize = 16;

impl HotCache {
    /// Whether the tiers may answer for `user`'s feed: not while a write to it missed
    /// Redis (then Postgres answers until the repair task dropped it).
    fn feed_usable(&self, user: UserId) -> bool {
        self.settings.mode != CacheMode::Off
            && !self.breaker.is_open()
            && !self.dirty.contains(Scope::Feed(user))
    }

    /// Events created at or before this are expired.
    fn expired_at_or_before(&self) -> chrono::DateTime<chrono::Utc> {
        let keep = chrono::Duration::from_std(self.settings.feed_retention.keep)
            .unwrap_or(chrono::Duration::MAX);
        chrono::Utc::now() - keep
    }

    /// A page of a user's feed from the tiers, encoded by `encode`. A page encoded from an
    /// L1 entry is remembered beside it ([`CachedFeed`]) while its events' bodies stand.
    pub async fn feed_page(
        &self,
        user: UserId,
        request: FeedRequest,
        reach: Reach,
        encode: fn(&FeedPage) -> Bytes,
    ) -> Result<(Lookup<Bytes>, Path), DbError> {
        let Some((cached, path)) = self.feed_window(user, reach).await? else {
            return Ok((Lookup::Unavailable, Path::Postgres));
        };
        let cutoff = self.expired_at_or_before();
        // Read before the bodies: a delete landing meanwhile makes the memo unusable.
        let generation = self.bodies_generation.load(Ordering::Acquire);
        if let Some(body) = cached.page(request, generation, cutoff) {
            return Ok((Lookup::Found(body), path));
        }
        // Boxed: the hot answer above stays a small future to create and poll.
        Box::pin(self.compose_feed_page(cached, path, request, reach, encode, generation, cutoff))
            .await
    }

    /// A feed page built from the ids and the bodies, encoded and remembered.
    #[allow(clippy::too_many_arguments)]
    async fn compose_feed_page(
        &self,
        cached: Arc<CachedFeed>,
        path: Path,
        request: FeedRequest,
        reach: Reach,
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
        let Some(bodies) = self.event_bodies(&candidates[..take], reach).await? else {
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
        reach: Reach,
    ) -> Result<(Lookup<(i64, Option<EventId>)>, Path), DbError> {
        let Some((window, path)) = self.feed_window(user, reach).await? else {
            return Ok((Lookup::Unavailable, Path::Postgres));
        };
        let seen = window.window.seen;
        let (above, exhaustive) = window
            .window
            .candidates(FeedCursor::After(seen.unwrap_or(EventId(0))));
        if !exhaustive {
            return Ok((Lookup::Unavailable, Path::Postgres));
        }
        let Some(bodies) = self.event_bodies(&above, reach).await? else {
            return Ok((Lookup::Unavailable, Path::Postgres));
        };
        let cutoff = self.expired_at_or_before();
        let count = bodies
            .iter()
            .filter(|e| !e.is_deleted() && e.created_at > cutoff)
            .count() as i64;
        Ok((Lookup::Found((count, seen)), path))
    }

    /// Drops an event's body from L1, and every page remembered beside a feed (one may
    /// hold it).
    pub(super) fn invalidate_body(&self, id: EventId) {
        self.bodies_generation.fetch_add(1, Ordering::AcqRel);
        self.l1.invalidate(Key::Event(id));
    }

    /// The user's hot feed from L1 or Redis; `None` when the tiers cannot answer.
    async fn feed_window(
        &self,
        user: UserId,
        reach: Reach,
    ) -> Result<Option<(Arc<CachedFeed>, Path)>, DbError> {
        if !self.feed_usable(user) {
            return Ok(None);
        }
        let key = Key::Feed(user);
        if reach == Reach::L1 {
            return Ok(match self.peek(key) {
                Some(Entry::Feed(w)) => Some((w, Path::L1)),
                _ => None,
            });
        }
        let (loaded, source) = self
            .l1
            .fetch(key, || Box::pin(self.load_feed(user)))
            .await?;
        let path = self.count_l1(source, &loaded);
        Ok(match loaded {
            Loaded::Found(Entry::Feed(w), _) => Some((w, path)),
            _ => None,
        })
    }

    /// L1's load of a feed: Redis, and on a miss a queued fill.
    async fn load_feed(&self, user: UserId) -> Result<Loaded, DbError> {
        let read = self.redis.read_feed(user);
        Ok(match self.redis_call("read_feed", read).await {
            None => Loaded::Unavailable,
            Some(FeedRead::Hit(window)) => {
                bump(&self.stats.l2_hits);
                Loaded::Found(Entry::Feed(Arc::new(CachedFeed::new(window))), Path::Redis)
            }
            Some(FeedRead::Miss(version)) => {
                bump(&self.stats.l2_misses);
                self.queue_fill(super::fills::FillKey::Feed(user), Some(version));
                Loaded::Missed
            }
        })
    }

    /// A fill of a user's feed: Postgres, then the fenced fill script. `None` when Redis
    /// failed; else whether the fence let it in.
    pub(super) async fn fill_feed(
        &self,
        user: UserId,
        version: &str,
    ) -> Result<Option<bool>, DbError> {
        let load =
            self.db
                .load_feed_window(user, self.settings.feed_hot, self.settings.feed_retention);
        let (window, bodies) = self.pg_call("load_feed_window", load).await?;
        let fill = self.redis.fill_feed(user, version, &window, &bodies);
        Ok(self.redis_call("fill_feed", fill).await)
    }

    /// The bodies of `ids`, in order: from L1, else Redis, else Postgres (and stored back
    /// in both); an event Postgres no longer has (past the retention) is left out. `None`
    /// when a tier failed; with `Reach::L1`, when L1 lacks one.
    async fn event_bodies(
        &self,
        ids: &[EventId],
        reach: Reach,
    ) -> Result<Option<Vec<Arc<Event>>>, DbError> {
        if self
            .dirty
            .contains_any(ids.iter().map(|&id| Scope::Event(id)))
        {
            return Ok(None);
        }
        let mut bodies: Vec<Option<Arc<Event>>> = ids
            .iter()
            .map(|&id| match self.l1.peek(Key::Event(id)) {
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
        if reach == Reach::L1 {
            return Ok(None);
        }
        let tickets: Vec<_> = missing
            .iter()
            .map(|&(_, id)| self.l1.ticket(Key::Event(id)))
            .collect();
        let wanted: Vec<EventId> = missing.iter().map(|&(_, id)| id).collect();
        let Some(found) = self.redis_call("bodies", self.redis.bodies(&wanted)).await else {
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
            let load = self.db.load_events(&absent, self.settings.feed_retention);
            loaded = self.pg_call("load_events", load).await?;
            for event in &loaded {
                let put = self.redis.put_body_if_absent(event);
                if self.redis_call("put_body", put).await.is_none() {
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
            self.l1
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
    pub async fn after_feed_delivery(&self, event: Option<&Event>, deliveries: &[Delivery]) {
        if self.settings.mode == CacheMode::Off || (event.is_none() && deliveries.is_empty()) {
            return;
        }
        let users: Vec<UserId> = deliveries.iter().map(|(u, _)| *u).collect();
        let versioned = if self.breaker.is_open() {
            None
        } else {
            self.deliver_onto_cached(event, deliveries, &users).await
        };
        let reached = versioned.is_some();
        // Without a version a user has no feed in Redis or in any L1; when Redis failed,
        // every recipient counts.
        let touched = versioned.unwrap_or(users);
        for &user in &touched {
            self.l1.invalidate(Key::Feed(user));
        }
        let published = reached && self.publish_feeds(&touched).await;
        if !published {
            let scopes: Vec<Scope> = touched.into_iter().map(Scope::Feed).collect();
            self.missed_redis(&scopes).await;
        }
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
        let states = if users.is_empty() {
            Vec::new()
        } else {
            self.redis_call("feed_tops", self.redis.feed_tops(users))
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
            let put = self.redis.put_body(event);
            self.redis_call("put_body", put).await?;
        }
        let below: Vec<(UserId, EventId)> = cached
            .iter()
            .map(|(u, ids)| (*u, ids.first().copied().unwrap_or(EventId(0))))
            .collect();
        let prevs = self
            .pg_call(
                "feed_prevs",
                self.db.feed_prevs(&below, self.settings.feed_retention),
            )
            .await
            // Unknown: no cached feed can match -1, so each is dropped and refilled.
            .unwrap_or_else(|_| vec![-1; below.len()]);
        if let Some(hook) = &self.hooks.before_feed_deliver {
            hook(cached[0].0).await;
        }
        let hot = self.settings.feed_hot;
        let appends = cached
            .iter()
            .zip(prevs)
            .map(|((user, ids), prev)| self.redis.feed_deliver(*user, prev, ids, hot));
        // One call as the breaker sees it: its failure counts like any other's.
        let all = futures::future::try_join_all(appends);
        self.redis_call("feed_deliver", all).await?;
        Some(versioned)
    }

    /// Write-through of a user's unseen marker (the one now in force).
    pub async fn after_feed_seen(&self, user: UserId, seen: EventId) {
        if self.settings.mode == CacheMode::Off {
            return;
        }
        let reached = !self.breaker.is_open()
            && self
                .redis_call("feed_seen", self.redis.feed_seen(user, seen))
                .await
                .is_some();
        self.l1.invalidate(Key::Feed(user));
        if !(reached && self.publish_feeds(&[user]).await) {
            self.missed_redis(&[Scope::Feed(user)]).await;
        }
    }

    /// Write-through of a delete: the tombstone replaces the body everywhere.
    pub async fn after_event_delete(&self, tombstone: &Event) {
        if self.settings.mode == CacheMode::Off {
            return;
        }
        let reached = !self.breaker.is_open()
            && self
                .redis_call("put_body", self.redis.put_body(tombstone))
                .await
                .is_some();
        let key = Key::Event(tombstone.id);
        self.invalidate_body(tombstone.id);
        if !(reached
            && self
                .publish(super::invalidation::Invalidation::Key(key))
                .await)
        {
            self.missed_redis(&[Scope::Event(tombstone.id)]).await;
        }
    }
}
