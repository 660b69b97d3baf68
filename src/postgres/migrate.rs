//! Schema migrations, embedded in the binary and applied in one transaction under a
//! Postgres advisory lock, so several instances can start at once.

use tokio_postgres::error::SqlState;
use tracing::info;

use super::PgSettings;
use super::{connect_config, DbError};

/// Every migration, in order. A migration is never edited once released: add a new one.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "init", include_str!("../../migrations/0001_init.sql")),
    (
        2,
        "window_index",
        include_str!("../../migrations/0002_window_index.sql"),
    ),
    (
        3,
        "identity",
        include_str!("../../migrations/0003_identity.sql"),
    ),
    (
        4,
        "cache_notices",
        include_str!("../../migrations/0004_cache_notices.sql"),
    ),
    (
        5,
        "unread_index",
        include_str!("../../migrations/0005_unread_index.sql"),
    ),
    (6, "feeds", include_str!("../../migrations/0006_feeds.sql")),
    (
        7,
        "notice_scope",
        include_str!("../../migrations/0007_notice_scope.sql"),
    ),
    (
        8,
        "cache_outbox",
        include_str!("../../migrations/0008_cache_outbox.sql"),
    ),
];

/// The advisory lock key that serialises migrations (ASCII "hotchan1").
pub(super) const MIGRATION_LOCK_KEY: i64 = 0x686f_7463_6861_6e31;

/// Opens one connection outside the pool and drives it on a task of its own.
async fn connect(
    config: &tokio_postgres::Config,
    settings: &PgSettings,
) -> Result<tokio_postgres::Client, DbError> {
    let (client, connection) = config.connect(super::tls(&settings.url)?).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "migration connection ended with an error");
        }
    });
    Ok(client)
}

/// Creates the configured database when it does not exist yet, connecting to the
/// `postgres` maintenance database of the same server. Returns whether it created it.
pub async fn ensure_database(settings: &PgSettings) -> Result<bool, DbError> {
    let config = connect_config(settings, &settings.url);
    let dbname = config.get_dbname().unwrap_or("hotchan").to_owned();
    let mut maintenance = config.clone();
    maintenance.dbname("postgres");
    let client = connect(&maintenance, settings).await?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&dbname])
        .await?
        .is_some();
    if exists {
        return Ok(false);
    }
    let quoted = format!("\"{}\"", dbname.replace('"', "\"\""));
    match client
        .batch_execute(&format!("CREATE DATABASE {quoted}"))
        .await
    {
        Ok(()) => {
            info!(database = %dbname, "created the database");
            Ok(true)
        }
        // Another instance created it between our check and our CREATE.
        Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Drops the configured database (the benchmark's scale profile, after measuring it),
/// connecting to the server's `postgres` database.
pub async fn drop_database(settings: &PgSettings) -> Result<(), DbError> {
    let config = connect_config(settings, &settings.url);
    let dbname = config.get_dbname().unwrap_or("hotchan").to_owned();
    let mut maintenance = config.clone();
    maintenance.dbname("postgres");
    let client = connect(&maintenance, settings).await?;
    let quoted = format!("\"{}\"", dbname.replace('"', "\"\""));
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        .await?;
    info!(database = %dbname, "dropped the database");
    Ok(())
}

/// Applies every pending migration. Returns how many it applied.
pub async fn migrate(settings: &PgSettings) -> Result<usize, DbError> {
    let mut client = connect(&connect_config(settings, &settings.url), settings).await?;
    let tx = client.transaction().await?;
    // Held until commit: a second instance waits here, then finds nothing pending.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    // An index build on a large table takes longer than a request's statement timeout.
    tx.batch_execute("SET LOCAL statement_timeout = 0").await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS hotchan_migrations (
           version INT PRIMARY KEY,
           name TEXT NOT NULL,
           applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM hotchan_migrations", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut count = 0;
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO hotchan_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        info!(version, name, "applied migration");
        count += 1;
    }
    tx.commit().await?;
    if settings.message_partitions > 0 {
        lay_out_messages(settings).await?;
    }
    Ok(count)
}

/// Makes an empty `messages` table hash-partitioned as the settings ask (a new database);
/// a table that holds rows is left as it is.
async fn lay_out_messages(settings: &PgSettings) -> Result<(), DbError> {
    use super::partition::{partition_messages, Converted, Layout, When};
    let partitions = settings.message_partitions;
    let mut quiet = |_| std::ops::ControlFlow::Continue(());
    match partition_messages(settings, partitions, When::Empty, i64::MAX, &mut quiet).await {
        Ok(Converted::Rows(_)) => info!(partitions, "messages is hash-partitioned by channel"),
        Ok(Converted::Skipped(Layout::Plain)) => info!(
            "messages is a plain table that holds rows, kept as it is; \
             `hotchan migrate --partition-messages N` converts it"
        ),
        Ok(Converted::Skipped(Layout::Partitioned(_))) => {}
        Err(super::partition::PartitionError::Db(e)) => return Err(e),
        Err(other) => return Err(DbError::Schema(other.to_string())),
    }
    Ok(())
}
