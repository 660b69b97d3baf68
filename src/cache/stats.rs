//! Counters of the cache tiers. moka keeps no hit statistics, so we count ourselves.

use std::sync::atomic::{AtomicU64, Ordering};

/// Declares the counters once: the live atomics ([`CacheStats`]), a plain copy
/// ([`StatsSnapshot`]), and the difference of two copies.
macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        #[derive(Default)]
        pub struct CacheStats {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A copy of the counters at one moment.
        #[derive(Debug, Clone, Copy, Default, serde::Serialize)]
        pub struct StatsSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl CacheStats {
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }
        }

        impl StatsSnapshot {
            /// The counts between an earlier snapshot and this one.
            pub fn since(&self, before: &StatsSnapshot) -> StatsSnapshot {
                StatsSnapshot {
                    $($name: self.$name - before.$name,)*
                }
            }
        }
    };
}

counters! {
    l1_hits,
    l1_misses,
    l2_hits,
    l2_misses,
    /// Reads answered by Postgres (fills, pages outside the window, bypassed tiers).
    postgres_reads,
    /// Reads that did not ask Redis: this instance had not seen the key there
    /// ([`super::presence`]); Postgres answered.
    redis_skipped,
    fills,
    fills_refused,
    /// Fills not queued because the queue was full.
    fills_dropped,
    /// Pages past a cursor answered by deep history held in L1.
    history_l1_hits,
    /// Pages past a cursor answered by deep history read from Redis.
    history_redis_hits,
    /// Pages past a cursor neither the window nor any run held (Postgres answered).
    history_misses,
    /// Runs of deep history installed in Redis.
    history_fills,
    invalidations_sent,
    invalidations_received,
    /// Writes announced through Postgres because Redis could not be told.
    notices_sent,
    /// Other instances' announcements heard (live or caught up).
    notices_received,
    /// Writes whose instance died (or stalled) between commit and cache, replayed from
    /// the cache outbox.
    outbox_replayed,
    redis_errors,
    /// Attempts of the background repair that Redis did not let finish.
    repair_failures,
}

pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// hits / (hits + misses), or `None` before the first lookup.
pub fn ratio(hits: u64, misses: u64) -> Option<f64> {
    let total = hits + misses;
    (total > 0).then(|| hits as f64 / total as f64)
}
