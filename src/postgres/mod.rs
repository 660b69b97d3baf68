//! The only module that imports `tokio-postgres` and `deadpool-postgres`: the pool,
//! migrations and every query. The rest of the crate speaks domain types.

mod channels;
mod error;
mod failover;
mod fanout;
mod feed_loads;
mod feed_partitions;
mod feeds;
pub mod history;
mod messages;
mod migrate;
mod notices;
mod outbox;
pub mod partition;
mod positions;
mod reads;
mod replicas;
mod routing;
mod rows;
pub mod seeding;
mod settings;
mod sync;
mod url;
mod window;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

use crate::domain::{Lsn, Scope};

pub use channels::{MemberLookup, MemberRemoval};
pub use error::DbError;
pub use fanout::{Delivered, Delivery, INLINE_AUDIENCE};
pub use feed_partitions::{Retention, Upkeep};
pub use feeds::{EventDeleteOutcome, PublishOutcome, Published};
pub use messages::{DeleteOutcome, EditOutcome, NewMessage, PostOutcome};
pub use migrate::{drop_database, ensure_database, migrate, MIGRATIONS};
pub use notices::{
    CacheNotice, Heard, NoticeListener, LISTENER_APPLICATION_NAME, NOTICE_BUFFER, NOTICE_CHANNEL,
};
pub use outbox::{OutboxRow, Ticket};
pub use reads::{MarkReadOutcome, UnreadOutcome};
pub use replicas::{ReplicaHealth, Route};
pub use seeding::Seeder;
pub use settings::PgSettings;
pub use sync::SyncLimits;
pub use url::{parse_database_url, DatabaseUrl, PostgresTls};

/// The Postgres store: a pool and the queries of the contract.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    /// For connections outside the pool (the notice listener).
    config: std::sync::Arc<tokio_postgres::Config>,
    tls: crate::tls::MakeRustlsConnect,
    /// Audiences of unfinished background fan-outs ([`fanout`]).
    audiences: std::sync::Arc<fanout::Audiences>,
    /// Whether writes record what they change in the cache outbox ([`outbox`]); off when
    /// no cache is in front of this store.
    outbox: bool,
    /// Reads (misses, fills, deep history, counts) hold one of these while they hold a
    /// pooled connection: fewer than the pool has, so writes always find one.
    reads: std::sync::Arc<tokio::sync::Semaphore>,
    /// How many: [`read_share`] of the pool.
    read_share: usize,
    /// How long a read waits for one before it is refused as overloaded.
    read_wait: Duration,
    /// Read replicas ([`replicas`]); `None` when none is set, and reads go to the pool.
    replicas: Option<std::sync::Arc<replicas::Replicas>>,
    /// Where every read of this handle goes ([`Db::pinned`]); `None`: chosen per read.
    pin: Option<Route>,
    /// What every read of this handle needs a replica to have replayed besides what this
    /// instance knows ([`Db::pinned`]: the position Redis keeps beside a fence).
    floor: Lsn,
    /// The primary's timeline, to notice a failover ([`failover`]).
    failover: std::sync::Arc<failover::Failover>,
}

/// A pooled connection for a read, and the read's share of the pool.
pub(crate) struct ReadClient {
    client: deadpool_postgres::Object,
    /// The primary's: replicas' pools are for reads alone.
    _share: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl std::ops::Deref for ReadClient {
    type Target = deadpool_postgres::Object;
    fn deref(&self) -> &Self::Target {
        &self.client
    }
}

impl std::ops::DerefMut for ReadClient {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.client
    }
}

/// The connections of a pool of `size` that reads may hold at once: all but a quarter
/// (at least one) kept for writes.
fn read_share(size: usize) -> usize {
    size.saturating_sub(size.div_ceil(4)).max(1)
}

/// A snapshot of the pool, for `/metrics`.
#[derive(Clone, Copy, Debug)]
pub struct PoolState {
    pub max_size: usize,
    pub size: usize,
    pub available: usize,
    pub waiting: usize,
}

/// The `tokio-postgres` configuration for these settings: timeouts and application name.
/// JIT is off: hotchan's statements are short index lookups, and at 10M rows the planner's
/// cost estimates of some (sync's per-channel changes) pass `jit_above_cost`, so every
/// execution paid about 400 ms of compilation for a 1 ms query.
pub fn connect_config(settings: &PgSettings, url: &DatabaseUrl) -> tokio_postgres::Config {
    let mut config = url.0.clone();
    config
        .application_name("hotchan")
        .connect_timeout(settings.connect_timeout)
        .options(format!(
            "-c statement_timeout={} -c client_min_messages=warning -c jit=off",
            settings.statement_timeout.as_millis()
        ));
    config
}

