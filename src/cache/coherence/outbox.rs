//! Crash safety of invalidation (API.md promise 7), through the cache outbox that every
//! write fills in its own transaction ([`crate::postgres::Ticket`]).
//!
//! A write's row names the scopes it changed. Once the write's cache step is done (Redis
//! told, the other instances told, or the write announced through Postgres when Redis
//! could not be), [`Outbox::finish`] queues the row for deletion, in batches. A row that
//! outlives [`REPLAY_AFTER`] belongs to a write whose instance died, or stalled, between
//! commit and cache: every instance's [`work`] task replays it as if it had written it
//! during a Redis outage: the scopes go dirty here (reads skip the tiers), leave L1, and
//! the repair drops them from Redis (bumping their fences, so no fill that began before
//! the write installs) and tells every instance on pub/sub. Only then is the row deleted.
//! Replaying a write whose instance is merely slow drops a little more than needed;
//! nothing is ever left stale.
//!
//! At start ([`recover`]), before the instance serves, every row counts as cut short: a
//! restarted instance has no survivor to count on.
//!
//! Why an outbox and not logical decoding: it needs no `wal_level = logical`, no
//! replication slot that would hold WAL while no instance consumes it, and no superuser;
//! it costs a write one more row, sent in the same round trip as the write's own
//! statement (measured in docs/performance).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{info, warn};

use super::invalidation::Invalidation;
use super::Coherence;
use crate::cache::stats::bump;
use crate::postgres::{DbError, OutboxRow, Ticket};

/// A row older than this is a write cut short between commit and cache (its instance
/// finishes its own within milliseconds).
pub const REPLAY_AFTER: Duration = Duration::from_secs(1);
/// How often each instance deletes finished rows and looks for rows to replay. A write
/// cut short is replayed within `REPLAY_AFTER + SWEEP_INTERVAL` (1.5 s; promise 7 says 3).
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(500);
/// How often finished rows are deleted, in one statement.
const FINISH_INTERVAL: Duration = Duration::from_millis(100);
/// Rows replayed per sweep.
const REPLAY_BATCH: i64 = 1_000;

/// This instance's side of the cache outbox.
#[derive(Default)]
pub struct Outbox {
    /// Rows of writes whose cache step is done, to delete.
    finished: Mutex<Vec<i64>>,
}

impl Outbox {
    /// A write's cache step is done: its row can go.
    pub(super) fn finish(&self, ticket: Ticket) {
        if let Some(id) = ticket.0 {
            self.finished
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(id);
        }
    }

    fn take_finished(&self) -> Vec<i64> {
        std::mem::take(&mut *self.finished.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Leaves the rows' scopes dirty here and drops them from L1: until Redis has dropped
/// them, this instance answers them from Postgres.
fn mark(coherence: &Coherence, rows: &[OutboxRow]) {
    let tiers = &coherence.tiers;
    for row in rows {
        bump(&tiers.stats.outbox_replayed);
        for &scope in &row.scopes {
            tiers.dirty.mark(scope);
            coherence.invalidations.apply(Invalidation::covering(scope));
        }
    }
}

/// Replays `rows`: dirty here, then dropped from Redis and L1 everywhere, then deleted.
/// Returns whether Redis took the drops (else the rows stay for the next sweep).
async fn replay(coherence: &Coherence, rows: Vec<OutboxRow>) -> Result<bool, DbError> {
    if rows.is_empty() {
        return Ok(true);
    }
    mark(coherence, &rows);
    let scopes: usize = rows.iter().map(|r| r.scopes.len()).sum();
    match coherence.invalidations.repair().await {
        Ok(()) => {
            let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            coherence.tiers.db.outbox_done(&ids).await?;
            info!(
                writes = rows.len(),
                scopes, "replayed writes cut short between commit and cache"
            );
            Ok(true)
        }
        Err(error) => {
            warn!(%error, writes = rows.len(), scopes,
                  "writes cut short between commit and cache wait for Redis; their scopes are read from Postgres meanwhile");
            Ok(false)
        }
    }
}

/// At start, before serving: every row of the outbox is a write that may have been cut
/// short (by this instance's own crash, say), so its scopes go dirty at once; the
/// [`work`] task drops them from Redis. Returns how many rows it found.
pub async fn recover(coherence: &Coherence) -> Result<usize, DbError> {
    let db = &coherence.tiers.db;
    let mut found = 0;
    loop {
        let rows = db.outbox_older_than(Duration::ZERO, REPLAY_BATCH).await?;
        found += rows.len();
        let whole = rows.len() < REPLAY_BATCH as usize;
        if !replay(coherence, rows).await? || whole {
            break;
        }
    }
    if found > 0 {
        warn!(
            writes = found,
            "found writes that did not reach the cache (an instance stopped between commit and cache)"
        );
    }
    Ok(found)
}

/// Deletes finished rows every [`FINISH_INTERVAL`] and replays rows older than
/// [`REPLAY_AFTER`] every [`SWEEP_INTERVAL`], for as long as the process runs.
pub async fn work(coherence: Arc<Coherence>) {
    let tiers = coherence.tiers.clone();
    let mut ticker = tokio::time::interval(FINISH_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut swept = tokio::time::Instant::now();
    let mut warned = false;
    loop {
        ticker.tick().await;
        let finished = coherence.outbox.take_finished();
        if let Err(error) = tiers.db.outbox_done(&finished).await {
            // They stay in the table: a later sweep replays them, which only drops more.
            if !warned {
                warn!(%error, rows = finished.len(), "cannot delete finished outbox rows; they will be replayed");
                warned = true;
            }
        }
        if swept.elapsed() < SWEEP_INTERVAL {
            continue;
        }
        swept = tokio::time::Instant::now();
        let outcome = match tiers.db.outbox_older_than(REPLAY_AFTER, REPLAY_BATCH).await {
            Ok(rows) => replay(&coherence, rows).await,
            Err(error) => Err(error),
        };
        match outcome {
            Ok(_) => warned = false,
            Err(error) if !warned => {
                warn!(%error, "cannot read the cache outbox; retrying");
                warned = true;
            }
            Err(_) => {}
        }
    }
}
