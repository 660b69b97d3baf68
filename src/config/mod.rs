//! The settings of `hotchan serve` and the other subcommands ([`crate::cli`]): a flag and
//! an environment variable each (the flag wins), a documented default, and the unit in
//! the name. Each module's own settings type lives with it; these hand them down. Parsing validates values, so a bad value
//! stops startup with a message that names the setting.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};

mod values;

pub use crate::cache::CacheMode;
use crate::postgres::{parse_database_url, DatabaseUrl, PgSettings};
use values::{parse_percent, parse_prefix, parse_wait_replicas};
pub use values::{ListenAddr, LogFormat, Secret, Span, WaitReplicas};

/// Postgres connection and pool settings, shared by every subcommand.
#[derive(Clone, Debug, Args)]
pub struct DatabaseSettings {
    /// Postgres URL. Without a user name, the OS user is used, as libpq does.
    #[arg(long, env = "HOTCHAN_DATABASE_URL", default_value = "postgres://127.0.0.1:5432/hotchan", value_parser = parse_database_url)]
    pub database_url: DatabaseUrl,

    /// A Postgres read replica (a streaming standby): the flag repeats, the variable
    /// takes a comma-separated list. Same URL forms and TLS options as the primary's.
    /// Misses, fills, deep history and unread counts read from a replica only when it has
    /// replayed every write this instance knows of for what they read (API.md promise 8);
    /// else the primary answers. Default: none.
    #[arg(long = "database-replica-url", env = "HOTCHAN_DATABASE_REPLICA_URLS", value_delimiter = ',', value_parser = parse_database_url)]
    pub database_replica_urls: Vec<DatabaseUrl>,

    /// A replica that has been behind a position of the primary (sampled every 250 ms, or
    /// a write this instance knows of) for longer than this leaves the read rotation,
    /// until it catches up. With the default, a replica read misses no write older than
    /// about 0.8 s: inside the second promise 3 allows other instances.
    #[arg(long, env = "HOTCHAN_DATABASE_REPLICA_MAX_LAG_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub database_replica_max_lag_ms: u64,

    /// Most Postgres connections in the pool.
    #[arg(long, env = "HOTCHAN_PG_POOL_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub pg_pool_size: u32,

    /// How long a request waits for a free pool connection before it answers 503. A read
    /// waits as long for the reads' share of the pool (all but a quarter, at least one,
    /// kept for writes), and is then refused as overloaded.
    #[arg(long, env = "HOTCHAN_PG_POOL_WAIT_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub pg_pool_wait_ms: u64,

    /// Timeout for opening one Postgres connection.
    #[arg(long, env = "HOTCHAN_PG_CONNECT_TIMEOUT_MS", default_value_t = 3000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub pg_connect_timeout_ms: u64,

    /// Server-side `statement_timeout` of every statement hotchan runs.
    #[arg(long, env = "HOTCHAN_PG_STATEMENT_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub pg_statement_timeout_ms: u64,

    /// Hash partitions of `messages` by channel when hotchan lays the table out in a new
    /// database (an empty one); 0 keeps a plain table. A table that holds rows is never
    /// changed: `hotchan migrate --partition-messages N` converts it. The default is a
    /// plain table: at 10M messages 16 partitions measured 10–36% slower on most reads
    /// (docs/performance/README.md, "Production scale").
    #[arg(long, env = "HOTCHAN_MESSAGE_PARTITIONS", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=crate::postgres::partition::MAX_PARTITIONS as i64))]
    pub message_partitions: u32,

    /// Log format.
    #[arg(long, env = "HOTCHAN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Settings of `hotchan migrate`.
#[derive(Clone, Debug, Args)]
pub struct MigrateSettings {
    #[command(flatten)]
    pub db: DatabaseSettings,

    /// Convert an existing plain `messages` table into N hash partitions by channel, all
    /// or nothing: reads go on, writes to messages wait until it is done (docs/scale.md).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=crate::postgres::partition::MAX_PARTITIONS as i64))]
    pub partition_messages: Option<u32>,
}

impl DatabaseSettings {
    /// The settings the Postgres module takes.
    pub fn pg(&self) -> PgSettings {
        PgSettings {
            url: self.database_url.clone(),
            pool_size: self.pg_pool_size,
            pool_wait: Duration::from_millis(self.pg_pool_wait_ms),
            connect_timeout: Duration::from_millis(self.pg_connect_timeout_ms),
            statement_timeout: Duration::from_millis(self.pg_statement_timeout_ms),
            message_partitions: self.message_partitions,
            replicas: self.database_replica_urls.clone(),
            replica_max_lag: Duration::from_millis(self.database_replica_max_lag_ms),
        }
    }
}

/// Settings of activity feeds, shared by `hotchan serve` and `hotchan feed-cleanup`.
#[derive(Clone, Debug, Args)]
pub struct FeedSettings {
    /// Events older than this never appear in any answer; their partitions are dropped.
    /// A whole number of `--feed-partition` spans.
    #[arg(long, env = "HOTCHAN_FEED_RETENTION", default_value = "90d")]
    pub feed_retention: Span,

