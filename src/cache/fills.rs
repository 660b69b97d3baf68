//! Fills off the request path.
//!
//! A read that misses both tiers is answered by Postgres at once, with its own query (what
//! `--cache off` would do), and queues a fill of the channel's window or member set. A
//! worker reads Postgres and installs through the fence exactly as a fill on the request
//! path did: the version was taken by the read's Redis miss, before the worker's Postgres
//! read, so a write in between still refuses it. No reader waits for a 200-message window
//! it did not ask for; measured (`hotchan bench`, README "Performance"), a fill on the
//! request path took about ten times a Postgres page under load.
//!
//! - **Admission.** A channel's first miss only remembers it; a later miss while it is
//!   remembered queues the fill (a doorkeeper, as in TinyLFU): a channel read once is not
//!   worth a whole window. `--fill-after-misses` sets how many misses (1 = every miss).
//! - **Bounds.** At most [`QUEUE`] fills wait and [`WORKERS`] run; a full queue drops the
//!   fill (the next miss asks again). A key waits or runs at most once.
//! - **The cost gate** ([`super::gate`]) is charged with each fill's running time, and
//!   drops the fills of a kind of read queued before Postgres became its favoured route.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::sync::mpsc;
use tracing::debug;

use super::stats::bump;
use super::HotCache;
use crate::domain::PageRequest;
use crate::domain::{ChannelId, UserId};
use crate::postgres::DbError;
use uuid::Uuid;

/// Fills waiting for a worker.
pub const QUEUE: usize = 1024;
/// Fills running at once.
pub const WORKERS: usize = 4;
/// Slots of the doorkeeper: channels remembered by their last miss.
const DOORKEEPER_SLOTS: usize = 1 << (64 - 50);

/// What a fill loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum What {
    Window,
    Members,
    /// A run of deep history starting at the cursor of a page it must answer
    /// ([`super::history`]).
    History(PageRequest),
    /// A user's hot feed ([`super::feeds`]); the job's owner is the user.
    Feed,
}

impl What {
    /// What is admitted and queued apart: a channel's history is one kind whatever the
    /// cursor (a pager's cursors differ on every page), with one fill at a time.
    pub(super) fn kind(self) -> u8 {
        match self {
            What::Window => 0,
            What::Members => 1,
            What::History(_) => 2,
            What::Feed => 3,
        }
    }
}

/// One queued fill: the version the read's Redis miss handed out, or `None` when the
/// read did not ask Redis ([`super::presence`]): the fill then looks first.
struct Job {
    /// The channel, or for [`What::Feed`] the user.
    owner: Uuid,
    what: What,
    version: Option<String>,
    /// The kind of read that queued it, charged with its cost ([`super::gate`]).
    kind: Option<super::gate::Kind>,
    queued: std::time::Instant,
}

pub struct Fills {
    after_misses: u32,
    tx: mpsc::Sender<Job>,
    rx: Mutex<Option<mpsc::Receiver<Job>>>,
    queued: Mutex<HashSet<(Uuid, u8)>>,
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
    fn admit(&self, owner: Uuid, what: What) -> bool {
        if self.after_misses == 1 {
            return true;
        }
        let hash = super::presence::key_hash(ChannelId(owner), what.kind()) & !0xff;
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

    fn queued(&self) -> std::sync::MutexGuard<'_, HashSet<(Uuid, u8)>> {
        self.queued.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fills waiting or running.
    pub fn pending(&self) -> usize {
        self.queued().len()
    }
}

impl HotCache {
    /// After a miss in both tiers: queues a fill of `what` when admitted. True when queued.
    pub(super) fn queue_fill(
        &self,
        channel: ChannelId,
        what: What,
        version: Option<String>,
    ) -> bool {
        self.queue_job(channel.0, what, version)
    }

    /// After a miss of a user's feed in both tiers: queues its fill when admitted.
    pub(super) fn queue_feed_fill(&self, user: UserId, version: String) -> bool {
        self.queue_job(user.0, What::Feed, Some(version))
    }

    fn queue_job(&self, owner: Uuid, what: What, version: Option<String>) -> bool {
        if !self.fills.admit(owner, what) || !self.fills.queued().insert((owner, what.kind())) {
            return false;
        }
        let job = Job {
            owner,
            what,
            version,
            kind: super::gate::current(),
            queued: std::time::Instant::now(),
        };
        if self.fills.tx.try_send(job).is_err() {
            self.fills.queued().remove(&(owner, what.kind()));
            bump(&self.stats.fills_dropped);
            return false;
        }
        true
    }

    async fn run_fill(&self, job: &Job) -> Result<(), DbError> {
        let channel = ChannelId(job.owner);
        let version = match &job.version {
            Some(version) => version.clone(),
            None => match self.probe(channel, job.what).await {
                Some(version) => version,
                None => return Ok(()),
            },
        };
        let installed = match job.what {
            What::Window => self.fill_window(channel, &version).await?,
            What::Members => self.fill_members(channel, &version).await?,
            What::Feed => self.fill_feed(UserId(job.owner), &version).await?,
            What::History(page) => {
                let installed = self.fill_history(channel, page, &version).await?;
                if installed == Some(true) {
                    bump(&self.stats.history_fills);
                }
                installed
            }
        };
        match installed {
            Some(true) => {
                bump(&self.stats.fills);
                if job.what != What::Feed {
                    self.presence.seen(channel, job.what.kind());
                }
            }
            // A write came in after the version was taken: what we read may be older.
            Some(false) => bump(&self.stats.fills_refused),
            // The channel is gone, or Redis failed (counted by the breaker).
            None => {}
        }
        Ok(())
    }
}

/// Runs queued fills, [`WORKERS`] at a time, until the cache is dropped.
pub async fn work(cache: Arc<HotCache>) {
    let Some(rx) = cache
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
                let started = std::time::Instant::now();
                if job
                    .kind
                    .is_some_and(|kind| !cache.gate.fill_wanted(kind, job.queued))
                {
                    bump(&cache.stats.fills_dropped);
                } else if let Err(error) = cache.run_fill(&job).await {
                    debug!(%error, owner = %job.owner, "a background fill failed");
                }
                if let Some(kind) = job.kind {
                    cache.gate.charge(kind, started.elapsed());
                }
                cache.fills.queued().remove(&(job.owner, job.what.kind()));
            }
        })
        .await;
}

fn tokio_stream_of<T>(mut rx: mpsc::Receiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_miss_of_a_channel_is_admitted() {
        let fills = Fills::new(2);
        let a = ChannelId(uuid::Uuid::new_v4());
        let b = ChannelId(uuid::Uuid::new_v4());
        assert!(!fills.admit(a.0, What::Window));
        assert!(
            !fills.admit(a.0, What::Members),
            "members are counted apart"
        );
        assert!(fills.admit(a.0, What::Window));
        assert!(
            !fills.admit(a.0, What::Window),
            "admitting forgets the channel"
        );
        assert!(!fills.admit(b.0, What::Window));
        assert!(Fills::new(1).admit(b.0, What::Window));
    }
}
