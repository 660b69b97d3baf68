//! The hot-channel cache: read-through and write-through over L1 ([`l1`]), Redis
//! ([`crate::redis`]) and Postgres, and what happens when Redis fails ([`health`]).
//!
//! # Read path
//! The cost gate ([`gate`]) first picks the route: the tiers, or Postgres alone while the
//! tiers cost more for this kind of read. On the tiers: L1 hit → answer. Else one shared load per key: a Redis read (one round trip, which also
//! hands out the fence version on a miss); on a miss the Postgres fill query, then the
//! fenced fill script. A fill refused by the fence, a Redis failure, an open breaker or a
//! dirty channel all say [`Lookup::Unavailable`]: the caller reads Postgres directly.
//!
//! # Write path
//! After Postgres commits: the channel's script in Redis (which bumps the fence version),
//! then the local L1 entry is invalidated, then an invalidation is published for the
//! other instances. A write that cannot reach Redis marks its channel dirty: the channel
//! skips the tiers until the background task has dropped it from Redis. It also announces
//! the channel through Postgres ([`notices`]), so the other instances do the same.

pub mod advice;
pub mod audit;
mod entry;
pub mod feeds;
pub mod fills;
pub mod gate;
pub mod health;
mod history;
pub mod invalidation;
pub mod l1;
pub mod notices;
mod observer;
pub mod paths;
mod presence;
mod reads;
mod settings;

pub use observer::Observer;
pub mod stats;
mod writes;

pub use settings::{CacheMode, CacheSettings};

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tracing::{debug, warn};

use crate::domain::window::Members;
use crate::domain::ChannelId;
use crate::postgres::{Db, DbError};
use crate::redis::{MembersRead, Redis, RedisError, WindowRead};
use health::{Breaker, Dirty};
use l1::{CachedWindow, Entry, Key, Loaded, Source, L1};
use paths::{Path, PathLatency};
use stats::{bump, CacheStats};

/// Extra messages read with a window's head for tombstones among the newest ones; a head
/// short of live messages falls back to Postgres.
const HEAD_SLACK: usize = 16;

/// Most message id → channel mappings kept for `GET /v1/messages/{id}` (they never change).
const MESSAGE_CHANNELS: u64 = 100_000;

/// What the tiers know.
#[derive(Debug, Clone)]
pub enum Lookup<T> {
    Found(T),
    /// Ask Postgres directly (which also says whether the channel exists).
    Unavailable,
}

impl<T> Lookup<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Lookup<U> {
        match self {
            Lookup::Found(value) => Lookup::Found(f(value)),
            Lookup::Unavailable => Lookup::Unavailable,
        }
    }
}

/// A test hook: awaited at a point of the cache's work, with the channel at hand.
pub type Hook = Arc<dyn Fn(ChannelId) -> BoxFuture<'static, ()> + Send + Sync>;

/// Test hooks: points where a test can hold a request to order a race.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Runs in a window fill after its Postgres read, before the fill script.
    pub after_fill_read: Option<Hook>,
    /// Runs in a fill of deep history after its Postgres read, before the fill script.
    pub after_history_read: Option<Hook>,
    /// Runs in a delivery's write-through before it appends onto cached feeds, with
    /// the first recipient whose feed is cached.
    pub before_feed_deliver: Option<UserHook>,
}

/// A test hook awaited with the user at hand.
pub type UserHook = Arc<dyn Fn(crate::domain::UserId) -> BoxFuture<'static, ()> + Send + Sync>;

/// How far a lookup may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Only what L1 already holds: reads that a whole window would not pay for (pages
    /// past a cursor, syncs), which go to Postgres rather than fetch one.
    L1,
    /// L1, then Redis, then a fenced fill from Postgres.
    Fill,
}

/// Events waiting in the queues of the invalidation and notice listeners.
#[derive(Default)]
pub struct Backlog {
    invalidations: std::sync::atomic::AtomicUsize,
    notices: std::sync::atomic::AtomicUsize,
}

/// One bounded structure: its name, what it holds now, and its limit.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Bound {
    pub name: &'static str,
    pub len: usize,
    pub limit: usize,
}

