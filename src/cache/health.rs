//! Redis health as the cache sees it: the breaker, and the channels written while Redis
//! could not be told.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::domain::ChannelId;

/// Most channels remembered one by one; past this, everything cached is dropped instead.
pub const MAX_DIRTY_CHANNELS: usize = 10_000;

/// Opens after `threshold` consecutive failed Redis calls; while open, no request waits on
/// Redis. Only the background prober closes it, after the dirty channels are dropped.
pub struct Breaker {
    threshold: u32,
    failures: AtomicU32,
    open: AtomicBool,
}

impl Breaker {
    pub fn new(threshold: u32) -> Breaker {
        Breaker {
            threshold,
            failures: AtomicU32::new(0),
            open: AtomicBool::new(false),
        }
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    pub fn record_success(&self) {
        self.failures.store(0, Ordering::Release);
    }

    /// Returns true when this failure opened the breaker.
    pub fn record_failure(&self) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        failures >= self.threshold && !self.open.swap(true, Ordering::AcqRel)
    }

    pub fn close(&self) {
        self.failures.store(0, Ordering::Release);
        self.open.store(false, Ordering::Release);
    }
}

/// Channels whose cached entries may be older than Postgres because a write could not
/// reach Redis. Reads of a dirty channel skip the tiers until it is dropped from Redis.
pub struct Dirty {
    count: AtomicUsize,
    channels: Mutex<DirtySet>,
}

#[derive(Default)]
struct DirtySet {
    channels: HashSet<ChannelId>,
    /// Too many to remember: every channel counts as dirty.
    all: bool,
}

/// What to drop from Redis.
#[derive(Debug, PartialEq, Eq)]
pub enum DirtyWork {
    Nothing,
    Channels(Vec<ChannelId>),
    Everything,
}

impl Default for Dirty {
    fn default() -> Self {
        Dirty {
            count: AtomicUsize::new(0),
            channels: Mutex::new(DirtySet::default()),
        }
    }
}

impl Dirty {
    fn set(&self) -> std::sync::MutexGuard<'_, DirtySet> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn mark(&self, channel: ChannelId) {
        let mut set = self.set();
        if set.all {
            return;
        }
        if set.channels.len() >= MAX_DIRTY_CHANNELS {
            set.all = true;
            set.channels.clear();
        } else {
            set.channels.insert(channel);
        }
        self.count.store(
            set.channels.len().max(usize::from(set.all)),
            Ordering::Release,
        );
    }

    pub fn mark_all(&self) {
        let mut set = self.set();
        set.all = true;
        set.channels.clear();
        self.count.store(1, Ordering::Release);
    }

    /// Whether reads of `channel` must skip the tiers. Lock-free when nothing is dirty.
    pub fn contains(&self, channel: ChannelId) -> bool {
        if self.count.load(Ordering::Acquire) == 0 {
            return false;
        }
        let set = self.set();
        set.all || set.channels.contains(&channel)
    }

    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn work(&self) -> DirtyWork {
        let set = self.set();
        if set.all {
            DirtyWork::Everything
        } else if set.channels.is_empty() {
            DirtyWork::Nothing
        } else {
            DirtyWork::Channels(set.channels.iter().copied().collect())
        }
    }

    /// Forgets channels that were dropped from Redis (marks made meanwhile stay).
    pub fn done(&self, work: &DirtyWork) {
        let mut set = self.set();
        match work {
            DirtyWork::Nothing => {}
            DirtyWork::Everything => {
                set.all = false;
            }
            DirtyWork::Channels(channels) => {
                for c in channels {
                    set.channels.remove(c);
                }
            }
        }
        self.count.store(
            set.channels.len().max(usize::from(set.all)),
            Ordering::Release,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn the_breaker_opens_after_the_threshold_and_success_resets_the_count() {
        let b = Breaker::new(3);
        assert!(!b.record_failure());
        assert!(!b.record_failure());
        b.record_success();
        assert!(!b.record_failure() && !b.record_failure());
        assert!(b.record_failure(), "the third in a row opens it");
        assert!(b.is_open());
        assert!(!b.record_failure(), "already open");
        b.record_success();
        assert!(b.is_open(), "only close() closes it");
        b.close();
        assert!(!b.is_open());
    }

    #[test]
    fn dirty_channels_overflow_into_everything() {
        let d = Dirty::default();
        let a = ChannelId(Uuid::new_v4());
        assert!(!d.contains(a));
        d.mark(a);
        assert!(d.contains(a));
        let work = d.work();
        d.mark(ChannelId(Uuid::new_v4()));
        d.done(&work);
        assert!(!d.contains(a));
        assert_eq!(d.len(), 1, "a mark made during the drop stays");

        for _ in 0..MAX_DIRTY_CHANNELS + 1 {
            d.mark(ChannelId(Uuid::new_v4()));
        }
        assert_eq!(d.work(), DirtyWork::Everything);
        assert!(d.contains(ChannelId(Uuid::new_v4())));
        d.done(&DirtyWork::Everything);
        assert!(d.is_empty());
    }
}
