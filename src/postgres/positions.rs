//! What this instance knows of writes, as WAL positions (API.md promise 8): per scope,
//! the position of the newest write it made or heard of. A read may go to a replica only
//! when the replica has replayed at least that far.
//!
//! The map is bounded. When it is full it is emptied and its highest position becomes
//! the floor every scope needs: conservative (some reads go to the primary that did not
//! have to), never wrong.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::domain::{Lsn, Scope};

/// Scopes remembered one by one.
pub const REMEMBERED: usize = 100_000;

#[derive(Default)]
pub struct Positions {
    scopes: Mutex<HashMap<Scope, Lsn>>,
    /// What a scope not in the map needs (and every scope at least).
    floor: AtomicU64,
    /// The highest position known, of any scope: what [`Scope::Everything`] needs.
    newest: AtomicU64,
}

impl Positions {
    fn scopes(&self) -> std::sync::MutexGuard<'_, HashMap<Scope, Lsn>> {
        self.scopes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A write to `scope` is at `at` (never lowers what is known).
    pub fn learn(&self, scope: Scope, at: Lsn) {
        self.newest.fetch_max(at.0, Ordering::Relaxed);
        if scope == Scope::Everything {
            self.floor.fetch_max(at.0, Ordering::Relaxed);
            return;
        }
        let mut scopes = self.scopes();
        if scopes.len() >= REMEMBERED && !scopes.contains_key(&scope) {
            let highest = scopes.values().max().copied().unwrap_or_default();
            self.floor.fetch_max(highest.0, Ordering::Relaxed);
            scopes.clear();
        }
        let known = scopes.entry(scope).or_default();
        *known = (*known).max(at);
    }

    /// The position a replica must have replayed to answer a read of `scope`.
    pub fn needed(&self, scope: Scope) -> Lsn {
        let floor = Lsn(self.floor.load(Ordering::Relaxed));
        match scope {
            Scope::Everything => Lsn(self.newest.load(Ordering::Relaxed)),
            _ => self
                .scopes()
                .get(&scope)
                .copied()
                .unwrap_or_default()
                .max(floor),
        }
    }

    /// Scopes remembered one by one now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.scopes().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ChannelId, UserId};
    use uuid::Uuid;

    #[test]
    fn a_scope_needs_its_newest_write_and_everything_needs_every_write() {
        let positions = Positions::default();
        let (a, b) = (
            Scope::Channel(ChannelId(Uuid::new_v4())),
            Scope::Feed(UserId(Uuid::new_v4())),
        );
        positions.learn(a, Lsn(10));
        positions.learn(a, Lsn(5));
        positions.learn(b, Lsn(7));
        assert_eq!(positions.needed(a), Lsn(10), "never lowered");
        assert_eq!(positions.needed(b), Lsn(7));
        assert_eq!(
            positions.needed(Scope::Channel(ChannelId(Uuid::new_v4()))),
            Lsn(0)
        );
        assert_eq!(positions.needed(Scope::Everything), Lsn(10));
        positions.learn(Scope::Everything, Lsn(8));
        assert_eq!(positions.needed(b), Lsn(8), "a flush is a floor for all");
        assert_eq!(positions.needed(a), Lsn(10));
    }

    #[test]
    fn a_full_map_keeps_its_highest_position_as_the_floor() {
        let positions = Positions::default();
        for i in 0..REMEMBERED as u64 {
            positions.learn(Scope::Channel(ChannelId(Uuid::new_v4())), Lsn(i + 1));
        }
        let late = Scope::Channel(ChannelId(Uuid::new_v4()));
        positions.learn(late, Lsn(3));
        assert_eq!(positions.len(), 1);
        let forgotten = Scope::Channel(ChannelId(Uuid::new_v4()));
        assert_eq!(positions.needed(forgotten), Lsn(REMEMBERED as u64));
        assert_eq!(positions.needed(late), Lsn(REMEMBERED as u64));
    }
}