pub struct HotCache {
    settings: CacheSettings,
    backlog: Backlog,
    db: Db,
    redis: Redis,
    l1: L1,
    message_channels: l1::MessageChannels,
    breaker: Breaker,
    dirty: Dirty,
    stats: CacheStats,
    latency: PathLatency,
    fills: fills::Fills,
    gate: gate::Gate,
    presence: presence::Presence,
    /// Bumped whenever an event body leaves L1 on purpose: pages remembered beside hot
    /// feeds are right only at the count they were encoded at ([`feeds`]).
    bodies_generation: std::sync::atomic::AtomicU64,
    /// This instance's name on the invalidation channel and in cache notices.
    instance: String,
    /// Whether the cache notice listener is connected ([`notices`]).
    notice_listener: AtomicBool,
    hooks: Hooks,
    observer: Arc<dyn Observer>,
    audit: audit::Auditor,
    advice: advice::Advisor,
}

impl HotCache {
    pub fn new(
        settings: CacheSettings,
        db: Db,
        redis: Redis,
        hooks: Hooks,
        observer: Arc<dyn Observer>,
    ) -> HotCache {
        let (l1_bytes, history_bytes) = match settings.mode {
            CacheMode::Full => (settings.l1_capacity_bytes, settings.history_l1_bytes),
            CacheMode::Redis | CacheMode::Off => (0, 0),
        };
        HotCache {
            l1: L1::new(l1_bytes, history_bytes, settings.l1_ttl),
            backlog: Backlog::default(),
            message_channels: l1::MessageChannels::new(MESSAGE_CHANNELS),
            breaker: Breaker::new(settings.breaker_failures),
            dirty: Dirty::default(),
            stats: CacheStats::default(),
            latency: PathLatency::default(),
            fills: fills::Fills::new(settings.fill_after_misses),
            presence: presence::Presence::default(),
            gate: gate::Gate::new(settings.gate && settings.mode != CacheMode::Off),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            notice_listener: AtomicBool::new(false),
            bodies_generation: std::sync::atomic::AtomicU64::new(0),
            // With the cache off there is nothing to audit.
            audit: audit::Auditor::new(match settings.mode {
                CacheMode::Off => 0.0,
                _ => settings.audit_percent,
            }),
            advice: advice::Advisor::new(settings.advice && settings.mode != CacheMode::Off),
            settings,
            db,
            redis,
            hooks,
            observer,
        }
    }