    /// The time span of one partition of events, feed items and channel events.
    #[arg(long, env = "HOTCHAN_FEED_PARTITION", default_value = "1d")]
    pub feed_partition: Span,

    /// Largest `data` of an event, in bytes of compact JSON.
    #[arg(long, env = "HOTCHAN_FEED_MAX_DATA_BYTES", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(2..=1_000_000))]
    pub feed_max_data_bytes: u64,

    /// Event ids per user kept in Redis and L1 (the hot feed).
    #[arg(long, env = "HOTCHAN_FEED_HOT_ITEMS", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub feed_hot_items: u32,

    /// Feed items one background fan-out batch writes in one transaction.
    #[arg(long, env = "HOTCHAN_FEED_FANOUT_BATCH", default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub feed_fanout_batch: u32,
}

impl FeedSettings {
    /// The retention and partition span as the feed code uses them; refuses a retention
    /// that is not a whole number of partitions.
    pub fn retention(&self) -> Result<crate::postgres::Retention, String> {
        let (keep, span) = (self.feed_retention.0, self.feed_partition.0);
        if keep.as_secs() % span.as_secs() != 0 {
            return Err(format!(
                "--feed-retention ({}s) must be a whole number of --feed-partition spans ({}s)",
                keep.as_secs(),
                span.as_secs()
            ));
        }
        Ok(crate::postgres::Retention { keep, span })
    }
}

/// Settings of `hotchan feed-cleanup`.
#[derive(Clone, Debug, Args)]
pub struct FeedCleanupSettings {
    #[command(flatten)]
    pub db: DatabaseSettings,
    #[command(flatten)]
    pub feeds: FeedSettings,
}

/// Settings of `hotchan serve`.
#[derive(Clone, Debug, Args)]
pub struct Settings {
    #[command(flatten)]
    pub db: DatabaseSettings,

    #[command(flatten)]
    pub feeds: FeedSettings,

    /// Redis URL.
    #[arg(
        long,
        env = "HOTCHAN_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,

    /// CA bundle (PEM) that a TLS Redis URL is verified against; default: the system's
    /// roots. Only read for `rediss://` and `rediss-cluster://` URLs.
    #[arg(long, env = "HOTCHAN_REDIS_CA_FILE")]
    pub redis_ca_file: Option<std::path::PathBuf>,

    /// Replicas a write to Redis must reach (`WAIT`) before it counts, so that a failover
    /// cannot lose a fence bump: a number, or `auto` (1 behind Sentinel and on a cluster
    /// with replicas, else 0). A write that does not reach them is handled like one made
    /// while Redis was down.
    #[arg(long, env = "HOTCHAN_REDIS_WAIT_REPLICAS", default_value = "auto", value_parser = parse_wait_replicas)]
    pub redis_wait_replicas: WaitReplicas,

    /// Listen address: HOST:PORT, or unix:/path/to.sock for a Unix socket.
    #[arg(long, env = "HOTCHAN_LISTEN", default_value = "127.0.0.1:7600")]
    pub listen: ListenAddr,

    /// Bearer token every /v1 request must carry. None: no auth.
    #[arg(long, env = "HOTCHAN_TOKEN", hide_env_values = true)]
    pub token: Option<Secret>,

    /// Prefix of every Redis key and pub/sub channel.
    #[arg(long, env = "HOTCHAN_REDIS_PREFIX", default_value = "hc", value_parser = parse_prefix)]
    pub redis_prefix: String,

    /// Which tiers serve reads: full (L1 + Redis), redis (no L1), off (Postgres only).
    #[arg(long, env = "HOTCHAN_CACHE", default_value = "full", value_parser = str::parse::<CacheMode>)]
    pub cache: CacheMode,

    /// Messages per channel kept in Redis and L1 (the hot window).
    #[arg(long, env = "HOTCHAN_HOT_WINDOW", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub hot_window: u32,

    /// L1 capacity in bytes (entries are weighed by the heap they take); 0 turns L1 off.
    /// The default holds about 4,500 hot windows of 200 messages of 60 bytes.
    #[arg(long, env = "HOTCHAN_L1_CAPACITY_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub l1_capacity_bytes: u64,

    /// L1 bytes for deep history (runs of messages below the hot window), apart from
    /// `--l1-capacity-bytes`; 0 keeps deep history in Redis only.
    #[arg(long, env = "HOTCHAN_HISTORY_L1_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub history_l1_bytes: u64,

