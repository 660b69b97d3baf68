//! Every background task of the process, started in one place: what runs besides the
//! requests, in which cache mode, and why.
//!
//! The tasks run until the process ends; [`Application`](crate::app::Application) aborts
//! their handles on shutdown. None of them holds up a request: each works off queues or
//! timers of its own.

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::cache::CacheMode;
use crate::cache::{self, HotCache};
use crate::metrics::Metrics;
use crate::postgres::{Db, Retention};
use crate::service::{feeds, Service};

/// One background task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// Probes Redis while the breaker is open or entries are dirty, and repairs them.
    RedisRepair,
    /// Runs the fills that reads queued ([`cache::fills`]).
    Fills,
    /// Hears other instances' notices through Postgres ([`cache::notices`]).
    NoticeListener,
    /// Deletes this instance's finished rows of the cache outbox, and replays rows whose
    /// instance died between commit and cache ([`cache::outbox`]).
    Outbox,
    /// Applies other instances' invalidations to L1, and watches the heartbeat.
    InvalidationListener,
    /// Checks a sample of writes against Postgres ([`cache::audit`]).
    Audit,
    /// Builds the sizing advice from sampled reads ([`cache::advice`]).
    Advice,
    /// Refreshes the gauges of `/metrics`.
    MetricsUpkeep,
    /// Makes and drops the feed partitions as time passes.
    FeedUpkeep,
    /// Delivers large audiences in batches.
    FeedFanout,
    /// Reads each Postgres read replica's replayed position ([`crate::postgres`]).
    ReplicaWatch,
}

/// The tasks an instance in `mode` runs; `l1` says whether L1 keeps entries (only then
/// are invalidations from other instances worth hearing), `replicas` whether Postgres
/// read replicas are set.
pub fn plan(mode: CacheMode, l1: bool, replicas: bool) -> Vec<Task> {
    let mut tasks = vec![Task::MetricsUpkeep, Task::FeedUpkeep, Task::FeedFanout];
    if replicas {
        tasks.push(Task::ReplicaWatch);
    }
    if mode == CacheMode::Off {
        return tasks;
    }
    tasks.extend([
        Task::RedisRepair,
        Task::Fills,
        Task::NoticeListener,
        Task::Outbox,
        Task::Audit,
        Task::Advice,
    ]);
    if l1 {
        tasks.push(Task::InvalidationListener);
    }
    tasks
}

/// What the tasks work on.
pub struct Parts {
    pub cache: Arc<HotCache>,
    pub service: Arc<Service>,
    pub metrics: Arc<Metrics>,
    pub db: Db,
    pub retention: Retention,
}

/// Starts every task of [`plan`]; abort the handles to stop them.
pub fn start(parts: &Parts) -> Vec<JoinHandle<()>> {
    let cache = &parts.cache;
    plan(
        cache.mode(),
        cache.l1().is_enabled(),
        parts.db.has_replicas(),
    )
    .into_iter()
    .map(|task| match task {
        Task::RedisRepair => tokio::spawn(cache::repair::maintain(cache.coherence().clone())),
        Task::Fills => tokio::spawn(cache::fills::work(cache.clone())),
        Task::NoticeListener => tokio::spawn(cache::notices::listen(cache.coherence().clone())),
        Task::Outbox => tokio::spawn(cache::outbox::work(cache.coherence().clone())),
        Task::InvalidationListener => {
            tokio::spawn(cache::invalidation::listen(cache.coherence().clone()))
        }
        Task::Audit => tokio::spawn(cache::audit::run(cache.clone())),
        Task::Advice => tokio::spawn(cache::advice::run(cache.clone())),
        Task::MetricsUpkeep => tokio::spawn(crate::metrics::upkeep(parts.metrics.clone())),
        Task::FeedUpkeep => tokio::spawn(feeds::run_upkeep(parts.db.clone(), parts.retention)),
        Task::FeedFanout => tokio::spawn(feeds::run_fanout(parts.service.clone())),
        Task::ReplicaWatch => tokio::spawn(parts.db.clone().watch_replicas()),
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_starts_only_the_tasks_it_needs() {
        let always = [Task::MetricsUpkeep, Task::FeedUpkeep, Task::FeedFanout];
        assert_eq!(
            plan(CacheMode::Off, false, false),
            always,
            "no cache, no cache tasks"
        );
        let redis = plan(CacheMode::Redis, false, false);
        assert!(redis.contains(&Task::Fills) && redis.contains(&Task::RedisRepair));
        assert!(
            redis.contains(&Task::Outbox),
            "writes cut short are replayed"
        );
        assert!(
            !redis.contains(&Task::InvalidationListener),
            "nothing in L1 to invalidate"
        );
        let full = plan(CacheMode::Full, true, false);
        assert_eq!(full.len(), 10, "every task but the replicas': {full:?}");
        assert!(full.contains(&Task::InvalidationListener));
        assert!(!full.contains(&Task::ReplicaWatch));
        assert!(plan(CacheMode::Off, false, true).contains(&Task::ReplicaWatch));
    }
}
