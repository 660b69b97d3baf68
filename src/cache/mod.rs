//! The hot-channel cache: read-through and write-through over L1 ([`l1`]), Redis
//! ([`crate::redis`]) and Postgres, and what happens when Redis fails ([`health`]).
//!
//! # Layout
//! - [`tiers`]: the engine. Read-through and fills, written once over the [`tiers::Source`]
//!   trait; it owns L1, the breaker, the dirty set, presence marks, the fill queue and the
//!   counters.
//! - [`sources`]: the kinds of cached data, as sources of the engine (windows, member
//!   sets, deep history, hot feeds).
//! - [`reads`], [`writes`], [`history`]: the verbs the service calls.
//! - [`coherence`]: coherence across instances (pub/sub invalidations, the notices
//!   through Postgres, the repair of dirty entries).
//! - [`audit`], [`advice`], [`gate`]: beside the data path.
//!
//! # Read path
//! The cost gate ([`gate`]) first picks the route: the tiers, or Postgres alone while the
//! tiers cost more for this kind of read. On the tiers: L1 hit → answer. Else one shared
//! load per key: a Redis read (one round trip, which also hands out the fence version on a
//! miss); on a miss Postgres answers and a fill is queued, which installs through the
//! fence. A fill refused by the fence, a Redis failure, an open breaker or a dirty scope
//! all say [`Lookup::Unavailable`]: the caller reads Postgres directly.
//!
//! # Write path
//! After Postgres commits: the channel's script in Redis (which bumps the fence version),
//! then the local L1 entry is invalidated, then an invalidation is published for the
//! other instances. A write that cannot reach Redis marks what it changed dirty: it skips
//! the tiers until the background task has dropped it from Redis. It also announces it
//! through Postgres ([`notices`]), so the other instances do the same.

pub mod advice;
pub mod audit;
pub mod coherence;
mod entry;
pub mod feeds;
pub mod fills;
pub mod gate;
pub mod health;
mod history;
pub mod l1;
mod observer;
pub mod paths;
mod presence;
mod reads;
mod settings;
mod snapshot;
pub mod sources;
pub mod stats;
pub mod tiers;
mod writes;

