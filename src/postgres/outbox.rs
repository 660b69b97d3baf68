//! The cache outbox (migration 8, API.md promise 7): each write that changes what the
//! cache holds records the [`Scope`]s it changed in its own transaction, so a crash
//! between commit and the cache step cannot lose the invalidation. The cache side
//! (`cache::coherence::outbox`) deletes a row once its write's cache step is done and
//! replays the rows that outlive their instance.

use std::time::Duration;

use deadpool_postgres::GenericClient;

use super::{Db, DbError};
use crate::domain::Scope;

/// A write's row in the outbox, to hand back once its cache step is done; empty when the
/// write recorded none (the cache is off, or it changed nothing cached).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ticket(pub Option<i64>);

/// A row of the outbox: what one write changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub scopes: Vec<Scope>,
}

/// The statement that records a row inside a write's transaction.
const RECORD: &str = "INSERT INTO cache_outbox (scopes) VALUES ($1) RETURNING id";

/// A common table expression, `outbox`, for a single-statement write whose change is the
/// CTE `changed`: it records `$n` (the scopes, NULL for none) once when `changed` has a
/// row. Read its id with `(SELECT id FROM outbox)`.
pub(super) fn outbox_cte(changed: &str, n: usize) -> String {
    format!(
        "outbox AS (
           INSERT INTO cache_outbox (scopes)
           SELECT ${n}::text[] FROM {changed} WHERE ${n}::text[] IS NOT NULL LIMIT 1
           RETURNING id)"
    )
}

impl Db {
    /// The scopes of a write as the outbox statements take them: `None` (record nothing)
    /// when the outbox is off or there is nothing to record.
    pub(super) fn outbox_scopes(&self, scopes: &[Scope]) -> Option<Vec<String>> {
        (self.outbox && !scopes.is_empty()).then(|| scopes.iter().map(Scope::encode).collect())
    }

    /// Records a write's scopes inside its transaction `tx`, just before it commits.
    pub(super) async fn record_outbox(
        &self,
        tx: &impl GenericClient,
        scopes: &[Scope],
    ) -> Result<Ticket, DbError> {
        let Some(scopes) = self.outbox_scopes(scopes) else {
            return Ok(Ticket(None));
        };
        let stmt = tx.prepare_cached(RECORD).await?;
        Ok(Ticket(Some(tx.query_one(&stmt, &[&scopes]).await?.get(0))))
    }

    /// Deletes the rows of writes whose cache step is done.
    pub async fn outbox_done(&self, ids: &[i64]) -> Result<u64, DbError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("DELETE FROM cache_outbox WHERE id = ANY($1)")
            .await?;
        Ok(client.execute(&stmt, &[&ids]).await?)
    }

    /// Rows written at least `age` ago (by the server's clock), oldest first, at most
    /// `limit`. Scopes this version cannot read count as everything.
    pub async fn outbox_older_than(
        &self,
        age: Duration,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, DbError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT id, scopes FROM cache_outbox
                 WHERE at <= now() - make_interval(secs => $1)
                 ORDER BY id LIMIT $2",
            )
            .await?;
        let rows = client.query(&stmt, &[&age.as_secs_f64(), &limit]).await?;
        Ok(rows
            .iter()
            .map(|r| OutboxRow {
                id: r.get(0),
                scopes: r
                    .get::<_, Vec<String>>(1)
                    .iter()
                    .map(|s| Scope::parse(s).unwrap_or(Scope::Everything))
                    .collect(),
            })
            .collect())
    }
}
