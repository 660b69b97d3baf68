//! The repair of what Redis missed: while a node's breaker is open or scopes are dirty, a
//! task probes Redis node by node, drops the dirty scopes (bumping their fences) and
//! tells every instance on pub/sub; only then does a node's breaker close.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::invalidation::{Invalidation, Invalidations};
use super::Coherence;
use crate::cache::health::DirtyWork;
use crate::cache::l1::Key;
use crate::cache::stats::bump;
use crate::domain::Scope;
use crate::redis::{NodeName, RedisError};

impl Invalidations {
    /// Drops dirty scopes from Redis node by node and tells the other instances, then
    /// closes the breaker of each node that answers with none of its scopes dirty. A node
    /// that does not answer keeps its scopes dirty and its breaker open; the other nodes
    /// are repaired all the same. The error says what the first node that could not be
    /// repaired answered.
    pub async fn repair(&self) -> Result<(), RedisError> {
        let tiers = &self.tiers;
        let work = tiers.dirty.work();
        self.learn_positions(&work).await;
        let mut first_error = None;
        match &work {
            DirtyWork::Nothing => {}
            DirtyWork::Everything => {
                // Every node at once: everything under the prefix.
                tiers.redis.ping().await?;
                tiers.redis.delete_prefix().await?;
                self.publish_repair(Invalidation::Everything).await?;
                tiers.dirty.done(&work);
                bump(&tiers.stats.invalidations_sent);
            }
            DirtyWork::Scopes(scopes) => {
                let mut by_node = BTreeMap::<NodeName, Vec<Scope>>::new();
                for &scope in scopes {
                    if let Some(node) = tiers.redis.node_of(scope) {
                        by_node.entry(node).or_default().push(scope);
                    }
                }
                for (node, scopes) in by_node {
                    match self.repair_node(&node, &scopes).await {
                        Ok(()) => {
                            tiers.dirty.done(&DirtyWork::Scopes(scopes));
                            bump(&tiers.stats.invalidations_sent);
                        }
                        Err(error) => {
                            first_error.get_or_insert(error);
                        }
                    }
                }
            }
        }
        if let Err(error) = self.close_breakers().await {
            first_error.get_or_insert(error);
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Drops `scopes`, all at `node`, from Redis and tells the other instances.
    async fn repair_node(&self, node: &str, scopes: &[Scope]) -> Result<(), RedisError> {
        let redis = &self.tiers.redis;
        redis.ping_node(node).await?;
        for &scope in scopes {
            // The position first: a fill that finds the scope dropped also finds it.
            if let Some(at) = self.tiers.db.known(scope) {
                redis.raise_positions(&[scope], at).await?;
            }
            let what = match scope {
                // Never here (a mark of everything is `DirtyWork::Everything`).
                Scope::Everything => {
                    redis.delete_prefix().await?;
                    Invalidation::Everything
                }
                Scope::Channel(c) => {
                    redis.drop_channel(c).await?;
                    Invalidation::Channel(c)
                }
                Scope::Feed(u) => {
                    redis.drop_feed(u).await?;
                    Invalidation::Key(Key::Feed(u))
                }
                Scope::Event(e) => {
                    redis.drop_body(e).await?;
                    Invalidation::Key(Key::Event(e))
                }
            };
            self.publish_repair(what).await?;
        }
        Ok(())
    }

    /// With read replicas: the dirty scopes' writes (this instance's, or heard of through
    /// Postgres, or replayed from the outbox) are learned at the primary's position now,
    /// which is past every one of them, since each was marked after its commit.
    async fn learn_positions(&self, work: &DirtyWork) {
        if !self.tiers.db.has_replicas() {
            return;
        }
        let scopes = match work {
            DirtyWork::Nothing => return,
            DirtyWork::Everything => vec![Scope::Everything],
            DirtyWork::Scopes(scopes) => scopes.clone(),
        };
        if let Err(error) = self.tiers.db.wrote(&scopes).await {
            warn!(%error, "cannot read the primary's WAL position for the repair");
        }
    }

    async fn publish_repair(&self, what: Invalidation) -> Result<(), RedisError> {
        let redis = &self.tiers.redis;
        redis
            .publish(&redis.invalidation_channel(), what.encode(&self.instance))
            .await
    }

    /// Closes the breaker of every node that answers a PING and holds no dirty scope, and
    /// of every node no longer in the cluster's slot map (its slots moved: their dirty
    /// scopes stay dirty, and are repaired at their new node).
    async fn close_breakers(&self) -> Result<(), RedisError> {
        let tiers = &self.tiers;
        let open = tiers.breakers.open_nodes();
        if open.is_empty() {
            return Ok(());
        }
        let serving = tiers.redis.node_names();
        let dirty_nodes: Option<BTreeSet<NodeName>> = match tiers.dirty.work() {
            DirtyWork::Everything => None,
            DirtyWork::Nothing => Some(BTreeSet::new()),
            DirtyWork::Scopes(scopes) => Some(
                scopes
                    .into_iter()
                    .filter_map(|s| tiers.redis.node_of(s))
                    .collect(),
            ),
        };
        let mut first_error = None;
        for node in open {
            if !serving.contains(&node) {
                tiers.breakers.close(&node);
                info!(%node, "a Redis node left the cluster's slot map: its breaker is closed");
                continue;
            }
            if dirty_nodes.as_ref().is_none_or(|d| d.contains(&node)) {
                continue;
            }
            match tiers.redis.ping_node(&node).await {
                Ok(()) => {
                    tiers.breakers.close(&node);
                    info!(%node, "Redis answers again and none of its scopes is dirty: breaker closed");
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Probes Redis while a breaker is open or scopes are dirty, and repairs.
pub async fn maintain(coherence: Arc<Coherence>) {
    let cache = &coherence.invalidations;
    let _ = cache.tiers.redis.load_scripts().await;
    let mut ticker = tokio::time::interval(cache.tiers.settings.probe_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = RepairLog::default();
    loop {
        ticker.tick().await;
        if cache.tiers.breakers.any_open() || !cache.tiers.dirty.is_empty() {
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