/// The TLS connector of the URL's `sslmode` and `sslrootcert` (see [`crate::tls`]).
pub fn tls(url: &DatabaseUrl) -> Result<crate::tls::MakeRustlsConnect, DbError> {
    let tls = &url.1;
    Ok(crate::tls::postgres_connector(
        tls.mode,
        tls.root_cert.as_ref(),
    )?)
}

impl Db {
    /// Builds the pool and checks one connection, since building a deadpool pool never
    /// fails on its own.
    pub async fn connect(settings: &PgSettings) -> Result<Db, DbError> {
        let failover = std::sync::Arc::new(failover::Failover::default());
        let (pool, config, tls) = build_pool(settings, &settings.url, Some(failover.clone()))?;
        let mut replicas = Vec::new();
        for url in &settings.replicas {
            replicas.push((replicas::node_name(url), build_pool(settings, url, None)?.0));
        }
        let db = Db {
            pool,
            config: std::sync::Arc::new(config),
            tls,
            audiences: Default::default(),
            outbox: true,
            reads: std::sync::Arc::new(tokio::sync::Semaphore::new(read_share(
                settings.pool_size as usize,
            ))),
            read_share: read_share(settings.pool_size as usize),
            read_wait: settings.pool_wait,
            replicas: (!replicas.is_empty()).then(|| {
                std::sync::Arc::new(replicas::Replicas::new(replicas, settings.replica_max_lag))
            }),
            pin: None,
            floor: Lsn::default(),
            failover,
        };
        db.ping().await?;
        if db.replicas.is_some() {
            // Writes made before this instance started are known too: a restarted
            // instance never reads older than what it may have acknowledged.
            db.wrote(&[Scope::Everything]).await?;
        }
        Ok(db)
    }

    /// Reads that hold a pooled connection now, and the most that may.
    pub fn reads_in_flight(&self) -> (usize, usize) {
        let share = self.read_share;
        (share - self.reads.available_permits(), share)
    }

    /// This store with writes recording what they change in the cache outbox (`true`,
    /// the default) or not (no cache in front of it).
    pub fn with_outbox(mut self, on: bool) -> Db {
        self.outbox = on;
        self
    }

    /// One round trip to Postgres.
    pub async fn ping(&self) -> Result<(), DbError> {
        let client = self.pool.get().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// Transactions Postgres counts for this database so far (`pg_stat_database`,
    /// committed and rolled back): the benchmark's measure of Postgres's work. Backends
    /// report theirs within about a second, and on exit.
    pub async fn transactions(&self) -> Result<i64, DbError> {
        let client = self.read_primary().await?;
        let row = client
            .query_one(
                "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database \
                 WHERE datname = current_database()",
                &[],
            )
            .await?;
        Ok(row.get(0))
    }

    pub fn pool_state(&self) -> PoolState {
        let status = self.pool.status();
        PoolState {
            max_size: status.max_size,
            size: status.size,
            available: status.available,
            waiting: status.waiting,
        }
    }

    /// Closes the pool: idle connections are dropped, checked-out ones when returned.
    pub fn close(&self) {
        self.pool.close();
        if let Some(replicas) = &self.replicas {
            replicas.close();
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, DbError> {
        Ok(self.pool.get().await?)
    }
}

/// A pool of `url` with these settings, its connection config and TLS connector; with
/// `failover`, every new connection reads the primary's timeline first.
fn build_pool(
    settings: &PgSettings,
    url: &DatabaseUrl,
    failover: Option<std::sync::Arc<failover::Failover>>,
) -> Result<(Pool, tokio_postgres::Config, crate::tls::MakeRustlsConnect), DbError> {
    let config = connect_config(settings, url);
    let tls = tls(url)?;
    let manager = Manager::from_config(
        config.clone(),
        tls.clone(),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let mut builder = Pool::builder(manager)
        .max_size(settings.pool_size as usize)
        .wait_timeout(Some(settings.pool_wait))
        .create_timeout(Some(settings.connect_timeout))
        .recycle_timeout(Some(Duration::from_secs(1)))
        .runtime(Runtime::Tokio1);
    if let Some(failover) = failover {
        builder = builder.post_create(failover::hook(failover));
    }
    let pool = builder
        .build()
        .expect("a pool with a runtime and valid sizes always builds");
    Ok((pool, config, tls))
}

/// A read-only REPEATABLE READ transaction: every statement in it sees one snapshot.
async fn snapshot(
    client: &mut deadpool_postgres::Object,
) -> Result<deadpool_postgres::Transaction<'_>, DbError> {
    Ok(client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}