    /// Longest life of an L1 entry: a safety net behind invalidation, which keeps L1
    /// right by itself (writes here, pub/sub from other instances, a flush whenever
    /// messages may have been lost). Long, so that a hot window is not reloaded from
    /// Redis every few seconds for nothing.
    #[arg(long, env = "HOTCHAN_L1_TTL_MS", default_value_t = 300_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub l1_ttl_ms: u64,

    /// A channel's Redis keys expire this long after its last fill or write.
    #[arg(long, env = "HOTCHAN_REDIS_TTL_MS", default_value_t = 3_600_000, value_parser = clap::value_parser!(u64).range(1_000..=604_800_000))]
    pub redis_ttl_ms: u64,

    /// Consecutive failed Redis calls that open the breaker (all traffic to Postgres).
    #[arg(long, env = "HOTCHAN_BREAKER_FAILURES", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub breaker_failures: u32,

    /// While the breaker is open or channels are dirty, how often Redis is probed.
    #[arg(long, env = "HOTCHAN_REDIS_PROBE_MS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub redis_probe_ms: u64,

    /// Which miss of a channel in both tiers queues its fill (1: every miss; 2: a channel
    /// is filled once it is read again while remembered). Misses are answered by
    /// Postgres either way; fills run in the background and install into Redis and L1.
    /// 1 by default: a channel read twice then costs Postgres two queries, not three.
    #[arg(long, env = "HOTCHAN_FILL_AFTER_MISSES", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub fill_after_misses: u32,

    /// Share of channel writes (posts, edits, deletes) whose channel the consistency
    /// auditor checks against Postgres 1 s, 10 s and 60 s later, in percent (0: off).
    #[arg(long, env = "HOTCHAN_AUDIT_PERCENT", default_value_t = 1.0, value_parser = parse_percent)]
    pub audit_percent: f64,

    /// The sizing advisor: an online miss-ratio curve of channel reads
    /// (`/v1/admin/cache/advice`). `off` spares each read its sampling step.
    #[arg(long, env = "HOTCHAN_ADVICE", default_value = "on", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub advice: bool,

    /// Deprecated, no effect: the cost gate that sent reads straight to Postgres while
    /// they looked cheaper there is gone; a read the cache can answer is answered by it
    /// (docs/cache.md, "No run-time routing"). Still accepted so that existing
    /// deployments start.
    #[arg(long, env = "HOTCHAN_CACHE_GATE", default_value = "off", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub cache_gate: bool,

    /// Connections to Redis for cache calls, used in turn (pub/sub has its own).
    #[arg(long, env = "HOTCHAN_REDIS_CONNECTIONS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub redis_connections: u32,

    /// Timeout of every Redis call.
    #[arg(long, env = "HOTCHAN_REDIS_TIMEOUT_MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub redis_timeout_ms: u64,

    /// Largest message content, in bytes of UTF-8.
    #[arg(long, env = "HOTCHAN_MAX_CONTENT_BYTES", default_value_t = 16 * 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_content_bytes: u64,

    /// Largest request body, in bytes; larger bodies answer 413.
    #[arg(long, env = "HOTCHAN_MAX_BODY_BYTES", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..=64 * 1024 * 1024))]
    pub max_body_bytes: u64,

    /// Sync answers with `reset` when more changes than this happened in a channel.
    #[arg(long, env = "HOTCHAN_SYNC_RESET_THRESHOLD", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub sync_reset_threshold: u32,

    /// How many newest live messages a `reset` sync answer carries.
    #[arg(long, env = "HOTCHAN_SYNC_RESET_MESSAGES", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub sync_reset_messages: u32,

    /// Append every channel read to this file (`<channel id> <depth>` a line), for
    /// `hotchan bench --replay`. None: no trace.
    #[arg(long, env = "HOTCHAN_TRACE_FILE")]
    pub trace_file: Option<PathBuf>,

    /// On SIGTERM or SIGINT, how long in-flight requests may take before the process exits.
    #[arg(long, env = "HOTCHAN_SHUTDOWN_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub shutdown_timeout_ms: u64,

    /// Admission control: requests under `/v1` that may run at once. More wait in a queue
    /// (`--max-queued`, `--admission-wait-ms`) or get 503 overloaded with `Retry-After`.
    #[arg(long, env = "HOTCHAN_MAX_IN_FLIGHT", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_in_flight: u32,

    /// Admission control: requests that may wait for a slot; past it a request is refused
    /// at once (503 overloaded).
    #[arg(long, env = "HOTCHAN_MAX_QUEUED", default_value_t = 512, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub max_queued: u32,

    /// Admission control: how long a queued request waits for a slot before it is
    /// refused (503 overloaded).
    #[arg(long, env = "HOTCHAN_ADMISSION_WAIT_MS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub admission_wait_ms: u64,

