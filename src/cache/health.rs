//! What was written while Redis could not be told (channels, feeds and event bodies:
//! [`Scope`]s); the breakers are in [`super::breaker`].

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::domain::Scope;

/// Most scopes (channels, feeds, event bodies) remembered one by one; past this,
/// everything cached is dropped instead.
pub const MAX_DIRTY_CHANNELS: usize = 10_000;

/// Scopes whose cached entries may be older than Postgres because a write could not
/// reach Redis. Reads of a dirty scope skip the tiers until it is dropped from Redis.
pub struct Dirty {
    count: AtomicUsize,
    set: Mutex<DirtySet>,
}

#[derive(Default)]
struct DirtySet {
    scopes: HashSet<Scope>,
    /// Too many to remember (or a flush that failed): everything counts as dirty.
    all: bool,
}

impl DirtySet {
    fn count(&self) -> usize {
        self.scopes.len().max(usize::from(self.all))
    }
}

/// What to drop from Redis.
#[derive(Debug, PartialEq, Eq)]
pub enum DirtyWork {
    Nothing,
    Scopes(Vec<Scope>),
    Everything,
}

impl Default for Dirty {
    fn default() -> Self {
        Dirty {
            count: AtomicUsize::new(0),
            set: Mutex::new(DirtySet::default()),
        }
    }
}

impl Dirty {
    fn set(&self) -> std::sync::MutexGuard<'_, DirtySet> {
        self.set.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn mark(&self, scope: Scope) {
        let mut set = self.set();
        if !set.all {
            if scope == Scope::Everything || set.scopes.len() >= MAX_DIRTY_CHANNELS {
                set.all = true;
                set.scopes.clear();
            } else {
                set.scopes.insert(scope);
            }
        }
        self.count.store(set.count(), Ordering::Release);
    }

    /// Whether reads of `scope` must skip the tiers. Lock-free when nothing is dirty.
    pub fn contains(&self, scope: Scope) -> bool {
        if self.is_empty() {
            return false;
        }
        let set = self.set();
        set.all || set.scopes.contains(&scope)
    }

    /// Whether any of `scopes` is dirty (one lock for all). Lock-free when nothing is.
    pub fn contains_any(&self, scopes: impl IntoIterator<Item = Scope>) -> bool {
        if self.is_empty() {
            return false;
        }
        let set = self.set();
        set.all || scopes.into_iter().any(|s| set.scopes.contains(&s))
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
        } else if set.scopes.is_empty() {
            DirtyWork::Nothing
        } else {
            DirtyWork::Scopes(set.scopes.iter().copied().collect())
        }
    }

    /// Forgets scopes that were dropped from Redis (marks made meanwhile stay).
    pub fn done(&self, work: &DirtyWork) {
        let mut set = self.set();
        match work {
            DirtyWork::Nothing => {}
            DirtyWork::Everything => {
                set.all = false;
            }
            DirtyWork::Scopes(scopes) => {
                for s in scopes {
                    set.scopes.remove(s);
                }
            }
        }
        self.count.store(set.count(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::feed::EventId;
    use crate::domain::{ChannelId, UserId};
    use uuid::Uuid;

    #[test]
    fn dirty_scopes_overflow_into_everything() {
        let d = Dirty::default();
        let a = Scope::Channel(ChannelId(Uuid::new_v4()));
        assert!(!d.contains(a));
        d.mark(a);
        assert!(d.contains(a));
        let work = d.work();
        d.mark(Scope::Channel(ChannelId(Uuid::new_v4())));
        d.done(&work);
        assert!(!d.contains(a));
        assert_eq!(d.len(), 1, "a mark made during the drop stays");

        for _ in 0..MAX_DIRTY_CHANNELS + 1 {
            d.mark(Scope::Channel(ChannelId(Uuid::new_v4())));
        }
        assert_eq!(d.work(), DirtyWork::Everything);
        assert!(d.contains(Scope::Channel(ChannelId(Uuid::new_v4()))));
        d.done(&DirtyWork::Everything);
        assert!(d.is_empty());
    }

    #[test]
    fn a_dirty_feed_leaves_other_feeds_and_channels_clean() {
        let d = Dirty::default();
        let (user, other) = (UserId(Uuid::new_v4()), UserId(Uuid::new_v4()));
        d.mark(Scope::Feed(user));
        assert!(d.contains(Scope::Feed(user)));
        assert!(!d.contains(Scope::Feed(other)));
        assert!(!d.contains(Scope::Channel(ChannelId(other.0))));
        assert!(d.contains_any([Scope::Event(EventId(1)), Scope::Feed(user)]));
        assert!(!d.contains_any([Scope::Event(EventId(1))]));
        d.mark(Scope::Everything);
        assert_eq!(d.work(), DirtyWork::Everything);
        assert!(d.contains(Scope::Feed(other)));
    }
}
