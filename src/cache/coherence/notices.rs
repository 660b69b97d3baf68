//! The second invalidation path, for writes that could not reach Redis (promise 3 under
//! an asymmetric partition: the writer is cut off from Redis, the readers are not).
//!
//! A write whose Redis step or pub/sub publish failed marks what it changed (its channel,
//! the feeds it touched, an event's body: a [`Scope`]) dirty here, and also *announces*
//! it through Postgres ([`crate::postgres::CacheNotice`]). Every other instance hears the
//! notice on a listening connection of its own and treats the scope exactly as if it had
//! written it during an outage: it leaves L1, skips the tiers, and the repair task drops
//! it from Redis (fencing in-flight fills) and tells the instances on pub/sub. So no instance that reaches Redis serves the old entry
//! once the notice arrived, which takes milliseconds.
//!
//! Only failed writes pay: one more Postgres statement each. A listener that loses its
//! connection reconnects and reads back what was recorded meanwhile, dated by the server's
//! clock, so a notice is never missed for good; at startup it reads back the whole
//! retention, since a stale entry may have been left while this instance was down.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::invalidation::{Invalidation, Invalidations};
use super::Coherence;
use crate::cache::health::MAX_DIRTY_CHANNELS;
use crate::cache::stats::bump;
use crate::cache::tiers::Tiers;
use crate::domain::Scope;
use crate::postgres::{CacheNotice, Heard, NoticeListener};

/// How often the listener proves its connection alive (and dates the proof).
const LISTENER_HEARTBEAT: Duration = Duration::from_millis(500);
/// A proof of life not answered within this means a dead connection: reconnect.
const LISTENER_TIMEOUT: Duration = Duration::from_secs(1);
/// How long notices are kept, for listeners that catch up. A listener disconnected for
/// longer treats every channel as announced.
pub const NOTICE_RETENTION: Duration = Duration::from_secs(3600);
/// Catching up starts this long before the last proof of life: a notice is dated when its
/// row is inserted, a moment before it commits and is delivered.
const CATCH_UP_MARGIN: Duration = Duration::from_secs(5);
/// How often each listener deletes notices older than the retention.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

fn ago(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t - chrono::Duration::from_std(d).expect("a constant duration fits")
}

/// The Postgres side of coherence: announcements of writes that Redis missed, and the
/// listener that hears other instances' announcements.
pub struct Notices {
    tiers: Arc<Tiers>,
    /// This instance's name in the notices it sends.
    instance: Arc<str>,
    /// Whether the listener is connected.
    connected: AtomicBool,
    /// Notices heard and not yet applied.
    backlog: AtomicUsize,
}

impl Notices {
    pub(super) fn new(tiers: Arc<Tiers>, instance: Arc<str>) -> Notices {
        Notices {
            tiers,
            instance,
            connected: AtomicBool::new(false),
            backlog: AtomicUsize::new(0),
        }
    }

    /// Notices heard and not yet applied.
    pub fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Relaxed)
    }

    /// After a write that Redis missed: marks what it changed dirty here (reads of it
    /// skip the tiers until the repair task dropped it from Redis), then tells the other
    /// instances through Postgres, so they do the same. Past [`MAX_DIRTY_CHANNELS`]
    /// scopes, everything. Returns whether the announcement was recorded.
    pub(in crate::cache) async fn missed_redis(&self, scopes: &[Scope]) -> bool {
        let everything = [Scope::Everything];
        let scopes = if scopes.len() > MAX_DIRTY_CHANNELS {
            &everything[..]
        } else {
            scopes
        };
        for &scope in scopes {
            self.tiers.dirty.mark(scope);
        }
        let notices: Vec<CacheNotice> = scopes
            .iter()
            .map(|&scope| CacheNotice {
                origin: self.instance.to_string(),
                scope,
            })
            .collect();
        let started = Instant::now();
        let announced = self.tiers.db.announce(&notices).await;
        self.tiers
            .observer
            .postgres_call("announce", started.elapsed());
        match announced {
            Ok(()) => {
                bump(&self.tiers.stats.notices_sent);
                true
            }
            Err(error) => {
                warn!(
                %error,
                cause = error_source(&error),
                scopes = scopes.len(),
                first = scopes.first().map(Scope::encode),
                "could not announce a write that Redis missed: other instances may serve \
                 the old entry until this one reaches Redis"
                );
                false
            }
        }
    }

    /// Applies a notice of another instance: the scope skips the tiers here (dirty) until
    /// the repair task dropped it from Redis, and leaves L1. Dirty first, so a read that
    /// finds L1 empty cannot refill it from the old Redis entry.
    fn hear(&self, notice: &CacheNotice, invalidations: &Invalidations) {
        if *notice.origin == *self.instance {
            return;
        }
        bump(&self.tiers.stats.notices_received);
        self.tiers.dirty.mark(notice.scope);
        invalidations.apply(Invalidation::covering(notice.scope));
    }

    /// Hears every notice recorded since `since`, each channel once.
    async fn catch_up(
        &self,
        listener: &NoticeListener,
        since: DateTime<Utc>,
        invalidations: &Invalidations,
    ) -> Result<(), crate::postgres::DbError> {
        let notices = listener.notices_since(since).await?;
        let mut seen = BTreeSet::new();
        for notice in notices {
            if seen.insert((notice.scope, notice.origin.clone())) {
                self.hear(&notice, invalidations);
            }
        }
        Ok(())
    }

    /// Whether the listener is connected.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }
}

