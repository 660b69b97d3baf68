//! Counters of the cache tiers. moka keeps no hit statistics, so we count ourselves.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct CacheStats {
    pub l1_hits: AtomicU64,
    pub l1_misses: AtomicU64,
    pub l2_hits: AtomicU64,
    pub l2_misses: AtomicU64,
    /// Reads answered by Postgres (fills, pages outside the window, bypassed tiers).
    pub postgres_reads: AtomicU64,
    pub fills: AtomicU64,
    pub fills_refused: AtomicU64,
    pub invalidations_sent: AtomicU64,
    pub invalidations_received: AtomicU64,
    pub redis_errors: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct StatsSnapshot {
    pub l1_hits: u64,
    pub l1_misses: u64,
    pub l2_hits: u64,
    pub l2_misses: u64,
    pub postgres_reads: u64,
    pub fills: u64,
    pub fills_refused: u64,
    pub invalidations_sent: u64,
    pub invalidations_received: u64,
    pub redis_errors: u64,
}

pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl CacheStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            l1_hits: get(&self.l1_hits),
            l1_misses: get(&self.l1_misses),
            l2_hits: get(&self.l2_hits),
            l2_misses: get(&self.l2_misses),
            postgres_reads: get(&self.postgres_reads),
            fills: get(&self.fills),
            fills_refused: get(&self.fills_refused),
            invalidations_sent: get(&self.invalidations_sent),
            invalidations_received: get(&self.invalidations_received),
            redis_errors: get(&self.redis_errors),
        }
    }
}

/// hits / (hits + misses), or `None` before the first lookup.
pub fn ratio(hits: u64, misses: u64) -> Option<f64> {
    let total = hits + misses;
    (total > 0).then(|| hits as f64 / total as f64)
}