    pub fn mode(&self) -> CacheMode {
        self.settings.mode
    }
    pub fn advice(&self) -> &advice::Advisor {
        &self.advice
    }
    pub fn hot_window(&self) -> usize {
        self.settings.hot_window
    }
    /// `--l1-capacity-bytes` as configured (also in `redis` mode, where L1 keeps nothing:
    /// the advice then says what an L1 of that size would do).
    pub fn l1_budget(&self) -> u64 {
        self.settings.l1_capacity_bytes
    }
    pub fn audit(&self) -> &audit::Auditor {
        &self.audit
    }
    pub fn gate(&self) -> &gate::Gate {
        &self.gate
    }

    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }
    /// Background fills waiting or running ([`fills`]).
    pub fn fills_pending(&self) -> usize {
        self.fills.pending()
    }
    /// Read latency by the path that answered ([`paths`]).
    pub fn latency(&self) -> &PathLatency {
        &self.latency
    }
    /// Every table and queue of the cache that grows with traffic, with its limit: none
    /// grows without bound (L1 and its deep history are bounded by their byte budgets).
    pub fn bounds(&self) -> [Bound; 6] {
        use std::sync::atomic::Ordering::Relaxed;
        let bound = |name, len, limit| Bound { name, len, limit };
        let (message_channels, message_channels_limit) = self.message_channels.usage();
        [
            bound("l1_loads_in_flight", self.l1.flights_len(), l1::MAX_FLIGHTS),
            bound(
                "fills_queued",
                self.fills.pending(),
                fills::QUEUE + fills::WORKERS,
            ),
            bound(
                "dirty_channels",
                self.dirty.len(),
                health::MAX_DIRTY_CHANNELS,
            ),
            bound("message_channels", message_channels, message_channels_limit),
            bound(
                "invalidation_events",
                self.backlog.invalidations.load(Relaxed),
                crate::redis::EVENT_BUFFER,
            ),
            bound(
                "cache_notices",
                self.backlog.notices.load(Relaxed),
                crate::postgres::NOTICE_BUFFER,
            ),
        ]
    }

    pub fn l1(&self) -> &L1 {
        &self.l1
    }
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }
    pub fn dirty(&self) -> &Dirty {
        &self.dirty
    }
    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    /// Counts a read answered by Postgres outside the tiers.
    pub fn note_postgres_read(&self) {
        bump(&self.stats.postgres_reads);
    }

    fn tiers_usable(&self, channel: ChannelId) -> bool {
        self.settings.mode != CacheMode::Off
            && !self.breaker.is_open()
            && !self.dirty.contains(crate::domain::Scope::Channel(channel))
    }

    /// Runs a Postgres call of a fill and records its latency.
    async fn pg_call<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, DbError>>,
    ) -> Result<T, DbError> {
        bump(&self.stats.postgres_reads);
        let started = Instant::now();
        let result = call.await;
        self.observer.postgres_call(operation, started.elapsed());
        result
    }

    /// Runs a Redis call, keeping the breaker's count and its latency; `None` when it failed.
    async fn redis_call<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, RedisError>>,
    ) -> Option<T> {
        let started = Instant::now();
        let result = call.await;
        self.observer.redis_call(operation, started.elapsed());
        match result {
            Ok(value) => {
                self.breaker.record_success();
                Some(value)
            }
            Err(error) => {
                bump(&self.stats.redis_errors);
                let timed_out = matches!(error, RedisError::Timeout);
                if self.breaker.record_failure(timed_out, &error) {
                    warn!(%error, "Redis breaker opened: reads and writes go to Postgres only");
                } else {
                    debug!(%error, "a Redis call failed");
                }
                None
            }
        }
    }

    /// Counts an L1 lookup; the path of what it found.
    fn count_l1(&self, source: Source, loaded: &Loaded) -> Path {
        if self.l1.is_enabled() {
            bump(match source {
                Source::L1 => &self.stats.l1_hits,
                Source::Load => &self.stats.l1_misses,
            });
        }
        match loaded {
            Loaded::Found(_, path) => *path,
            Loaded::Unavailable => Path::Postgres,
            Loaded::Missed => Path::Fill,
        }
    }

    async fn fetch_window(
        &self,
        channel: ChannelId,
        reach: Reach,
    ) -> Result<(Lookup<Arc<CachedWindow>>, Path), DbError> {
        self.fetch_window_head(channel, reach, None).await
    }

    /// What L1 holds under `key`, counted as a hit or a miss.
    fn peek(&self, key: Key) -> Option<Entry> {
        let entry = self.l1.peek(key);
        if self.l1.is_enabled() {
            bump(match entry {
                Some(_) => &self.stats.l1_hits,
                None => &self.stats.l1_misses,
            });
        }
        entry
    }

    /// The window, or with `head: Some(n)` only its newest n messages.
    async fn fetch_window_head(
        &self,
        channel: ChannelId,
        reach: Reach,
        head: Option<usize>,
    ) -> Result<(Lookup<Arc<CachedWindow>>, Path), DbError> {
        if !self.tiers_usable(channel) {
            return Ok((Lookup::Unavailable, Path::Postgres));
        }
        let key = match head {
            None => Key::Window(channel),
            Some(n) => Key::WindowHead(channel, n as u32),
        };
        if reach == Reach::L1 {
            return Ok(match self.peek(key) {
                Some(Entry::Window(w)) => (Lookup::Found(w), Path::L1),
                _ => (Lookup::Unavailable, Path::Postgres),
            });
        }
        let (loaded, source) = self
            .l1
            .fetch(key, || self.load_window(channel, head))
            .await?;
        let path = self.count_l1(source, &loaded);
        let lookup = match loaded {
            Loaded::Found(Entry::Window(w), _) => Lookup::Found(w),
            Loaded::Found(_, _) | Loaded::Unavailable | Loaded::Missed => Lookup::Unavailable,
        };
        Ok((lookup, path))
    }

    /// L1's load of a window: Redis, and on a miss a queued fill ([`fills`]).
    async fn load_window(
        &self,
        channel: ChannelId,
        head: Option<usize>,
    ) -> Result<Loaded, DbError> {
        if !self.presence.likely(channel, fills::What::Window.kind()) {
            return Ok(self.skip_redis(channel, fills::What::Window));
        }
        let read = self.redis.read_window_head(channel, head);
        let found = self.redis_call("read_window", read).await.map(|r| match r {
            WindowRead::Hit(w) => Ok(Entry::Window(Arc::new(CachedWindow::new(w)))),
            WindowRead::Miss(version) => Err(version),
        });
        Ok(self.after_redis_read(channel, fills::What::Window, found))
    }

    /// What a Redis read found, as L1's load result: `None` (the call failed),
    /// `Some(Ok(entry))` (a hit) or `Some(Err(version))` (a miss, which may queue a fill
    /// presenting that version).
    fn after_redis_read(
        &self,
        channel: ChannelId,
        what: fills::What,
        found: Option<Result<Entry, String>>,
    ) -> Loaded {
        match found {
            None => Loaded::Unavailable,
            Some(Ok(entry)) => {
                bump(&self.stats.l2_hits);
                Loaded::Found(entry, Path::Redis)
            }
            Some(Err(version)) => {
                bump(&self.stats.l2_misses);
                self.presence.gone(channel, what.kind());
                self.queue_fill(fills::FillKey::Channel(channel, what), Some(version));
                Loaded::Missed
            }
        }
    }

    /// A fill of the window: Postgres, then the fenced fill script. `None` when the
    /// channel does not exist or Redis failed; else whether the fence let it in.
    async fn fill_window(
        &self,
        channel: ChannelId,
        version: &str,
    ) -> Result<Option<bool>, DbError> {
        let load = self.db.load_window(channel, self.settings.hot_window);
        let Some(window) = self.pg_call("load_window", load).await? else {
            return Ok(None);
        };
        if let Some(hook) = &self.hooks.after_fill_read {
            hook(channel).await;
        }
        let fill = self.redis.fill_window(version, &window);
        Ok(self.redis_call("fill_window", fill).await)
    }

    async fn fetch_members(
        &self,
        channel: ChannelId,
        reach: Reach,
    ) -> Result<(Lookup<Arc<Members>>, Path), DbError> {
        if !self.tiers_usable(channel) {
            return Ok((Lookup::Unavailable, Path::Postgres));
        }
        if reach == Reach::L1 {
            return Ok(match self.peek(Key::Members(channel)) {
                Some(Entry::Members(m)) => (Lookup::Found(m), Path::L1),
                _ => (Lookup::Unavailable, Path::Postgres),
            });
        }
        let (loaded, source) = self
            .l1
            .fetch(Key::Members(channel), || self.load_members(channel))
            .await?;
        let path = self.count_l1(source, &loaded);
        let lookup = match loaded {
            Loaded::Found(Entry::Members(m), _) => Lookup::Found(m),
            Loaded::Found(_, _) | Loaded::Unavailable | Loaded::Missed => Lookup::Unavailable,
        };
        Ok((lookup, path))
    }

    /// L1's load of a member set: Redis, and on a miss a queued fill ([`fills`]).
    async fn load_members(&self, channel: ChannelId) -> Result<Loaded, DbError> {
        if !self.presence.likely(channel, fills::What::Members.kind()) {
            return Ok(self.skip_redis(channel, fills::What::Members));
        }
        let read = self.redis.read_members(channel);
        let found = self
            .redis_call("read_members", read)
            .await
            .map(|r| match r {
                MembersRead::Hit(m) => Ok(Entry::Members(Arc::new(m))),
                MembersRead::Miss(version) => Err(version),
            });
        Ok(self.after_redis_read(channel, fills::What::Members, found))
    }

    /// A fill of the member set, as [`HotCache::fill_window`].
    async fn fill_members(
        &self,
        channel: ChannelId,
        version: &str,
    ) -> Result<Option<bool>, DbError> {
        let load = self.db.load_member_set(channel);
        let Some(members) = self.pg_call("load_member_set", load).await? else {
            return Ok(None);
        };
        let fill = self.redis.fill_members(channel, version, &members);
        Ok(self.redis_call("fill_members", fill).await)
    }

    /// Records how long a read took, under the path that answered it.
    pub fn record_read(&self, path: Path, elapsed: Duration) {
        self.latency.record(path, elapsed);
        self.observer.read(path, elapsed);
    }
}
