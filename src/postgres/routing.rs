//! Where a read goes (API.md promise 8): to a read replica that has replayed every write
//! this instance knows of for what it reads ([`super::replicas`]), else to the primary;
//! the write positions this instance learns; and the primary's failovers
//! ([`super::failover`]).

use super::replicas::{self, ReplicaHealth, Route};
use super::{Db, DbError, ReadClient};
use crate::domain::{Lsn, Scope};

impl Db {
    /// A pooled connection for a read of `scopes`: from a replica that has replayed every
    /// write to them this instance knows of ([`replicas`]), else from the primary, within
    /// the reads' share of its pool.
    pub(super) async fn read_client(&self, scopes: &[Scope]) -> Result<ReadClient, DbError> {
        if let Some(replicas) = &self.replicas {
            let needed = replicas.needed(scopes).max(self.floor);
            let route = self.pin.unwrap_or_else(|| replicas.route(needed));
            let client = match (route, self.pin) {
                // No replica was caught up at its last poll: ask one now.
                (Route::Primary, None) => match replicas.fresh(needed).await {
                    Some(client) => Some(client),
                    None => replicas.client(route).await,
                },
                _ => replicas.client(route).await,
            };
            if let Some(client) = client {
                return Ok(ReadClient {
                    client,
                    _share: None,
                });
            }
        }
        self.read_primary().await
    }

    /// A pooled connection of the primary for a read, within the reads' share of the pool.
    pub(super) async fn read_primary(&self) -> Result<ReadClient, DbError> {
        let share = tokio::time::timeout(self.read_wait, self.reads.clone().acquire_owned())
            .await
            .map_err(|_| DbError::Busy(self.read_wait))?
            .expect("the read semaphore is never closed");
        Ok(ReadClient {
            client: self.client().await?,
            _share: Some(share),
        })
    }

    /// Whether read replicas are set.
    pub fn has_replicas(&self) -> bool {
        self.replicas.is_some()
    }

    /// After a write to `scopes` committed: its WAL position, learned as theirs (and
    /// returned), so reads of them wait for a replica that replayed it. `None`, with no
    /// query, when no replica is set. The position is the primary's insert position
    /// read after the commit, so at or past the commit record.
    pub async fn wrote(&self, scopes: &[Scope]) -> Result<Option<Lsn>, DbError> {
        let Some(replicas) = &self.replicas else {
            return Ok(None);
        };
        let at = self.wal_position().await?;
        for &scope in scopes {
            replicas.learn(scope, at);
        }
        Ok(Some(at))
    }

    /// The position a replica must have replayed to answer a read of `scope`; `None`
    /// without replicas.
    pub fn known(&self, scope: Scope) -> Option<Lsn> {
        Some(self.replicas.as_ref()?.needed(&[scope]))
    }

    /// The primary's WAL insert position now.
    pub(super) async fn wal_position(&self) -> Result<Lsn, DbError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT pg_current_wal_insert_lsn()")
            .await?;
        let row = client.query_one(&stmt, &[]).await?;
        Ok(Lsn(u64::from(
            row.get::<_, tokio_postgres::types::PgLsn>(0),
        )))
    }

    /// Another instance's write to `scope`, at `at`, heard of.
    pub fn heard(&self, scope: Scope, at: Lsn) {
        if let Some(replicas) = &self.replicas {
            replicas.learn(scope, at);
        }
    }

    /// This store with every read routed as a read of `scope` would be now, needing also
    /// `at_least` (a position Redis keeps beside the fence): a fill takes its route before
    /// it loads, so that what it installs is known to include those writes.
    pub fn pinned(&self, scope: Scope, at_least: Lsn) -> Db {
        let Some(replicas) = &self.replicas else {
            return self.clone();
        };
        let needed = replicas.needed(&[scope]).max(at_least);
        let mut db = self.clone();
        // A route to the primary is left open (the read asks a replica itself first),
        // unless nothing can be known (Redis did not say): then the primary, unasked.
        db.pin = match replicas.route(needed) {
            Route::Primary if needed != Lsn(u64::MAX) => None,
            route => Some(route),
        };
        db.floor = at_least;
        db
    }

    /// This store with every read sent to the primary (the auditor compares the cache
    /// with what Postgres holds now, not with what a replica replayed).
    pub fn primary(&self) -> Db {
        let mut db = self.clone();
        db.pin = Some(Route::Primary);
        db
    }

    /// The replicas' health and the primary's share of reads; `None` without replicas.
    pub fn replica_health(&self) -> Option<(u64, Vec<ReplicaHealth>)> {
        let replicas = self.replicas.as_ref()?;
        Some((replicas.primary_reads(), replicas.health()))
    }

    /// Reads each replica's replayed position every [`replicas::POLL`], until the process
    /// ends; returns at once without replicas.
    pub async fn watch_replicas(self) {
        let Some(replicas) = self.replicas.clone() else {
            return;
        };
        let mut tick = tokio::time::interval(replicas::POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sampled = std::time::Instant::now() - replicas::PRIMARY_SAMPLE;
        loop {
            tick.tick().await;
            if sampled.elapsed() >= replicas::PRIMARY_SAMPLE {
                sampled = std::time::Instant::now();
                match self.wal_position().await {
                    Ok(at) => replicas.note(at),
                    Err(error) => tracing::debug!(%error, "cannot sample the primary's position"),
                }
            }
            replicas.poll(self.read_wait).await;
        }
    }

    /// Calls `flush` whenever a new connection finds the primary on a new timeline (a
    /// standby was promoted): what the cache holds may be newer than the new primary
    /// (writes asynchronous replication lost) or miss its outbox.
    pub fn on_failover(&self, flush: impl Fn() + Send + Sync + 'static) {
        self.failover.on_change(Box::new(flush));
    }

    /// Failovers this process saw.
    pub fn failovers(&self) -> u64 {
        self.failover.count()
    }
}
