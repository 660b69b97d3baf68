//! The hot-channel cache: read-through and write-through over L1 ([`l1`]), Redis
//! ([`crate::redis`]) and Postgres, and what happens when Redis fails ([`health`]).
//!
//! # Layout
//! - [`tiers`]: the engine. Read-through and fills, written once over the [`tiers::Source`]
//!   trait; it owns L1, the breaker, the dirty set, presence marks, the fill queue and the
//!   counters.
//! - [`sources`]: the kinds of cached data, as sources of the engine (windows, member
//!   sets, deep history, hot feeds).
//! - [`channels`], [`feeds`]: the verbs the service calls, each over the engine and
//!   [`coherence`]: reads through the tiers, and the write-through of each write.
//!   [`history`] is deep history's source and reads, for [`Channels`].
//! - [`coherence`]: coherence across instances (pub/sub invalidations, the notices
//!   through Postgres, the repair of dirty entries) and the write-through step.
//! - [`audit`], [`advice`]: beside the data path.
//!
//! # Read path
//! A read the cache can answer is answered by it; no route is picked at run time (a
//! Postgres that looks fast on an idle machine is no reason to send it cached reads).
//! L1 hit → answer. Else one shared
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
pub mod breaker;
mod channels;
pub mod coherence;
mod entry;
pub mod feeds;
pub mod fills;
pub mod health;
mod history;
pub mod l1;
mod observer;
pub mod paths;
mod presence;
mod settings;
mod snapshot;
mod source;
pub mod sources;
pub mod stats;
pub mod tiers;

pub use channels::Channels;
pub use coherence::{invalidation, notices, outbox, repair, Coherence};
pub use feeds::Feeds;
pub use observer::Observer;
pub use settings::{CacheMode, CacheSettings};
pub use snapshot::{Snapshot, Usage};

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::domain::ChannelId;
use crate::postgres::Db;
use crate::redis::Redis;
use breaker::Breakers;
use health::Dirty;
use l1::L1;
use paths::{Path, PathLatency};
use stats::{bump, CacheStats};
use tiers::Tiers;

/// Extra messages read with a window's head for tombstones among the newest ones; a head
/// short of live messages falls back to Postgres.
const HEAD_SLACK: usize = 16;

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

/// One bounded structure: its name, what it holds now, and its limit.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Bound {
    pub name: &'static str,
    pub len: usize,
    pub limit: usize,
}

/// The cache as the rest of the process sees it: the engine, its coherence, and the
/// adapters the service calls ([`Channels`], [`Feeds`]).
pub struct HotCache {
    /// The engine and the state it owns.
    tiers: Arc<Tiers>,
    coherence: Arc<Coherence>,
    /// Channel windows, member sets and deep history, read and written through.
    pub channels: Channels,
    /// Hot feeds and event bodies, read and written through.
    pub feeds: Feeds,
    audit: Arc<audit::Auditor>,
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
        // With the cache off there is nothing to audit.
        let audit = Arc::new(audit::Auditor::new(match mode {
            CacheMode::Off => 0.0,
            _ => settings.audit_percent,
        }));
        let advice = advice::Advisor::new(settings.advice && mode != CacheMode::Off);
        let tiers = Arc::new(Tiers::new(settings, db, redis, hooks, observer));
        let coherence = Arc::new(Coherence::new(tiers.clone()));
        HotCache {
            channels: Channels::new(tiers.clone(), coherence.clone(), audit.clone()),
            feeds: Feeds::new(tiers.clone(), coherence.clone()),
            tiers,
            coherence,
            audit,
            advice,
        }
    }

    /// Coherence across instances (for the tasks that keep it, [`crate::tasks`]).
    /// The Postgres primary failed over (a new timeline): what the cache holds may be
    /// newer than the new primary, or miss its outbox. Everything is dirty at once, so
    /// every read goes to Postgres until the repair task has dropped it all from Redis,
    /// and L1 is emptied.
    pub fn failed_over(&self) {
        if self.mode() == CacheMode::Off {
            return;
        }
        self.tiers.dirty.mark(crate::domain::Scope::Everything);
        self.coherence
            .invalidations
            .apply(coherence::invalidation::Invalidation::Everything);
    }

    pub fn coherence(&self) -> &Arc<Coherence> {
        &self.coherence
    }

    /// Drops a channel (or, with `None`, everything) everywhere ([`Coherence::flush`]).
    pub async fn flush(&self, channel: Option<ChannelId>) {
        self.coherence.flush(channel).await
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
        let bound = |name, len, limit| Bound { name, len, limit };
        let (message_channels, message_channels_limit) = self.channels.message_channels_usage();
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
                self.coherence.invalidations.backlog(),
                crate::redis::EVENT_BUFFER,
            ),
            bound(
                "cache_notices",
                self.coherence.notices.backlog(),
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
            breaker_open: tiers.breakers.any_open(),
            breaker_reason: tiers.breakers.open_reason(),
            nodes: tiers.breakers.health(&tiers.redis.node_names()),
            dirty: tiers.dirty.len(),
            fills_pending: tiers.fills.pending(),
            bounds: self.bounds(),
            audit: self.audit.report(),
            notices_listening: self.coherence.notices.connected(),
        }
    }

    pub fn l1(&self) -> &L1 {
        &self.tiers.l1
    }
    pub fn breakers(&self) -> &Breakers {
        &self.tiers.breakers
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

    /// Records how long a read took, under the path that answered it.
    pub fn record_read(&self, path: Path, elapsed: Duration) {
        self.tiers.latency.record(path, elapsed);
        self.tiers.observer.read(path, elapsed);
    }
}
