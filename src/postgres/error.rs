//! The Postgres boundary's error, with classification so callers never match deep chains.

use deadpool_postgres::PoolError;

/// A failure talking to Postgres. `Display` names this layer and then every cause, down
/// to the server's own message (`tokio_postgres` alone prints only "db error").
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection within the pool wait timeout, or the pool is closed.
    #[error("no Postgres connection available: {}", causes(.0))]
    Pool(#[source] PoolError),
    /// A statement failed.
    #[error("a Postgres statement failed: {}", causes(.0))]
    Query(#[from] tokio_postgres::Error),
    /// The URL's TLS settings cannot be used (a missing or unreadable root certificate).
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The schema cannot be set up as the settings ask.
    #[error("the schema cannot be set up: {0}")]
    Schema(String),
    /// Reads already hold their whole share of the pool, and none was freed within this
    /// wait: the instance is overloaded (the connections left are kept for writes).
    #[error("every Postgres connection reads may use is busy (waited {0:?})")]
    Busy(std::time::Duration),
}

impl From<PoolError> for DbError {
    fn from(e: PoolError) -> Self {
        DbError::Pool(e)
    }
}

impl DbError {
    /// True when Postgres is unreachable, overloaded or too slow: the request answers 503
    /// and may be retried. Other errors are bugs or broken data and answer 500.
    pub fn is_unavailable(&self) -> bool {
        match self {
            DbError::Pool(_) | DbError::Busy(_) => true,
            DbError::Schema(_) | DbError::Tls(_) => false,
            DbError::Query(e) if e.is_closed() => true,
            DbError::Query(e) => match e.code() {
                // SQLSTATE classes: 08 connection exception, 53 insufficient resources,
                // 57 operator intervention (57014: cancelled by statement_timeout).
                Some(state) => ["08", "53", "57"]
                    .iter()
                    .any(|class| state.code().starts_with(class)),
                // No SQLSTATE: the client failed; it is an outage when I/O failed.
                None => has_io_cause(e),
            },
        }
    }
}

/// `e` and its sources, joined with ": ", skipping a cause its parent already printed.
pub fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text
}

fn has_io_cause(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = e.source();
    while let Some(c) = cause {
        if c.is::<std::io::Error>() {
            return true;
        }
        cause = c.source();
    }
    false
}
