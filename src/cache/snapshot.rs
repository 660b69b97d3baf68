//! The cache at one moment, as everything beside the data path reads it: `/metrics`,
//! `/v1/admin/cache`, the status page. One call ([`super::HotCache::snapshot`]) instead
//! of reaching into the engine's fields.

use super::audit::AuditReport;
use super::breaker::NodeHealth;
use super::stats::StatsSnapshot;
use super::{Bound, CacheMode};

/// What one store of L1 holds: entries, weighed bytes, capacity (moka's counts lag
/// until its pending tasks run).
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub entries: u64,
    pub weighted_bytes: u64,
    pub capacity_bytes: u64,
}

impl From<(u64, u64, u64)> for Usage {
    fn from((entries, weighted_bytes, capacity_bytes): (u64, u64, u64)) -> Usage {
        Usage {
            entries,
            weighted_bytes,
            capacity_bytes,
        }
    }
}

/// The cache's counters, switches and sizes at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub mode: CacheMode,
    pub stats: StatsSnapshot,
    pub l1_enabled: bool,
    /// L1 neither read nor kept while invalidations may be lost.
    pub l1_bypassed: bool,
    /// Windows and member sets.
    pub l1: Usage,
    /// Deep history, in its own budget.
    pub history: Usage,
    /// Whether any Redis node's breaker is open.
    pub breaker_open: bool,
    /// While a breaker is open: what each open one's last failed call said.
    pub breaker_reason: Option<String>,
    /// Each Redis node's breaker (one entry off a cluster).
    pub nodes: Vec<NodeHealth>,
    /// Scopes (channels, feeds, event bodies) written while Redis could not be told.
    pub dirty: usize,
    /// Background fills waiting or running.
    pub fills_pending: usize,
    /// Every bounded table and queue of the cache.
    pub bounds: [Bound; 6],
    /// The consistency auditor's figures.
    pub audit: AuditReport,
    /// Whether the listener of notices through Postgres is connected.
    pub notices_listening: bool,
}
