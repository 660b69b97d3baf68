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

use super::fills::FillKey;

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
    fn slot(&self, key: FillKey) -> (&AtomicU64, u64) {
        let hash = key.hash();
        let tag = hash | 1; // never 0, the empty slot
        (&self.slots[(hash >> 47) as usize % SLOTS], tag)
    }

    /// Whether Redis held the key when this instance last looked.
    pub fn likely(&self, key: FillKey) -> bool {
        let (slot, tag) = self.slot(key);
        slot.load(Ordering::Relaxed) == tag
    }

    /// Redis holds the key (a hit, or an installed fill).
    pub fn seen(&self, key: FillKey) {
        let (slot, tag) = self.slot(key);
        slot.store(tag, Ordering::Relaxed);
    }

    /// Redis lacked the key.
    pub fn gone(&self, key: FillKey) {
        let (slot, tag) = self.slot(key);
        let _ = slot.compare_exchange(tag, 0, Ordering::Relaxed, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_likely_from_its_sighting_until_a_miss() {
        use super::super::fills::What;
        use crate::domain::ChannelId;
        let p = Presence::default();
        let (a, b) = (
            ChannelId(uuid::Uuid::new_v4()),
            ChannelId(uuid::Uuid::new_v4()),
        );
        let window = |c| FillKey::Channel(c, What::Window);
        assert!(!p.likely(window(a)));
        p.seen(window(a));
        assert!(p.likely(window(a)));
        assert!(!p.likely(FillKey::Channel(a, What::Members)) && !p.likely(window(b)));
        p.gone(window(b));
        assert!(p.likely(window(a)), "another key's miss leaves it");
        p.gone(window(a));
        assert!(!p.likely(window(a)));
    }
}
