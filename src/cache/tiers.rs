//! The tier engine: the read-through (L1 → Redis → a fenced fill from Postgres) and the
//! fill of one key, written once and generic over [`Source`], which each kind of cached
//! data implements ([`super::sources`]: channel windows, member sets, deep history's fills,
//! hot feeds).
//!
//! # Read-through
//! A key is read only while its [`Scope`] is usable (the cache on, the breaker closed,
//! the scope not dirty). L1 answers a hit. Else one load per key, shared by concurrent
//! callers ([`L1::fetch`]): one Redis read, which also hands out the fence version on a
//! miss, unless [`Presence`] says Redis likely lacks the key and no fill is due (then no
//! round trip). On a miss admitted for a fill ([`super::fills`]), the shared load fills:
//! it reads Postgres, installs through the fence (a write that came in after the version
//! was handed out refuses it), and answers every caller from what it installed. Any other
//! miss is answered by Postgres, with the caller's own query.
//!
//! The engine owns the state it changes: L1, the breaker, the dirty set, the presence
//! marks, the fill queue, the counters and the per-path latencies.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, warn};

use super::breaker::Breakers;
use super::fills::{FillKey, Fills, Queued};
use super::health::Dirty;
use super::l1::{Entry, Key, Loaded, Source as Origin, L1};
use super::paths::{Path, PathLatency};
use super::presence::Presence;
use super::stats::{bump, CacheStats};
use super::{CacheMode, CacheSettings, Hooks, Lookup, Observer, Reach};
use crate::domain::Scope;
use crate::postgres::{Db, DbError};
use crate::redis::{NodeName, Redis, RedisError};

pub use super::source::{RedisRead, Source};

/// What [`Tiers::inspect`] found.
pub struct Inspection<S: Source> {
    pub postgres: S::Row,
    pub l1: Option<S::Value>,
    pub redis: Option<S::Value>,
}

pub struct Tiers {
    pub(super) settings: CacheSettings,
    pub(super) db: Db,
    pub(super) redis: Redis,
    pub(super) l1: L1,
    pub(super) breakers: Breakers,
    pub(super) dirty: Dirty,
    pub(super) presence: Presence,
    pub(super) fills: Fills,
    pub(super) stats: CacheStats,
    pub(super) latency: PathLatency,
    pub(super) observer: Arc<dyn Observer>,
    pub(super) hooks: Hooks,
}

impl Tiers {
    pub(super) fn new(
        settings: CacheSettings,
        db: Db,
        redis: Redis,
        hooks: Hooks,
        observer: Arc<dyn Observer>,
    ) -> Tiers {
        let (l1_bytes, history_bytes) = match settings.mode {
            CacheMode::Full => (settings.l1_capacity_bytes, settings.history_l1_bytes),
            CacheMode::Redis | CacheMode::Off => (0, 0),
        };
        Tiers {
            l1: L1::new(l1_bytes, history_bytes, settings.l1_ttl),
            breakers: Breakers::new(settings.breaker_failures),
            dirty: Dirty::default(),
            presence: Presence::default(),
            fills: Fills::new(settings.fill_after_misses),
            stats: CacheStats::default(),
            latency: PathLatency::default(),
            settings,
            db,
            redis,
            hooks,
            observer,
        }
    }

    /// Whether the tiers may answer for `scope`: the cache is on, the breaker of its
    /// Redis node closed, and no write to it missed Redis.
    pub(super) fn usable(&self, scope: Scope) -> bool {
        self.settings.mode != CacheMode::Off && !self.broken(scope) && !self.dirty.contains(scope)
    }

    /// Whether the breaker of `scope`'s Redis node is open (`Scope::Everything` on a
    /// cluster: of any node). One atomic load while every breaker is closed.
    pub(super) fn broken(&self, scope: Scope) -> bool {
        self.breakers.any_open()
            && match self.redis.node_of(scope) {
                Some(node) => self.breakers.is_open(&node),
                None => true,
            }
    }

