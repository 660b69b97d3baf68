//! The settings of the Postgres pool and connections, as the rest of the crate hands
//! them down (the command line lives in [`crate::config`]).

use std::time::Duration;

use super::DatabaseUrl;

/// What the pool and every connection outside it are made with.
#[derive(Clone, Debug)]
pub struct PgSettings {
    pub url: DatabaseUrl,
    /// Most connections in the pool.
    pub pool_size: u32,
    /// How long a caller waits for a free pool connection.
    pub pool_wait: Duration,
    /// Opening one connection.
    pub connect_timeout: Duration,
    /// The server-side `statement_timeout` of every statement.
    pub statement_timeout: Duration,
    /// Hash partitions of `messages` when a new, empty table is laid out (0: plain).
    pub message_partitions: u32,
    /// Read replicas (none by default).
    pub replicas: Vec<DatabaseUrl>,
    /// A replica further behind a known write than this leaves the read rotation.
    pub replica_max_lag: Duration,
}
