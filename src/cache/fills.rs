//! Fills: the engine's fill of one source (where it reads Postgres, with read replicas;
//! the load; the fenced install), admission, and the queue of fills off the request path.
//!
//! A window or member set that both tiers miss is filled on the request path by the load
//! its readers share ([`super::tiers`]), and the fill answers them. Deep history and feeds
//! answer a miss from Postgres at once, with the read's own query, and queue their fill
//! here. A worker reads Postgres and installs through the fence exactly as a fill on the
//! request path does: the version was taken by the read's Redis miss, before the worker's
//! Postgres read, so a write in between still refuses it.
//!
//! - **Admission.** A channel's first miss only remembers it; a later miss while it is
//!   remembered queues the fill (a doorkeeper, as in TinyLFU): a channel read once is not
//!   worth a whole window. `--fill-after-misses` sets how many misses (1 = every miss).
//! - **Bounds.** At most [`QUEUE`] fills wait and [`WORKERS`] run; a full queue drops the
//!   fill (the next miss asks again). A key waits or runs at most once.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::sync::mpsc;
use tracing::debug;

use super::history::HistorySource;
use super::l1::Loaded;
use super::sources::{FeedSource, MembersSource, WindowSource};
use super::stats::bump;
use super::tiers::RedisRead;
use super::tiers::{Source, Tiers};
use super::HotCache;
use crate::domain::PageRequest;
use crate::domain::{ChannelId, Lsn, Scope, UserId};
use crate::postgres::{Db, DbError};

/// Fills waiting for a worker.
pub const QUEUE: usize = 1024;
/// Fills running at once.
pub const WORKERS: usize = 4;
/// Slots of the doorkeeper: channels remembered by their last miss.
const DOORKEEPER_SLOTS: usize = 1 << (64 - 50);

/// What of a channel a fill loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum What {
    Window,
    Members,
    /// A run of deep history starting at the cursor of a page it must answer
    /// ([`super::history`]).
    History(PageRequest),
}

impl What {
    /// What is admitted and queued apart: a channel's history is one kind whatever the
    /// cursor (a pager's cursors differ on every page), with one fill at a time.
    pub(super) fn kind(self) -> u8 {
        match self {
            What::Window => 0,
            What::Members => 1,
            What::History(_) => 2,
        }
    }
}

/// The kind number of a user's hot feed, beside [`What::kind`]'s.
const FEED_KIND: u8 = 3;

/// The key of one fill: what it loads, and whose (a channel's or a user's), typed so
/// that a user's id is never taken for a channel's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FillKey {
    Channel(ChannelId, What),
    /// A user's hot feed ([`super::feeds`]).
    Feed(UserId),
}

/// A fill's place in the queue: at most one fill waits or runs per slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Slot {
    Channel(ChannelId, u8),
    Feed(UserId),
}

impl FillKey {
    fn slot(self) -> Slot {
        match self {
            FillKey::Channel(c, what) => Slot::Channel(c, what.kind()),
            FillKey::Feed(u) => Slot::Feed(u),
        }
    }

    /// The hash of the slot (the doorkeeper's and the presence table's).
    pub(super) fn hash(self) -> u64 {
        match self {
            FillKey::Channel(c, what) => super::presence::key_hash(c.0, what.kind()),
            FillKey::Feed(u) => super::presence::key_hash(u.0, FEED_KIND),
        }
    }
}

/// What became of a fill asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queued {
    Yes,
    /// Already waiting or running.
    No,
    /// The queue was full ([`QUEUE`]).
    Dropped,
}

/// One queued fill: the version the read's Redis miss handed out, or `None` when the
/// read did not ask Redis ([`super::presence`]): the fill then looks first.
struct Job {
    key: FillKey,
    version: Option<String>,
}

pub struct Fills {
    after_misses: u32,
    tx: mpsc::Sender<Job>,
    rx: Mutex<Option<mpsc::Receiver<Job>>>,
    queued: Mutex<HashSet<Slot>>,
    /// Per slot, a channel's hash and its misses so far (low 8 bits); overwritten by the
    /// next channel that lands there.
    doorkeeper: Box<[AtomicU64]>,
}

