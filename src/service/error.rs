//! The service boundary's error: what went wrong, in the contract's terms.

use crate::domain::InvalidInput;
use crate::postgres::DbError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input breaks the contract (400).
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// The named thing does not exist (404).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The caller may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The request conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The instance has more work than it can start in time (503 overloaded).
    #[error("overloaded: {0}")]
    Overloaded(#[source] DbError),
    /// Postgres is unreachable or too slow (503); the cause stays in `source()`.
    #[error("the database is unavailable")]
    Unavailable(#[source] DbError),
    /// A bug or broken data (500); the cause stays in `source()`, never in the answer.
    #[error("internal error")]
    Internal(#[source] DbError),
}

impl From<DbError> for Error {
    fn from(e: DbError) -> Self {
        if matches!(e, DbError::Busy(_)) {
            Error::Overloaded(e)
        } else if e.is_unavailable() {
            Error::Unavailable(e)
        } else {
            Error::Internal(e)
        }
    }
}
