//! `messages` hash-partitioned by `channel_id`: the layout of a new database (the
//! `--message-partitions` setting) and the conversion of an existing plain table
//! (`hotchan migrate --partition-messages N`).
//!
//! The conversion is all or nothing: one transaction, under the migration lock, that holds
//! `messages` in EXCLUSIVE mode (reads go on, writes wait) while it copies every row into a
//! new partitioned table in batches of ids and builds its keys and indexes; then it drops
//! the old table and renames the new one, which blocks reads only for that last moment.
//! Interrupted anywhere (a crash, a lost connection, Ctrl-C), it rolls back and nothing has
//! changed; run it again to start over.
//!
//! Keys of the partitioned table: primary key `(channel_id, id)`, reply key
//! `(channel_id, reply_to_id)` → `(channel_id, id)`, `client_msg_id` and `seq` unique per
//! channel, all of them containing the partition key as Postgres requires. An index on
//! `id` alone serves `GET /v1/messages/{id}` (one probe per partition).

use std::ops::ControlFlow;

use tokio_postgres::Transaction;

use super::migrate::MIGRATION_LOCK_KEY;
use super::PgSettings;
use super::{connect_config, DbError};

/// Most partitions `--message-partitions` and `--partition-messages` accept.
pub const MAX_PARTITIONS: u32 = 1024;

/// What `messages` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Plain,
    Partitioned(u32),
}

/// Where a conversion is, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Rows copied so far, by position in the id range.
    Copy { done_ids: u64, total_ids: u64 },
    /// Building the new table's keys and indexes: `done` of `total`, naming the next.
    Build {
        next: &'static str,
        done: usize,
        total: usize,
    },
}

/// Whether to convert a table that already holds rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Always (`hotchan migrate --partition-messages`).
    Always,
    /// Only an empty table (a new database); a table with rows is left as it is.
    Empty,
}

#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("messages is already hash-partitioned into {0} partitions; nothing was changed")]
    AlreadyPartitioned(u32),
    #[error("the partition count must be from 1 to {MAX_PARTITIONS}, not {0}")]
    BadCount(u32),
    #[error("the conversion was interrupted and rolled back; nothing was changed")]
    Interrupted,
    #[error("converting messages failed and was rolled back; nothing was changed")]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for PartitionError {
    fn from(e: tokio_postgres::Error) -> Self {
        PartitionError::Db(e.into())
    }
}

/// What a conversion did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Converted {
    /// Rows copied into the new layout.
    Rows(u64),
    /// `When::Empty` and the table held rows, or it was partitioned already.
    Skipped(Layout),
}

/// The columns of `messages`, in table order.
const COLUMNS: &str = "id, channel_id, sender_id, content, reply_to_id, created_at, updated_at, \
                       deleted_at, seq, client_msg_id";

/// Keys and indexes of the partitioned table, built after the copy (faster than
/// maintaining them row by row), under temporary names until the old table is gone.
const BUILD: &[(&str, &str)] = &[
    (
        "primary key (channel_id, id)",
        "ALTER TABLE messages_partitioned ADD CONSTRAINT messages_pkey_new PRIMARY KEY (channel_id, id)",
    ),
    (
        "client_msg_id unique per channel",
        "ALTER TABLE messages_partitioned ADD CONSTRAINT messages_channel_client_msg_id_new
           UNIQUE (channel_id, client_msg_id)",
    ),
    (
        "seq unique per channel",
        "CREATE UNIQUE INDEX idx_messages_channel_seq_new ON messages_partitioned (channel_id, seq)",
    ),
    (
        "live-message cursor index",
        "CREATE INDEX idx_messages_channel_cursor_new ON messages_partitioned
           (channel_id, id DESC) INCLUDE (sender_id) WHERE deleted_at IS NULL",
    ),
    (
        "id index",
        "CREATE INDEX idx_messages_id_new ON messages_partitioned (id)",
    ),
    (
        "channel foreign key",
        "ALTER TABLE messages_partitioned ADD CONSTRAINT messages_channel_id_fkey_new
           FOREIGN KEY (channel_id) REFERENCES channels (id)",
    ),
    (
        "reply foreign key",
        "ALTER TABLE messages_partitioned ADD CONSTRAINT messages_reply_to_fkey_new
           FOREIGN KEY (channel_id, reply_to_id) REFERENCES messages_partitioned (channel_id, id)",
    ),
];

/// After the old table is dropped: the canonical names.
const RENAME: &str = "
    ALTER TABLE messages_partitioned RENAME TO messages;
    ALTER TABLE messages RENAME CONSTRAINT messages_pkey_new TO messages_pkey;
    ALTER TABLE messages RENAME CONSTRAINT messages_channel_client_msg_id_new
      TO messages_channel_client_msg_id;
    ALTER INDEX idx_messages_channel_seq_new RENAME TO idx_messages_channel_seq;
    ALTER INDEX idx_messages_channel_cursor_new RENAME TO idx_messages_channel_cursor;
    ALTER INDEX idx_messages_id_new RENAME TO idx_messages_id;
    ALTER TABLE messages RENAME CONSTRAINT messages_channel_id_fkey_new TO messages_channel_id_fkey;
    ALTER TABLE messages RENAME CONSTRAINT messages_reply_to_fkey_new TO messages_reply_to_id_fkey;
    ANALYZE messages;";