impl Fills {
    /// `after_misses`: the miss that queues a fill (1: the first).
    pub fn new(after_misses: u32) -> Fills {
        let (tx, rx) = mpsc::channel(QUEUE);
        Fills {
            after_misses: after_misses.max(1),
            tx,
            rx: Mutex::new(Some(rx)),
            queued: Mutex::new(HashSet::new()),
            doorkeeper: (0..DOORKEEPER_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Counts a miss; true when it is the one that should fill.
    pub(super) fn admit(&self, key: FillKey) -> bool {
        if self.after_misses == 1 {
            return true;
        }
        let hash = key.hash() & !0xff;
        let slot = &self.doorkeeper[(hash >> 50) as usize];
        let seen = slot.load(Ordering::Relaxed);
        let misses = if seen & !0xff == hash {
            (seen & 0xff) + 1
        } else {
            1
        };
        if misses >= u64::from(self.after_misses) {
            slot.store(0, Ordering::Relaxed);
            true
        } else {
            slot.store(hash | misses, Ordering::Relaxed);
            false
        }
    }

    /// Queues the fill of `key`, admitted ([`Fills::admit`]), unless it already waits
    /// or runs.
    pub(super) fn queue(&self, key: FillKey, version: Option<String>) -> Queued {
        let slot = key.slot();
        if !self.queued().insert(slot) {
            return Queued::No;
        }
        let job = Job { key, version };
        if self.tx.try_send(job).is_err() {
            self.queued().remove(&slot);
            return Queued::Dropped;
        }
        Queued::Yes
    }

    fn queued(&self) -> std::sync::MutexGuard<'_, HashSet<Slot>> {
        self.queued.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fills waiting or running.
    pub fn pending(&self) -> usize {
        self.queued().len()
    }
}

/// Runs one fill through the engine: the probe first when the read that queued it did
/// not ask Redis, then Postgres and the fenced install.
async fn run_fill(tiers: &Tiers, job: &Job) -> Result<(), DbError> {
    let installed = match job.key {
        FillKey::Feed(user) => {
            let source = FeedSource { user };
            fill(tiers, &source, &source, job).await?
        }
        FillKey::Channel(channel, What::Window) => {
            let window = |head| WindowSource { channel, head };
            // The probe asks for the newest message only: it wants to know whether Redis
            // holds the window, not the window.
            fill(tiers, &window(None), &window(Some(1)), job).await?
        }
        FillKey::Channel(channel, What::Members) => {
            let source = MembersSource { channel };
            fill(tiers, &source, &source, job).await?
        }
        FillKey::Channel(channel, What::History(page)) => {
            let source = HistorySource { channel, page };
            let installed = fill(tiers, &source, &source, job).await?;
            if installed == Some(true) {
                bump(&tiers.stats.history_fills);
            }
            installed
        }
    };
    match installed {
        Some(true) => bump(&tiers.stats.fills),
        // A write came in after the version was taken: what we read may be older.
        Some(false) => bump(&tiers.stats.fills_refused),
        // Nothing to install, or Redis failed (counted by the breaker).
        None => {}
    }
    Ok(())
}

/// The fill of one source, with the job's version or, when the read did not ask Redis,
/// the version that reading `probe` (the same key, maybe less of it) finds: none when
/// Redis holds it already.
async fn fill<S: Source, P: Source>(
    tiers: &Tiers,
    source: &S,
    probe: &P,
    job: &Job,
) -> Result<Option<bool>, DbError> {
    let version = match &job.version {
        Some(version) => version.clone(),
        None => match tiers.probe(probe).await {
            Some(version) => version,
            None => return Ok(None),
        },
    };
    tiers.fill(source, &version).await
}

/// Runs queued fills, [`WORKERS`] at a time, until the cache is dropped.
pub async fn work(cache: Arc<HotCache>) {
    let Some(rx) = cache
        .tiers
        .fills
        .rx
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    else {
        return;
    };
    tokio_stream_of(rx)
        .for_each_concurrent(WORKERS, |job| {
            let cache = cache.clone();
            async move {
                if let Err(error) = run_fill(&cache.tiers, &job).await {
                    debug!(%error, key = ?job.key, "a background fill failed");
                }
                cache.tiers.fills.queued().remove(&job.key.slot());
            }
        })
        .await;
}

fn tokio_stream_of<T>(mut rx: mpsc::Receiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The engine's side of a fill: where it reads, the load, the fenced install.
impl Tiers {
    /// A fill's Postgres load and fenced install (marked present when the fence let it
    /// in): `None` when there was nothing to install or Redis failed, else whether it
    /// was installed, with the row.
    pub(super) async fn load_and_install<S: Source>(
        &self,
        source: &S,
        version: &str,
    ) -> Result<Option<(bool, S::Row)>, DbError> {
        let [_, load, install] = source.operations();
        let pinned;
        let db = match self.db.has_replicas() {
            true => {
                pinned = self.fill_route(source.scope()).await;
                &pinned
            }
            false => &self.db,
        };
        let Some(row) = self.pg_call(load, source.load(db, &self.settings)).await? else {
            return Ok(None);
        };
        if let Some(hook) = source.hook(&self.hooks) {
            hook.await;
        }
        let call = source.install(&self.redis, version, &row, &self.settings);
        let installed = self.redis_call(source.scope(), install, call).await;
        if installed == Some(true) && source.marks_presence() {
            self.presence.seen(source.fill_key());
        }
        Ok(installed.map(|installed| (installed, row)))
    }

    /// With read replicas, the store a fill of `scope` loads from: a replica that has
    /// replayed both the writes this instance knows of and the position Redis keeps
    /// beside the fence (read after the fence version was), else the primary. When Redis
    /// cannot say, the primary.
    async fn fill_route(&self, scope: Scope) -> Db {
        let known = self
            .redis_call(scope, "read_position", self.redis.position(scope))
            .await;
        let at_least = match known {
            Some(at) => at.unwrap_or_default(),
            None => Lsn(u64::MAX),
        };
        self.db.pinned(scope, at_least)
    }

    /// A read that does not ask Redis, because Redis likely lacks the key: Postgres
    /// answers, and the miss counts towards a fill that looks in Redis first.
    pub(super) fn skip_redis(&self, fill: FillKey) -> Loaded {
        bump(&self.stats.redis_skipped);
        self.queue_fill(fill, None);
        Loaded::Missed
    }

    /// A queued fill's first look in Redis, for a read that did not ask: `None` when
    /// Redis holds the key (now marked) or failed, else the version a fill must present.
    pub(super) async fn probe<S: Source>(&self, source: &S) -> Option<String> {
        let [read, _, _] = source.operations();
        match self
            .redis_call(source.scope(), read, source.read(&self.redis))
            .await?
        {
            RedisRead::Hit(_) => {
                self.presence.seen(source.fill_key());
                None
            }
            RedisRead::Miss(version) => Some(version),
        }
    }

    /// A fill of `source`: Postgres, then the fenced install, and into L1 as well (the
    /// next read is a hit, not a Redis read) unless an invalidation of the key, a flush
    /// or a bypass came after the load began ([`L1::install_with`]). `None` when there
    /// was nothing to install or Redis failed; else whether the fence let it in (then
    /// marked present).
    pub(super) async fn fill<S: Source>(
        &self,
        source: &S,
        version: &str,
    ) -> Result<Option<bool>, DbError> {
        let ticket = self.l1.is_enabled().then(|| self.l1.ticket(source.key()));
        let Some((installed, row)) = self.load_and_install(source, version).await? else {
            return Ok(None);
        };
        if let (true, Some(ticket), Some(entry)) = (installed, ticket, source.entry(row)) {
            self.l1.install_with(source.key(), ticket, entry);
        }
        Ok(Some(installed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_miss_of_a_channel_is_admitted() {
        let fills = Fills::new(2);
        let a = ChannelId(uuid::Uuid::new_v4());
        let b = ChannelId(uuid::Uuid::new_v4());
        let window = |c| FillKey::Channel(c, What::Window);
        assert!(!fills.admit(window(a)));
        assert!(
            !fills.admit(FillKey::Channel(a, What::Members)),
            "members are counted apart"
        );
        assert!(fills.admit(window(a)));
        assert!(!fills.admit(window(a)), "admitting forgets the channel");
        assert!(!fills.admit(window(b)));
        assert!(Fills::new(1).admit(window(b)));
    }

    #[test]
    fn a_users_feed_and_a_channel_with_the_same_id_are_different_fills() {
        let id = uuid::Uuid::new_v4();
        let (feed, window) = (
            FillKey::Feed(UserId(id)),
            FillKey::Channel(ChannelId(id), What::Window),
        );
        assert_ne!(feed.slot(), window.slot());
        assert_ne!(feed.hash(), window.hash());
        let fills = Fills::new(2);
        assert!(!fills.admit(feed));
        assert!(!fills.admit(window), "the feed's miss is not the channel's");
        assert!(fills.admit(feed));
    }
}
