//! The repair of what Redis missed: while the breaker is open or scopes are dirty, a task
//! probes Redis, drops the dirty scopes (bumping their fences) and tells every instance
//! on pub/sub; only then does the breaker close.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::invalidation::{Invalidation, Invalidations};
use super::Coherence;
use crate::cache::health::DirtyWork;
use crate::cache::l1::Key;
use crate::cache::stats::bump;
use crate::domain::Scope;
use crate::redis::RedisError;

impl Invalidations {
    /// Drops dirty scopes from Redis and tells the other instances; closes the breaker
    /// once nothing is dirty. The error says what Redis answered when it could not.
    pub async fn repair(&self) -> Result<(), RedisError> {
        let tiers = &self.tiers;
        tiers.redis.ping().await?;
        let work = tiers.dirty.work();
        let channel = tiers.redis.invalidation_channel();
        match &work {
            DirtyWork::Nothing => {}
            DirtyWork::Everything => {
                tiers.redis.delete_prefix().await?;
                tiers
                    .redis
                    .publish(&channel, Invalidation::Everything.encode(&self.instance))
                    .await?;
            }
            DirtyWork::Scopes(scopes) => {
                for &scope in scopes {
                    let what = match scope {
                        // Never here (a mark of everything is `DirtyWork::Everything`).
                        Scope::Everything => {
                            tiers.redis.delete_prefix().await?;
                            Invalidation::Everything
                        }
                        Scope::Channel(c) => {
                            tiers.redis.drop_channel(c).await?;
                            Invalidation::Channel(c)
                        }
                        Scope::Feed(u) => {
                            tiers.redis.drop_feed(u).await?;
                            Invalidation::Key(Key::Feed(u))
                        }
                        Scope::Event(e) => {
                            tiers.redis.drop_body(e).await?;
                            Invalidation::Key(Key::Event(e))
                        }
                    };
                    tiers
                        .redis
                        .publish(&channel, what.encode(&self.instance))
                        .await?;
                }
            }
        }
        if work != DirtyWork::Nothing {
            bump(&tiers.stats.invalidations_sent);
        }
        tiers.dirty.done(&work);
        if tiers.breaker.is_open() && tiers.dirty.is_empty() {
            tiers.breaker.close();
            info!("Redis answers again and no channel is dirty: breaker closed");
        }
        Ok(())
    }
}

/// Probes Redis while the breaker is open or channels are dirty, and repairs.
pub async fn maintain(coherence: Arc<Coherence>) {
    let cache = &coherence.invalidations;
    let _ = cache.tiers.redis.load_scripts().await;
    let mut ticker = tokio::time::interval(cache.tiers.settings.probe_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = RepairLog::default();
    loop {
        ticker.tick().await;
        if cache.tiers.breaker.is_open() || !cache.tiers.dirty.is_empty() {
            match cache.repair().await {
                Ok(()) => failures.succeeded(),
                Err(error) => {
                    bump(&cache.tiers.stats.repair_failures);
                    failures.failed(&error, cache.tiers.dirty.len());
                }
            }
        }
    }
}

/// Failed repairs are logged at most once per [`REPAIR_LOG_EVERY`], with how many were
/// not logged since; every one is counted in `hotchan_redis_repair_failures_total`.
#[derive(Default)]
struct RepairLog {
    last_logged: Option<Instant>,
    unlogged: u64,
}

/// The least time between two log lines of failed repairs.
const REPAIR_LOG_EVERY: Duration = Duration::from_secs(10);

impl RepairLog {
    fn failed(&mut self, error: &RedisError, dirty: usize) {
        if self
            .last_logged
            .is_some_and(|at| at.elapsed() < REPAIR_LOG_EVERY)
        {
            self.unlogged += 1;
            return;
        }
        warn!(%error, dirty, not_logged_since = self.unlogged, "cannot repair the cache in Redis yet; reads of dirty channels go to Postgres");
        self.last_logged = Some(Instant::now());
        self.unlogged = 0;
    }

    fn succeeded(&mut self) {
        if self.last_logged.take().is_some() {
            info!(not_logged = self.unlogged, "the cache in Redis is repaired");
        }
        self.unlogged = 0;
    }
}