    /// Runs a Postgres call of a fill and records its latency.
    pub(super) async fn pg_call<T>(
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

    /// Runs a Redis call for `scope`, keeping its node's breaker count and the call's
    /// latency; `None` when it failed, or without calling while that breaker is open.
    pub(super) async fn redis_call<T>(
        &self,
        scope: Scope,
        operation: &'static str,
        call: impl Future<Output = Result<T, RedisError>>,
    ) -> Option<T> {
        self.redis_call_many(&[scope], operation, call).await
    }

    /// [`Tiers::redis_call`] for a call that spans `scopes` (bodies, a delivery to many
    /// feeds): not made while any of their nodes' breakers is open. It counts against
    /// their node when they share one; a call across nodes cannot tell which failed,
    /// so it counts against none (each node's own calls open its breaker).
    pub(super) async fn redis_call_many<T>(
        &self,
        scopes: &[Scope],
        operation: &'static str,
        call: impl Future<Output = Result<T, RedisError>>,
    ) -> Option<T> {
        let mut nodes: Vec<NodeName> = scopes
            .iter()
            .filter_map(|&scope| self.redis.node_of(scope))
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        if self.breakers.any_open() && nodes.iter().any(|n| self.breakers.is_open(n)) {
            return None;
        }
        let node = match nodes.as_slice() {
            [node] => Some(node),
            _ => None,
        };
        let started = Instant::now();
        let result = call.await;
        self.observer.redis_call(operation, started.elapsed());
        match result {
            Ok(value) => {
                if let Some(node) = node {
                    self.breakers.record_success(node);
                }
                Some(value)
            }
            Err(error) => {
                bump(&self.stats.redis_errors);
                let timed_out = matches!(error, RedisError::Timeout);
                match node {
                    Some(node) if self.breakers.record_failure(node, timed_out, &error) => {
                        warn!(%error, %node, "Redis breaker opened: reads and writes of this node's channels go to Postgres only");
                    }
                    _ => debug!(%error, "a Redis call failed"),
                }
                None
            }
        }
    }

    /// What L1 holds under `key`, counted as a hit or a miss.
    pub(super) fn peek(&self, key: Key) -> Option<Entry> {
        let entry = self.l1.peek(key);
        if self.l1.is_enabled() {
            bump(match entry {
                Some(_) => &self.stats.l1_hits,
                None => &self.stats.l1_misses,
            });
        }
        entry
    }

    /// `answer` of what L1 holds of `source`, counted as an L1 hit when it answers; `None`,
    /// counting nothing, when L1 lacks it, the tiers may not answer for it, or `answer`
    /// declines (the caller then reads through [`Tiers::fetch`]). Synchronous: a hit
    /// never builds the read-through's future.
    pub(super) fn hit<S: Source, T>(
        &self,
        source: &S,
        answer: impl FnOnce(S::Value) -> Option<T>,
    ) -> Option<T> {
        if !self.l1.is_enabled() || !self.usable(source.scope()) {
            return None;
        }
        let answered = answer(S::value(self.l1.peek(source.key())?)?)?;
        bump(&self.stats.l1_hits);
        Some(answered)
    }

    /// Reads `source` through the tiers as far as `reach` allows; `Unavailable` when
    /// Postgres must answer, with the path that says whether both tiers missed.
    pub(super) async fn fetch<S: Source>(
        &self,
        source: &S,
        reach: Reach,
    ) -> Result<(Lookup<S::Value>, Path), DbError> {
        if !self.usable(source.scope()) {
            return Ok((Lookup::Unavailable, Path::Postgres));
        }
        let key = source.key();
        if reach == Reach::L1 {
            return Ok(match self.peek(key).and_then(S::value) {
                Some(value) => (Lookup::Found(value), Path::L1),
                None => (Lookup::Unavailable, Path::Postgres),
            });
        }
        // Boxed: the L1 hit above stays a small future to create and poll.
        let load = || Box::pin(self.get_redis(source));
        let (loaded, origin) = self.l1.fetch(key, load).await?;
        if self.l1.is_enabled() {
            bump(match origin {
                Origin::L1 => &self.stats.l1_hits,
                Origin::Load => &self.stats.l1_misses,
            });
        }
        Ok(match loaded {
            Loaded::Found(entry, path) => match S::value(entry) {
                Some(value) => (Lookup::Found(value), path),
                None => (Lookup::Unavailable, Path::Postgres),
            },
            Loaded::Unavailable => (Lookup::Unavailable, Path::Postgres),
            Loaded::Missed => (Lookup::Unavailable, Path::Fill),
        })
    }

    /// L1's load of `source`, shared by every concurrent caller of its key: Redis, and on
    /// a miss admitted for a fill, the fill itself ([`Tiers::read_through`]); a miss not
    /// admitted (or a source that does not answer from its fill) is answered by Postgres,
    /// with a fill queued when admitted.
    async fn get_redis<S: Source>(&self, source: &S) -> Result<Loaded, DbError> {
        let fill = source.fill_key();
        let mut admitted = None;
        if source.marks_presence() && !self.presence.likely(fill) {
            // Redis likely lacks it: without a fill to make, no round trip.
            if !self.fills.admit(fill) {
                bump(&self.stats.redis_skipped);
                return Ok(Loaded::Missed);
            }
            admitted = Some(true);
        }
        let [read, _, _] = source.operations();
        Ok(
            match self
                .redis_call(source.scope(), read, source.read(&self.redis))
                .await
            {
                None => Loaded::Unavailable,
                Some(RedisRead::Hit(entry)) => {
                    bump(&self.stats.l2_hits);
                    if source.marks_presence() {
                        self.presence.seen(fill);
                    }
                    Loaded::Found(entry, Path::Redis)
                }
                Some(RedisRead::Miss(version)) => {
                    bump(&self.stats.l2_misses);
                    if source.marks_presence() {
                        self.presence.gone(fill);
                    }
                    let admitted = admitted.unwrap_or_else(|| self.fills.admit(fill));
                    match (admitted, source.answers_fills()) {
                        (true, true) => self.read_through(source, &version).await?,
                        (true, false) => {
                            self.queue(fill, Some(version));
                            Loaded::Missed
                        }
                        (false, _) => Loaded::Missed,
                    }
                }
            },
        )
    }

    /// The fill of a key both tiers missed, on the request path and shared by every
    /// caller waiting for the key: one Postgres read fills Redis and answers them all,
    /// where each caller's own query and a fill after them cost Postgres one read each
    /// and one more. It answers only when the fence let the fill in: then no write came
    /// in between the version and the install, so nothing a write invalidated is served.
    /// Otherwise (refused, nothing to install, Redis failed) each caller asks Postgres.
    async fn read_through<S: Source>(&self, source: &S, version: &str) -> Result<Loaded, DbError> {
        Ok(match self.load_and_install(source, version).await? {
            Some((true, row)) => {
                bump(&self.stats.fills);
                match source.answer(row) {
                    Some(entry) => Loaded::Found(entry, Path::Fill),
                    None => Loaded::Missed,
                }
            }
            Some((false, _)) => {
                bump(&self.stats.fills_refused);
                Loaded::Missed
            }
            None => Loaded::Missed,
        })
    }

    /// What each tier holds of `source` beside what Postgres would fill it with, read
    /// without counting, sharing, filling or touching the breaker: the auditor's view
    /// ([`super::audit`]). `None` when Postgres has nothing or a store failed.
    pub(super) async fn inspect<S: Source>(&self, source: &S) -> Option<Inspection<S>> {
        let postgres = source
            .load(&self.db.primary(), &self.settings)
            .await
            .ok()??;
        let l1 = self.l1.peek(source.key()).and_then(S::value);
        let redis = match self.broken(source.scope()) {
            true => None,
            false => match source.read(&self.redis).await.ok()? {
                RedisRead::Hit(entry) => S::value(entry),
                RedisRead::Miss(_) => None,
            },
        };
        Some(Inspection {
            postgres,
            l1,
            redis,
        })
    }

    /// After a miss in both tiers: queues the fill of `key` when admitted ([`Fills`]).
    pub(super) fn queue_fill(&self, key: FillKey, version: Option<String>) {
        if self.fills.admit(key) {
            self.queue(key, version);
        }
    }

    /// Queues the fill of `key`, admitted already, unless it waits or runs.
    fn queue(&self, key: FillKey, version: Option<String>) {
        if self.fills.queue(key, version) == Queued::Dropped {
            bump(&self.stats.fills_dropped);
        }
    }
}