    /// For the crash-safety tests only: abort the process the first time a write reaches
    /// this step (`after-commit`, `after-redis`; see `src/crash.rs`). Default: none.
    #[arg(long, env = "HOTCHAN_CRASH_AT", hide = true, value_parser = clap::builder::PossibleValuesParser::new(crate::crash::POINTS))]
    pub crash_at: Option<String>,
}

impl Settings {
    /// Settings for tests and embedding: every default, with the given database and listener.
    pub fn with_defaults(database_url: &str, listen: &str) -> Result<Self, String> {
        /// `hotchan serve`'s settings alone, parsed as the command line would.
        #[derive(Parser)]
        struct Serve {
            #[command(flatten)]
            settings: Settings,
        }
        let serve =
            Serve::try_parse_from(["serve", "--database-url", database_url, "--listen", listen])
                .map_err(|e| e.to_string())?;
        Ok(serve.settings)
    }

    pub fn cache_settings(&self) -> crate::cache::CacheSettings {
        crate::cache::CacheSettings {
            mode: self.cache,
            hot_window: self.hot_window as usize,
            l1_capacity_bytes: self.l1_capacity_bytes,
            l1_ttl: Duration::from_millis(self.l1_ttl_ms),
            breaker_failures: self.breaker_failures,
            probe_interval: Duration::from_millis(self.redis_probe_ms),
            fill_after_misses: self.fill_after_misses,
            audit_percent: self.audit_percent,
            advice: self.advice,
            history_l1_bytes: self.history_l1_bytes,
            feed_hot: self.feeds.feed_hot_items as usize,
            feed_retention: self
                .feeds
                .retention()
                .expect("checked when the application is built"),
        }
    }

    /// The Redis settings for the database whose identity is `database`: keys and pub/sub
    /// channels live under `<prefix>.<first 12 hex digits of the identity>`.
    pub fn redis_settings(&self, database: uuid::Uuid) -> crate::redis::RedisSettings {
        let id = database.simple().to_string();
        crate::redis::RedisSettings {
            url: self.redis_url.clone(),
            ca_file: self.redis_ca_file.clone(),
            wait_replicas: self.redis_wait_replicas.0,
            prefix: format!("{}.{}", self.redis_prefix, &id[..12]),
            timeout: self.redis_timeout(),
            ttl: Duration::from_millis(self.redis_ttl_ms),
            connections: self.redis_connections as usize,
        }
    }

    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addr_parses_tcp_and_unix() {
        assert_eq!(
            "127.0.0.1:7600".parse::<ListenAddr>().unwrap(),
            ListenAddr::Tcp("127.0.0.1:7600".parse().unwrap())
        );
        assert_eq!(
            "unix:/tmp/h.sock".parse::<ListenAddr>().unwrap(),
            ListenAddr::Unix("/tmp/h.sock".into())
        );
        assert!("unix:".parse::<ListenAddr>().is_err());
        assert!("nonsense".parse::<ListenAddr>().is_err());
    }

    #[test]
    fn defaults_match_the_contract() {
        let s =
            Settings::with_defaults("postgres://127.0.0.1:5432/hotchan", "127.0.0.1:7600").unwrap();
        assert_eq!(s.redis_url, "redis://127.0.0.1:6379");
        assert_eq!(s.redis_prefix, "hc");
        assert_eq!(s.cache, CacheMode::Full);
        assert!(s.token.is_none());
        assert_eq!(s.max_content_bytes, 16384);
        assert_eq!(s.max_body_bytes, 1 << 20);
    }

    #[test]
    fn spans_and_retention_are_checked() {
        assert_eq!("90d".parse::<Span>().unwrap().0.as_secs(), 90 * 86_400);
        assert_eq!("45s".parse::<Span>().unwrap().0.as_secs(), 45);
        for bad in ["", "0s", "5", "5w", "d", "-1h"] {
            assert!(bad.parse::<Span>().is_err(), "{bad}");
        }
        let s = Settings::with_defaults("postgres://127.0.0.1/x", "127.0.0.1:0").unwrap();
        let r = s.feeds.retention().unwrap();
        assert_eq!((r.keep.as_secs(), r.span.as_secs()), (90 * 86_400, 86_400));
        let odd = FeedSettings {
            feed_retention: "20s".parse().unwrap(),
            feed_partition: "6s".parse().unwrap(),
            ..s.feeds
        };
        let err = odd.retention().unwrap_err();
        assert!(err.contains("--feed-retention"), "{err}");
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let s = Settings::with_defaults("postgres://u:hunter2@127.0.0.1/x", "127.0.0.1:0").unwrap();
        let s = Settings {
            token: Some(Secret("tok-123".into())),
            ..s
        };
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("tok-123"),
            "{shown}"
        );
    }
}
