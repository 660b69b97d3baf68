//! What this instance last found in Redis, so that a read of a key Redis likely lacks does
//! not pay a round trip before the Postgres query that answers it.
//!
//! A fixed table of slots (no growth, no locks): a key's slot holds its tag once a read
//! or a fill of this instance found or put the key in Redis, and loses it when a read
//! misses (or another key takes the slot). A read whose key is not marked goes straight
//! to Postgres, as `--cache off` would, and counts towards the key's fill
//! ([`super::fills`]); the fill looks in Redis first, so a key another instance filled is
//! marked by the first fill this instance queues for it. A wrong mark costs one Redis
//! read; it never serves anything, so it cannot serve anything stale.

use std::sync::atomic::{AtomicU64, Ordering};

use super::fills::{FillKey, What};
use super::l1::Loaded;
use super::stats::bump;
use crate::domain::ChannelId;
use crate::redis::{MembersRead, WindowRead};

/// Slots of the table: 1 MiB.
pub const SLOTS: usize = 1 << 17;

/// A key's hash: whose (a channel's or a user's id) and what of it (its kind number).
pub fn key_hash(id: uuid::Uuid, kind: u8) -> u64 {
    let (high, low) = id.as_u64_pair();
    // Fibonacci hashing spreads the mixed bits over the top of the word.
    (high ^ low.rotate_left(17) ^ (u64::from(kind) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

pub struct Presence {
    slots: Box<[AtomicU64]>,
}

impl Default for Presence {
    fn default() -> Self {
        Presence {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Presence {
    fn slot(&self, channel: ChannelId, kind: u8) -> (&AtomicU64, u64) {
        let hash = key_hash(channel.0, kind);
        let tag = hash | 1; // never 0, the empty slot
        (&self.slots[(hash >> 47) as usize % SLOTS], tag)
    }

    /// Whether Redis held the key when this instance last looked.
    pub fn likely(&self, channel: ChannelId, kind: u8) -> bool {
        let (slot, tag) = self.slot(channel, kind);
        slot.load(Ordering::Relaxed) == tag
    }

    /// Redis holds the key (a hit, or an installed fill).
    pub fn seen(&self, channel: ChannelId, kind: u8) {
        let (slot, tag) = self.slot(channel, kind);
        slot.store(tag, Ordering::Relaxed);
    }

    /// Redis lacked the key.
    pub fn gone(&self, channel: ChannelId, kind: u8) {
        let (slot, tag) = self.slot(channel, kind);
        let _ = slot.compare_exchange(tag, 0, Ordering::Relaxed, Ordering::Relaxed);
    }
}

impl super::HotCache {
    /// A read that did not ask Redis, because Redis likely lacks the key: Postgres answers,
    /// and the miss counts towards a fill that looks in Redis first.
    pub(super) fn skip_redis(&self, channel: ChannelId, what: What) -> Loaded {
        bump(&self.stats.redis_skipped);
        self.queue_fill(FillKey::Channel(channel, what), None);
        Loaded::Missed
    }

    /// A queued fill's first look in Redis, for a read that did not ask: `None` when
    /// Redis holds the key (now marked) or failed, else the version a fill must present.
    pub(super) async fn probe(&self, channel: ChannelId, what: What) -> Option<String> {
        let version = match what {
            What::Window => {
                let read = self.redis.read_window_head(channel, Some(1));
                match self.redis_call("read_window", read).await? {
                    WindowRead::Hit(_) => None,
                    WindowRead::Miss(version) => Some(version),
                }
            }
            What::Members => match self
                .redis_call("read_members", self.redis.read_members(channel))
                .await?
            {
                MembersRead::Hit(_) => None,
                MembersRead::Miss(version) => Some(version),
            },
            What::History(page) => {
                let read = self.redis.read_history(channel, page.cursor);
                let found = self.redis_call("read_history", read).await??;
                match found.run {
                    Some(run) if run.page(page).is_some() => None,
                    _ => Some(found.version),
                }
            }
        };
        if version.is_none() {
            self.presence.seen(channel, what.kind());
        }
        version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_likely_from_its_sighting_until_a_miss() {
        let p = Presence::default();
        let (a, b) = (
            ChannelId(uuid::Uuid::new_v4()),
            ChannelId(uuid::Uuid::new_v4()),
        );
        assert!(!p.likely(a, 0));
        p.seen(a, 0);
        assert!(p.likely(a, 0) && !p.likely(a, 1) && !p.likely(b, 0));
        p.gone(b, 0);
        assert!(p.likely(a, 0), "another key's miss leaves it");
        p.gone(a, 0);
        assert!(!p.likely(a, 0));
    }
}
