//! Read replicas (API.md promise 8): streaming standbys that answer reads only where they
//! have replayed every write this instance knows of.
//!
//! - **What a read needs.** [`Positions`] keeps, per scope, the WAL position of the newest
//!   write this instance made or heard of. A read of a scope goes to a replica whose
//!   replayed position is at or past it, in turn; when none is, the primary answers.
//! - **Watching.** [`Db::watch_replicas`] reads each replica's `pg_last_wal_replay_lsn()`
//!   every [`POLL`], and the primary's position every [`PRIMARY_SAMPLE`]. A replica's lag
//!   is how long it has been behind a position the primary had (sampled, or a write this
//!   instance knows of). A replica that lags past the bound
//!   (`--database-replica-max-lag-ms`) or does not answer leaves the rotation, and comes
//!   back by itself once it answers and has caught up. So a read from a replica misses
//!   no write older than the bound plus [`PRIMARY_SAMPLE`] plus [`POLL`], even one this
//!   instance never heard of: with the default bound, inside promise 3's second.
//! - **Fills.** A fill takes its route before it loads ([`Db::pinned`]), with the
//!   position Redis keeps beside the fence (`crate::redis`'s positions) as well as this
//!   instance's: so a write another instance acknowledged and told Redis of is never
//!   missing from what the fill installs.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tracing::{info, warn};

use super::error::causes;
use super::positions::Positions;
use super::{DatabaseUrl, DbError};
use crate::domain::{Lsn, Scope};

/// How often each replica's replayed position is read.
pub const POLL: Duration = Duration::from_millis(50);
/// How often the primary's position is sampled: one small transaction on the primary
/// each time (4 a second), the cost of bounding how old a replica read can be.
pub const PRIMARY_SAMPLE: Duration = Duration::from_millis(250);
/// How long known positions of the primary are kept to measure lag by (the newest is always kept).
const WRITES_KEPT: Duration = Duration::from_secs(10);

/// Where a read goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Primary,
    /// A replica, by its place in the list.
    Replica(usize),
}

/// One replica.
pub struct Replica {
    /// `host:port`, as metrics and the admin view name it (never the password).
    pub name: String,
    pub(super) pool: Pool,
    replay: AtomicU64,
    lag_ms: AtomicU64,
    up: AtomicBool,
    reads: AtomicU64,
    error: Mutex<Option<String>>,
}

/// A replica as `/metrics` and `/v1/admin/cache` show it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ReplicaHealth {
    pub replica: String,
    /// In the rotation: it answers, within the lag bound.
    pub up: bool,
    pub lag_ms: u64,
    /// Its replayed position, as Postgres prints it.
    pub replay_lsn: String,
    /// Reads it answered.
    pub reads: u64,
    /// Why it is out of the rotation, with the server's own message.
    pub error: Option<String>,
}

pub struct Replicas {
    nodes: Vec<Replica>,
    known: Positions,
    /// Positions of the primary (writes known here, samples) and when they were learned,
    /// oldest first: what lag is measured against.
    writes: Mutex<VecDeque<(Instant, Lsn)>>,
    max_lag: Duration,
    primary_reads: AtomicU64,
    next: AtomicUsize,
}