/// The layout of `messages` in this transaction's view.
async fn layout_in(tx: &Transaction<'_>) -> Result<Layout, DbError> {
    let row = tx
        .query_one(
            "SELECT c.relkind = 'p',
                    (SELECT count(*) FROM pg_inherits i WHERE i.inhparent = c.oid)
             FROM pg_class c WHERE c.oid = 'public.messages'::regclass",
            &[],
        )
        .await?;
    Ok(if row.get(0) {
        Layout::Partitioned(row.get::<_, i64>(1) as u32)
    } else {
        Layout::Plain
    })
}

/// The layout of `messages` in the configured database.
pub async fn layout(settings: &PgSettings) -> Result<Layout, DbError> {
    let (mut client, connection) = connect_config(settings, &settings.url)
        .connect(super::tls(&settings.url)?)
        .await?;
    tokio::spawn(connection);
    let tx = client.transaction().await?;
    layout_in(&tx).await
}

/// Converts `messages` into `partitions` hash partitions by channel (see the module
/// docs), copying `batch_ids` ids per statement. `progress` hears every step and may stop
/// the conversion (`Break`), which rolls it back.
pub async fn partition_messages(
    settings: &PgSettings,
    partitions: u32,
    when: When,
    batch_ids: i64,
    progress: &mut (dyn FnMut(Step) -> ControlFlow<()> + Send),
) -> Result<Converted, PartitionError> {
    if !(1..=MAX_PARTITIONS).contains(&partitions) {
        return Err(PartitionError::BadCount(partitions));
    }
    let mut config = connect_config(settings, &settings.url);
    config.application_name("hotchan-partition");
    let (mut client, connection) = config.connect(super::tls(&settings.url)?).await?;
    tokio::spawn(connection);
    let tx = client.transaction().await?;
    tx.batch_execute("SET LOCAL statement_timeout = 0").await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    match (layout_in(&tx).await?, when) {
        (Layout::Plain, _) => {}
        (partitioned, When::Empty) => return Ok(Converted::Skipped(partitioned)),
        (Layout::Partitioned(n), When::Always) => {
            return Err(PartitionError::AlreadyPartitioned(n))
        }
    }
    if when == When::Empty
        && tx
            .query_one("SELECT EXISTS (SELECT 1 FROM messages)", &[])
            .await?
            .get::<_, bool>(0)
    {
        // Checked before locking, so starting against a table with rows never waits.
        return Ok(Converted::Skipped(Layout::Plain));
    }
    // Reads go on; writes to messages wait until commit.
    tx.batch_execute("LOCK TABLE messages IN EXCLUSIVE MODE")
        .await?;
    let range = tx
        .query_one("SELECT min(id), max(id) FROM messages", &[])
        .await?;
    let (min, max): (Option<i64>, Option<i64>) = (range.get(0), range.get(1));
    if min.is_some() && when == When::Empty {
        return Ok(Converted::Skipped(Layout::Plain));
    }
    create_partitioned(&tx, partitions).await?;
    let copied = match (min, max) {
        (Some(min), Some(max)) => copy_rows(&tx, min, max, batch_ids, progress).await?,
        _ => 0,
    };
    for (done, (name, sql)) in BUILD.iter().enumerate() {
        let step = Step::Build {
            next: name,
            done,
            total: BUILD.len(),
        };
        if progress(step).is_break() {
            return Err(PartitionError::Interrupted);
        }
        tx.batch_execute(sql).await?;
    }
    // From here to commit, reads of messages wait too: a moment.
    tx.batch_execute(
        "ALTER SEQUENCE messages_id_seq OWNED BY messages_partitioned.id;
         DROP TABLE messages;",
    )
    .await?;
    tx.batch_execute(RENAME).await?;
    tx.commit().await?;
    Ok(Converted::Rows(copied))
}

/// The new table and its partitions, without keys or indexes yet.
async fn create_partitioned(tx: &Transaction<'_>, partitions: u32) -> Result<(), DbError> {
    tx.batch_execute(
        "CREATE TABLE messages_partitioned (
           id BIGINT NOT NULL DEFAULT nextval('messages_id_seq'),
           channel_id UUID NOT NULL,
           sender_id UUID NOT NULL,
           content TEXT NOT NULL,
           reply_to_id BIGINT,
           created_at TIMESTAMPTZ DEFAULT now(),
           updated_at TIMESTAMPTZ,
           deleted_at TIMESTAMPTZ,
           seq BIGINT NOT NULL,
           client_msg_id VARCHAR(64)
         ) PARTITION BY HASH (channel_id)",
    )
    .await?;
    let mut sql = String::new();
    for r in 0..partitions {
        sql.push_str(&format!(
            "CREATE TABLE messages_p{r} PARTITION OF messages_partitioned
               FOR VALUES WITH (MODULUS {partitions}, REMAINDER {r});"
        ));
    }
    tx.batch_execute(&sql).await?;
    Ok(())
}

async fn copy_rows(
    tx: &Transaction<'_>,
    min: i64,
    max: i64,
    batch_ids: i64,
    progress: &mut (dyn FnMut(Step) -> ControlFlow<()> + Send),
) -> Result<u64, PartitionError> {
    let stmt = tx
        .prepare(&format!(
            "INSERT INTO messages_partitioned ({COLUMNS})
             SELECT {COLUMNS} FROM messages WHERE id >= $1 AND id < $2"
        ))
        .await?;
    let total_ids = (max - min + 1) as u64;
    let mut copied = 0;
    let mut from = min;
    while from <= max {
        let to = from.saturating_add(batch_ids.max(1));
        copied += tx.execute(&stmt, &[&from, &to]).await?;
        from = to;
        let step = Step::Copy {
            done_ids: ((from - min) as u64).min(total_ids),
            total_ids,
        };
        if progress(step).is_break() {
            return Err(PartitionError::Interrupted);
        }
    }
    Ok(copied)
}