pub use coherence::{invalidation, notices};
pub use observer::Observer;
pub use settings::{CacheMode, CacheSettings};
pub use snapshot::{Snapshot, Usage};

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::domain::window::Members;
use crate::domain::ChannelId;
use crate::postgres::{Db, DbError};
use crate::redis::Redis;
use health::{Breaker, Dirty};
use l1::{CachedWindow, L1};
use paths::{Path, PathLatency};
use sources::{MembersSource, WindowSource};
use stats::{bump, CacheStats};
use tiers::Tiers;

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
    /// The engine and the state it owns.
    tiers: Tiers,
    backlog: Backlog,
    message_channels: l1::MessageChannels,
    gate: gate::Gate,
    /// Bumped whenever an event body leaves L1 on purpose: pages remembered beside hot
    /// feeds are right only at the count they were encoded at ([`feeds`]).
    bodies_generation: std::sync::atomic::AtomicU64,
    /// This instance's name on the invalidation channel and in cache notices.
    instance: String,
    /// Whether the cache notice listener is connected ([`notices`]).
    notice_listener: AtomicBool,
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
        let mode = settings.mode;
        HotCache {
            backlog: Backlog::default(),
            message_channels: l1::MessageChannels::new(MESSAGE_CHANNELS),
            gate: gate::Gate::new(settings.gate && mode != CacheMode::Off),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            notice_listener: AtomicBool::new(false),
            bodies_generation: std::sync::atomic::AtomicU64::new(0),
            // With the cache off there is nothing to audit.
            audit: audit::Auditor::new(match mode {
                CacheMode::Off => 0.0,
                _ => settings.audit_percent,
            }),
            advice: advice::Advisor::new(settings.advice && mode != CacheMode::Off),
            tiers: Tiers::new(settings, db, redis, hooks, observer),
        }
    }

    pub fn mode(&self) -> CacheMode {
        self.tiers.settings.mode
    }
    pub fn advice(&self) -> &advice::Advisor {
        &self.advice
    }
    pub fn hot_window(&self) -> usize {
        self.tiers.settings.hot_window
    }
    /// `--l1-capacity-bytes` as configured (also in `redis` mode, where L1 keeps nothing:
    /// the advice then says what an L1 of that size would do).
    pub fn l1_budget(&self) -> u64 {
        self.tiers.settings.l1_capacity_bytes
    }
    pub fn audit(&self) -> &audit::Auditor {
        &self.audit
    }
    pub fn gate(&self) -> &gate::Gate {
        &self.gate
    }

    pub fn stats(&self) -> &CacheStats {
        &self.tiers.stats
    }
    /// Background fills waiting or running ([`fills`]).
    pub fn fills_pending(&self) -> usize {
        self.tiers.fills.pending()
    }
    /// Read latency by the path that answered ([`paths`]).
    pub fn latency(&self) -> &PathLatency {
        &self.tiers.latency
    }
    /// Every table and queue of the cache that grows with traffic, with its limit: none
    /// grows without bound (L1 and its deep history are bounded by their byte budgets).
    pub fn bounds(&self) -> [Bound; 6] {
        use std::sync::atomic::Ordering::Relaxed;
        let bound = |name, len, limit| Bound { name, len, limit };
        let (message_channels, message_channels_limit) = self.message_channels.usage();
        [
            bound(
                "l1_loads_in_flight",
                self.tiers.l1.flights_len(),
                l1::MAX_FLIGHTS,
            ),
            bound(
                "fills_queued",
                self.tiers.fills.pending(),
                fills::QUEUE + fills::WORKERS,
            ),
            bound(
                "dirty_channels",
                self.tiers.dirty.len(),
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

    /// The cache at one moment: counters, switches, sizes and bounds.
    pub fn snapshot(&self) -> Snapshot {
        let tiers = &self.tiers;
        Snapshot {
            mode: tiers.settings.mode,
            stats: tiers.stats.snapshot(),
            l1_enabled: tiers.l1.is_enabled(),
            l1_bypassed: tiers.l1.is_bypassed(),
            l1: tiers.l1.usage().into(),
            history: tiers.l1.history_usage().into(),
            breaker_open: tiers.breaker.is_open(),
            breaker_reason: tiers.breaker.open_reason(),
            dirty: tiers.dirty.len(),
            fills_pending: tiers.fills.pending(),
            bounds: self.bounds(),
            gate_enabled: self.gate.is_enabled(),
            gate: self.gate.standings(),
            audit: self.audit.report(),
            notices_listening: self.notice_listener_connected(),
        }
    }

    pub fn l1(&self) -> &L1 {
        &self.tiers.l1
    }
    pub fn breaker(&self) -> &Breaker {
        &self.tiers.breaker
    }
    pub fn dirty(&self) -> &Dirty {
        &self.tiers.dirty
    }
    pub fn redis(&self) -> &Redis {
        &self.tiers.redis
    }

    /// Counts a read answered by Postgres outside the tiers.
    pub fn note_postgres_read(&self) {
        bump(&self.tiers.stats.postgres_reads);
    }

    async fn fetch_window(
        &self,
        channel: ChannelId,
        reach: Reach,
    ) -> Result<(Lookup<Arc<CachedWindow>>, Path), DbError> {
        self.fetch_window_head(channel, reach, None).await
    }

    /// The window, or with `head: Some(n)` only its newest n messages.
    async fn fetch_window_head(
        &self,
        channel: ChannelId,
        reach: Reach,
        head: Option<usize>,
    ) -> Result<(Lookup<Arc<CachedWindow>>, Path), DbError> {
        self.tiers
            .fetch(&WindowSource { channel, head }, reach)
            .await
    }

    async fn fetch_members(
        &self,
        channel: ChannelId,
        reach: Reach,
    ) -> Result<(Lookup<Arc<Members>>, Path), DbError> {
        self.tiers.fetch(&MembersSource { channel }, reach).await
    }

    /// Records how long a read took, under the path that answered it.
    pub fn record_read(&self, path: Path, elapsed: Duration) {
        self.tiers.latency.record(path, elapsed);
        self.tiers.observer.read(path, elapsed);
    }
}
