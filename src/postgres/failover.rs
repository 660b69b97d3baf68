//! Noticing that the primary failed over (API.md, a multi-host URL with
//! `target_session_attrs=read-write`): tokio-postgres connects to whichever host is the
//! primary now, and deadpool drops connections the old primary closed. What it cannot
//! tell is that the new primary's history forked from the old one's: with asynchronous
//! replication it may lack writes the cache holds, and its `cache_outbox` (UNLOGGED) is
//! empty. A promotion starts a new timeline, so every new connection reads the primary's
//! timeline before it is used; when it differs from the one seen before, the cache is
//! told to drop everything, before that connection runs a statement.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use deadpool_postgres::{ClientWrapper, HookError};
use tracing::warn;

/// Called on a failover (the cache marks everything dirty).
pub type OnChange = Box<dyn Fn() + Send + Sync>;

#[derive(Default)]
pub struct Failover {
    /// The timeline last seen; 0 before the first connection.
    timeline: AtomicU32,
    changes: AtomicU64,
    on_change: OnceLock<OnChange>,
}

impl Failover {
    pub fn on_change(&self, f: OnChange) {
        let _ = self.on_change.set(f);
    }

    pub fn count(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// A connection found the primary on `timeline`.
    fn seen(&self, timeline: u32) {
        let before = self.timeline.swap(timeline, Ordering::SeqCst);
        if before != 0 && before != timeline {
            self.changes.fetch_add(1, Ordering::Relaxed);
            warn!(
                before,
                now = timeline,
                "the Postgres primary is on a new timeline (a failover): the cache drops everything"
            );
            if let Some(f) = self.on_change.get() {
                f();
            }
        }
    }
}

/// The timeline of a WAL file name: its first eight hex digits.
fn timeline_of(wal_file: &str) -> Option<u32> {
    u32::from_str_radix(wal_file.get(..8)?, 16).ok()
}

/// The pool hook that reads each new connection's timeline. A server in recovery (a URL
/// naming a standby) has no insert position; it is left alone, and its writes fail as
/// Postgres says.
pub fn hook(failover: Arc<Failover>) -> deadpool_postgres::Hook {
    deadpool_postgres::Hook::async_fn(move |client: &mut ClientWrapper, _| {
        let failover = failover.clone();
        Box::pin(async move {
            let row = client
                .query_one(
                    "SELECT CASE WHEN pg_is_in_recovery() THEN NULL \
                     ELSE pg_walfile_name(pg_current_wal_insert_lsn()) END",
                    &[],
                )
                .await
                .map_err(HookError::Backend)?;
            if let Some(timeline) = row
                .get::<_, Option<String>>(0)
                .as_deref()
                .and_then(timeline_of)
            {
                failover.seen(timeline);
            }
            Ok(())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn a_new_timeline_calls_back_once_and_the_first_is_no_failover() {
        assert_eq!(timeline_of("000000020000000000000003"), Some(2));
        assert_eq!(timeline_of("xx"), None);
        let calls = Arc::new(AtomicUsize::new(0));
        let failover = Failover::default();
        let seen = calls.clone();
        failover.on_change(Box::new(move || {
            seen.fetch_add(1, Ordering::Relaxed);
        }));
        failover.seen(1);
        failover.seen(1);
        assert_eq!(calls.load(Ordering::Relaxed), 0);
        failover.seen(2);
        failover.seen(2);
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        assert_eq!(failover.count(), 1);
    }
}