/// The cause chain of an error, for logs (the server's own message is in it).
fn error_source(error: &dyn std::error::Error) -> String {
    let mut text = String::new();
    let mut cause = error.source();
    while let Some(c) = cause {
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Listens for other instances' notices for as long as the process runs, reconnecting
/// (and catching up) whenever the connection fails.
pub async fn listen(coherence: Arc<Coherence>) {
    let cache = &coherence.notices;
    let invalidations = &coherence.invalidations;
    // The server time of the last proof that the connection was alive; `None` before the
    // first connection, when the whole retention is read back.
    let mut alive_at: Option<DateTime<Utc>> = None;
    let mut warned = false;
    loop {
        let listener = match cache.tiers.db.listen_notices().await {
            Ok(listener) => listener,
            Err(error) => {
                if !warned {
                    warn!(%error, cause = error_source(&error),
                          "cannot listen for cache notices; retrying");
                    warned = true;
                }
                tokio::time::sleep(LISTENER_HEARTBEAT).await;
                continue;
            }
        };
        match serve(cache, invalidations, listener, &mut alive_at).await {
            Ok(()) => warn!("the cache notice listener's connection ended; reconnecting"),
            Err(error) => {
                warn!(%error, cause = error_source(&error),
                      "the cache notice listener failed; reconnecting")
            }
        }
        cache.connected.store(false, Ordering::Release);
        warned = false;
        tokio::time::sleep(LISTENER_HEARTBEAT).await;
    }
}

/// One connection's life: catch up, then hear notices and prove the connection alive.
async fn serve(
    cache: &Notices,
    invalidations: &Invalidations,
    mut listener: NoticeListener,
    alive_at: &mut Option<DateTime<Utc>>,
) -> Result<(), crate::postgres::DbError> {
    // LISTEN is already in force, so nothing committed from here on is missed.
    let now = listener.server_time().await?;
    let since = match *alive_at {
        Some(t) if now - t > chrono::Duration::from_std(NOTICE_RETENTION).unwrap() => {
            warn!("the notice listener was away longer than notices are kept: dropping every cached channel");
            let everything = CacheNotice {
                origin: String::new(),
                scope: Scope::Everything,
            };
            cache.hear(&everything, invalidations);
            now
        }
        Some(t) => ago(t, CATCH_UP_MARGIN),
        None => ago(now, NOTICE_RETENTION),
    };
    cache.catch_up(&listener, since, invalidations).await?;
    *alive_at = Some(now);
    cache.connected.store(true, Ordering::Release);
    info!("listening for cache notices");
    let mut ticker = tokio::time::interval(LISTENER_HEARTBEAT);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pruned = Instant::now() - PRUNE_INTERVAL;
    loop {
        cache.backlog.store(listener.backlog(), Ordering::Relaxed);
        tokio::select! {
            heard = listener.next() => match heard {
                None => return Ok(()),
                Some(Heard::Notice(notice)) => cache.hear(&notice, invalidations),
                Some(Heard::Lost) => {
                    warn!("cache notices overflowed the buffer: catching up from the log");
                    let since = ago(alive_at.unwrap_or(now), CATCH_UP_MARGIN);
                    cache.catch_up(&listener, since, invalidations).await?;
                }
            },
            _ = ticker.tick() => {
                let Ok(time) = tokio::time::timeout(LISTENER_TIMEOUT, listener.server_time()).await else {
                    warn!("the cache notice listener's connection does not answer; reconnecting");
                    return Ok(());
                };
                let time = time?;
                *alive_at = Some(time);
                if pruned.elapsed() >= PRUNE_INTERVAL {
                    pruned = Instant::now();
                    listener.prune(ago(time, NOTICE_RETENTION)).await?;
                }
            }
        }
    }
}
