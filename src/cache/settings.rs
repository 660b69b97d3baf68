//! The settings of the cache tiers, as [`crate::config`] hands them down.

use std::str::FromStr;
use std::time::Duration;

/// Which tiers serve reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheMode {
    /// L1 (in-process) + Redis.
    Full,
    /// Redis only, no L1.
    Redis,
    /// Every read from Postgres: the benchmark baseline.
    Off,
}

impl CacheMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheMode::Full => "full",
            CacheMode::Redis => "redis",
            CacheMode::Off => "off",
        }
    }
}

impl FromStr for CacheMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "full" => Ok(CacheMode::Full),
            "redis" => Ok(CacheMode::Redis),
            "off" => Ok(CacheMode::Off),
            _ => Err(format!("'{s}' is not one of full, redis, off")),
        }
    }
}

/// Settings of the cache tiers.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub mode: CacheMode,
    /// Messages per channel kept in Redis and L1.
    pub hot_window: usize,
    pub l1_capacity_bytes: u64,
    pub l1_ttl: Duration,
    /// Consecutive Redis failures that open the breaker.
    pub breaker_failures: u32,
    /// How often the background task probes Redis and drops dirty channels.
    pub probe_interval: Duration,
    /// The miss of a channel that queues its fill ([`fills`]).
    pub fill_after_misses: u32,
    /// Share of channel writes the consistency auditor checks, in percent ([`audit`]).
    pub audit_percent: f64,
    /// Whether the sizing advisor samples reads ([`advice`]).
    pub advice: bool,
    /// L1's budget for deep history ([`history`]), apart from `l1_capacity_bytes`.
    pub history_l1_bytes: u64,
    /// Event ids per user kept in Redis and L1 (the hot feed, [`feeds`]).
    pub feed_hot: usize,
    /// Events older than this are in no answer.
    pub feed_retention: crate::postgres::Retention,
}
