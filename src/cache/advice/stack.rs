//! The advisor's LRU stack: a channel's stack distance in O(log n), from a Fenwick tree
//! over read times.

use std::collections::{BTreeSet, HashMap};

/// An LRU stack of channels that tells a channel's depth in O(log n): each channel's latest
/// read time is marked in a Fenwick tree, and its depth is the number of marks after it.
/// Times are renumbered when they run out ([`Stack::compact`]).
pub(super) struct Stack {
    pub(super) channels: HashMap<u128, Tracked>,
    /// Channels by hash, for the threshold's fall.
    by_hash: BTreeSet<(u64, u128)>,
    marks: Fenwick,
    /// The channel read at each time (`None`: read again later, or forgotten).
    at: Vec<Option<u128>>,
    now: usize,
}

pub(super) struct Tracked {
    time: usize,
    pub(super) reads: u64,
}

impl Stack {
    pub(super) fn new(max_tracked: usize) -> Stack {
        let room = 2 * (max_tracked + 1);
        Stack {
            channels: HashMap::new(),
            by_hash: BTreeSet::new(),
            marks: Fenwick::new(room),
            at: vec![None; room],
            now: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.channels.len()
    }

    /// Reads `id`: returns how many other channels were read since its previous read
    /// (`None` the first time), and puts it on top.
    pub(super) fn touch(&mut self, hash: u64, id: u128) -> Option<usize> {
        if self.now == self.at.len() {
            self.compact();
        }
        let now = self.now;
        self.now += 1;
        let depth = match self.channels.get_mut(&id) {
            Some(tracked) => {
                let previous = tracked.time;
                tracked.time = now;
                tracked.reads += 1;
                let depth = self.marks.total() - self.marks.before(previous + 1);
                self.marks.add(previous, -1);
                self.at[previous] = None;
                Some(depth as usize)
            }
            None => {
                self.channels.insert(
                    id,
                    Tracked {
                        time: now,
                        reads: 1,
                    },
                );
                self.by_hash.insert((hash, id));
                None
            }
        };
        self.marks.add(now, 1);
        self.at[now] = Some(id);
        depth
    }

    pub(super) fn largest_hash(&self) -> u64 {
        self.by_hash.last().map_or(0, |&(h, _)| h)
    }

    /// Forgets every channel whose hash is `threshold` or more.
    pub(super) fn forget_from(&mut self, threshold: u64) {
        let gone: Vec<(u64, u128)> = self.by_hash.range((threshold, 0)..).copied().collect();
        for key in gone {
            self.by_hash.remove(&key);
            if let Some(tracked) = self.channels.remove(&key.1) {
                self.marks.add(tracked.time, -1);
                self.at[tracked.time] = None;
            }
        }
    }

    /// Renumbers the latest reads 0, 1, 2, … in their order.
    fn compact(&mut self) {
        let order: Vec<u128> = self.at.iter().flatten().copied().collect();
        self.marks = Fenwick::new(self.at.len());
        self.at.iter_mut().for_each(|t| *t = None);
        for (time, id) in order.into_iter().enumerate() {
            self.marks.add(time, 1);
            self.at[time] = Some(id);
            if let Some(tracked) = self.channels.get_mut(&id) {
                tracked.time = time;
            }
        }
        self.now = self.channels.len();
    }
}

/// Counts over positions, with O(log n) updates and prefix sums.
pub struct Fenwick {
    tree: Vec<i64>,
    total: i64,
}

impl Fenwick {
    pub fn new(size: usize) -> Fenwick {
        Fenwick {
            tree: vec![0; size + 1],
            total: 0,
        }
    }

    pub fn add(&mut self, position: usize, value: i64) {
        self.total += value;
        let mut i = position + 1;
        while i < self.tree.len() {
            self.tree[i] += value;
            i += i & i.wrapping_neg();
        }
    }

    /// The sum over positions below `position`.
    pub fn before(&self, position: usize) -> i64 {
        let mut sum = 0;
        let mut i = position.min(self.tree.len() - 1);
        while i > 0 {
            sum += self.tree[i];
            i -= i & i.wrapping_neg();
        }
        sum
    }

    pub fn total(&self) -> i64 {
        self.total
    }
}