/// `host:port` of a URL's first host.
pub fn node_name(url: &DatabaseUrl) -> String {
    let host = match url.0.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = url.0.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

impl Replicas {
    pub(super) fn new(pools: Vec<(String, Pool)>, max_lag: Duration) -> Replicas {
        let nodes = pools
            .into_iter()
            .map(|(name, pool)| Replica {
                name,
                pool,
                replay: AtomicU64::new(0),
                lag_ms: AtomicU64::new(0),
                // Out until its first poll says where it is.
                up: AtomicBool::new(false),
                reads: AtomicU64::new(0),
                error: Mutex::new(Some("not polled yet".to_owned())),
            })
            .collect();
        Replicas {
            nodes,
            known: Positions::default(),
            writes: Mutex::new(VecDeque::new()),
            max_lag,
            primary_reads: AtomicU64::new(0),
            next: AtomicUsize::new(0),
        }
    }

    fn writes(&self) -> std::sync::MutexGuard<'_, VecDeque<(Instant, Lsn)>> {
        self.writes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A write to `scope` is at `at`: made here, or heard of from another instance.
    pub fn learn(&self, scope: Scope, at: Lsn) {
        self.known.learn(scope, at);
        self.note(at);
    }

    /// The primary was at `at` now (a write known here, or a sample of the primary's
    /// position): a replica that has not replayed it lags from now on.
    pub(super) fn note(&self, at: Lsn) {
        let now = Instant::now();
        let mut writes = self.writes();
        match writes.back_mut() {
            Some((_, newest)) if *newest >= at => {}
            // Within a millisecond of the last: raise it (overstates lag by that much).
            Some((when, newest)) if now.duration_since(*when) < Duration::from_millis(1) => {
                *newest = at;
            }
            _ => writes.push_back((now, at)),
        }
        while writes.len() > 1 && now.duration_since(writes[0].0) > WRITES_KEPT {
            writes.pop_front();
        }
    }

    /// The position a replica must have replayed to answer a read of all of `scopes`.
    pub fn needed(&self, scopes: &[Scope]) -> Lsn {
        scopes
            .iter()
            .map(|&s| self.known.needed(s))
            .max()
            .unwrap_or_default()
    }

    /// The next replica in turn that is up and has replayed `needed`, else the primary.
    pub fn route(&self, needed: Lsn) -> Route {
        let n = self.nodes.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| {
                let node = &self.nodes[i];
                node.up.load(Ordering::Relaxed)
                    && Lsn(node.replay.load(Ordering::Relaxed)) >= needed
            })
            .map_or(Route::Primary, Route::Replica)
    }

    /// A connection of the replica `route` names, counted as its read; `None` for the
    /// primary, or when the replica has no connection to give (it then leaves the
    /// rotation until its next poll).
    pub(super) async fn client(&self, route: Route) -> Option<deadpool_postgres::Object> {
        let Route::Replica(i) = route else {
            self.primary_reads.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let node = &self.nodes[i];
        match node.pool.get().await {
            Ok(client) => {
                node.reads.fetch_add(1, Ordering::Relaxed);
                Some(client)
            }
            Err(e) => {
                node.out(format!("no connection: {}", causes(&e)));
                self.primary_reads.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// When no replica is known to have replayed `needed` (its position is polled every
    /// [`POLL`], and a write read back at once is newer than the last poll): asks the next
    /// replica in the rotation itself, on the connection the read will use, and hands
    /// that connection out if it has (counted as its read). One round trip on a replica
    /// instead of a read on the primary.
    pub(super) async fn fresh(&self, needed: Lsn) -> Option<deadpool_postgres::Object> {
        let n = self.nodes.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let i = (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| self.nodes[i].up.load(Ordering::Relaxed))?;
        let node = &self.nodes[i];
        let client = node.pool.get().await.ok()?;
        let stmt = client
            .prepare_cached("SELECT pg_last_wal_replay_lsn()")
            .await
            .ok()?;
        let row = client.query_one(&stmt, &[]).await.ok()?;
        let replay = Lsn(u64::from(
            row.get::<_, Option<tokio_postgres::types::PgLsn>>(0)?,
        ));
        node.replay.fetch_max(replay.0, Ordering::Relaxed);
        (replay >= needed).then(|| {
            node.reads.fetch_add(1, Ordering::Relaxed);
            client
        })
    }

    /// How long a replica that replayed `replay` has been behind a known position of the primary.
    fn lag(&self, replay: Lsn, now: Instant) -> Duration {
        self.writes()
            .iter()
            .find(|(_, at)| *at > replay)
            .map_or(Duration::ZERO, |(when, _)| now.duration_since(*when))
    }

    /// One poll of every replica.
    pub(super) async fn poll(&self, timeout: Duration) {
        let polls = self.nodes.iter().map(|node| async move {
            let answer = tokio::time::timeout(timeout, async {
                let client = node.pool.get().await?;
                let row = client
                    .query_one("SELECT pg_last_wal_replay_lsn()", &[])
                    .await?;
                Ok::<_, DbError>(row.get::<_, Option<tokio_postgres::types::PgLsn>>(0))
            })
            .await;
            match answer {
                Ok(Ok(Some(lsn))) => {
                    let replay = Lsn(u64::from(lsn));
                    node.replay.store(replay.0, Ordering::Relaxed);
                    let lag = self.lag(replay, Instant::now());
                    node.lag_ms.store(lag.as_millis() as u64, Ordering::Relaxed);
                    if lag > self.max_lag {
                        node.out(format!(
                            "{} ms behind the primary (the bound is {} ms)",
                            lag.as_millis(),
                            self.max_lag.as_millis()
                        ));
                    } else {
                        node.back();
                    }
                }
                Ok(Ok(None)) => node.out(
                    "not a standby: pg_last_wal_replay_lsn() is NULL (is this the primary?)"
                        .to_owned(),
                ),
                Ok(Err(e)) => node.out(e.to_string()),
                Err(_) => node.out(format!("no answer within {timeout:?}")),
            }
        });
        futures::future::join_all(polls).await;
    }

    pub fn health(&self) -> Vec<ReplicaHealth> {
        self.nodes
            .iter()
            .map(|node| ReplicaHealth {
                replica: node.name.clone(),
                up: node.up.load(Ordering::Relaxed),
                lag_ms: node.lag_ms.load(Ordering::Relaxed),
                replay_lsn: Lsn(node.replay.load(Ordering::Relaxed)).to_string(),
                reads: node.reads.load(Ordering::Relaxed),
                error: node.error().clone(),
            })
            .collect()
    }

    /// Reads the primary answered while replicas are set.
    pub fn primary_reads(&self) -> u64 {
        self.primary_reads.load(Ordering::Relaxed)
    }

    pub(super) fn close(&self) {
        for node in &self.nodes {
            node.pool.close();
        }
    }
}

impl Replica {
    fn error(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.error.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Out of the rotation, for `why`; logged when it was in.
    fn out(&self, why: String) {
        if self.up.swap(false, Ordering::Relaxed) {
            warn!(replica = %self.name, error = %why, "a Postgres replica left the read rotation");
        }
        *self.error() = Some(why);
    }

    /// Back in the rotation; logged when it was out.
    fn back(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            info!(replica = %self.name, "a Postgres replica is in the read rotation");
        }
        *self.error() = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_how_long_a_replica_has_been_behind_a_position_of_the_primary() {
        let replicas = Replicas::new(Vec::new(), Duration::from_secs(1));
        let scope = Scope::Everything;
        replicas.learn(scope, Lsn(100));
        let later = Instant::now() + Duration::from_millis(300);
        assert_eq!(replicas.lag(Lsn(100), later), Duration::ZERO, "caught up");
        let lag = replicas.lag(Lsn(99), later);
        assert!(lag >= Duration::from_millis(300), "{lag:?}");
        assert_eq!(
            replicas.route(Lsn(0)),
            Route::Primary,
            "no replica: the primary"
        );
    }
}
