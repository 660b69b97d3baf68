//! The hit-rate study: L1 hit ratio against L1 size (moka, the real cache, over a trace)
//! with the clairvoyant optimum (Belady) for the same trace as the upper bound, and the
//! share of reads a hot window of each size can answer.

use std::collections::{BTreeSet, HashMap};

/// One read of a trace: which channel (an index) and how deep into its history.
#[derive(Debug, Clone, Copy)]
pub struct Access {
    pub channel: u32,
    pub depth: u32,
}

/// L1 sizes swept, as fractions of the channels.
pub const CAPACITIES: [f64; 7] = [0.001, 0.005, 0.01, 0.02, 0.05, 0.10, 0.20];
/// Hot windows swept, in messages.
pub const WINDOWS: [u32; 5] = [50, 100, 200, 500, 1000];

pub struct Point {
    pub fraction: f64,
    pub entries: usize,
    pub moka: f64,
    pub belady: f64,
    /// Tier hit ratio (in L1 and inside the window) for each of [`WINDOWS`].
    pub combined: Vec<f64>,
}

/// Hits of moka (TinyLFU admission, LRU eviction) holding `capacity` channels.
fn moka_hits(trace: &[Access], capacity: usize) -> Vec<bool> {
    crate::cache::l1::simulate_hits(trace.iter().map(|a| a.channel), capacity)
}

/// Hits of the clairvoyant optimum: on a miss with a full cache, evict what is needed
/// again furthest in the future, or keep the newcomer out when it is needed last.
fn belady_hits(trace: &[Access], capacity: usize) -> usize {
    let mut next_use = vec![usize::MAX; trace.len()];
    let mut seen: HashMap<u32, usize> = HashMap::new();
    for i in (0..trace.len()).rev() {
        next_use[i] = seen.get(&trace[i].channel).copied().unwrap_or(usize::MAX);
        seen.insert(trace[i].channel, i);
    }
    let mut resident: HashMap<u32, usize> = HashMap::new();
    let mut by_next: BTreeSet<(usize, u32)> = BTreeSet::new();
    let mut hits = 0;
    for (i, a) in trace.iter().enumerate() {
        let next = next_use[i];
        if let Some(old) = resident.insert(a.channel, next) {
            hits += 1;
            by_next.remove(&(old, a.channel));
            by_next.insert((next, a.channel));
            continue;
        }
        if resident.len() > capacity {
            let &(furthest, victim) = by_next.iter().next_back().expect("the cache is not empty");
            if furthest > next {
                by_next.remove(&(furthest, victim));
                resident.remove(&victim);
                by_next.insert((next, a.channel));
            } else {
                resident.remove(&a.channel);
            }
        } else {
            by_next.insert((next, a.channel));
        }
    }
    hits
}

pub fn sweep(trace: &[Access], channels: usize) -> Vec<Point> {
    let n = trace.len().max(1) as f64;
    CAPACITIES
        .iter()
        .map(|&fraction| {
            let entries = ((channels as f64 * fraction).round() as usize).max(1);
            let moka = moka_hits(trace, entries);
            let combined = WINDOWS
                .iter()
                .map(|&w| {
                    let hits = trace
                        .iter()
                        .zip(&moka)
                        .filter(|(a, &hit)| hit && a.depth <= w)
                        .count();
                    hits as f64 / n
                })
                .collect();
            Point {
                fraction,
                entries,
                moka: moka.iter().filter(|&&h| h).count() as f64 / n,
                belady: belady_hits(trace, entries) as f64 / n,
                combined,
            }
        })
        .collect()
}

/// Share of reads a window of each size answers, whatever L1 holds.
pub fn window_coverage(trace: &[Access]) -> Vec<f64> {
    let n = trace.len().max(1) as f64;
    WINDOWS
        .iter()
        .map(|&w| trace.iter().filter(|a| a.depth <= w).count() as f64 / n)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(channels: &[u32]) -> Vec<Access> {
        channels
            .iter()
            .map(|&channel| Access { channel, depth: 0 })
            .collect()
    }

    #[test]
    fn belady_keeps_what_comes_back_soonest() {
        // Capacity 2: a b c a b c … LRU would miss every time; OPT hits half the time after
        // warming up.
        let t = trace(&[1, 2, 3, 1, 2, 3, 1, 2, 3]);
        assert_eq!(belady_hits(&t, 2), 4);
        assert_eq!(belady_hits(&t, 3), 6);
        assert_eq!(belady_hits(&trace(&[1, 1, 1]), 1), 2);
    }

    #[test]
    fn belady_bounds_moka_from_above() {
        let mut rng = super::super::rng::Rng::new(3);
        let zipf = super::super::rng::Zipf::new(500, 1.1);
        let t: Vec<Access> = (0..20_000)
            .map(|_| Access {
                channel: zipf.sample(&mut rng) as u32,
                depth: 0,
            })
            .collect();
        for capacity in [5, 25, 100] {
            let moka = moka_hits(&t, capacity).iter().filter(|&&h| h).count();
            assert!(belady_hits(&t, capacity) >= moka, "capacity {capacity}");
        }
    }
}

/// The exact LRU stack distance of each read: how many other channels were read since
/// this channel's previous read (`None` for a first read). An LRU cache of `c` channels
/// hits exactly the reads with a distance below `c`. A Fenwick tree over read times marks
/// each channel's latest read, so each distance is a prefix count: O(n log n).
pub fn lru_distances(trace: &[Access]) -> Vec<Option<usize>> {
    let mut marks = crate::cache::advice::Fenwick::new(trace.len());
    let mut last: HashMap<u32, usize> = HashMap::new();
    trace
        .iter()
        .enumerate()
        .map(|(t, a)| {
            let distance = last.insert(a.channel, t).map(|previous| {
                // Marks after the previous read: channels read since.
                let since = marks.total() - marks.before(previous + 1);
                marks.add(previous, -1);
                since as usize
            });
            marks.add(t, 1);
            distance
        })
        .collect()
}

/// Hit ratios of an exact LRU and of moka holding `capacity` channels, over `trace`.
pub fn replay_point(trace: &[Access], distances: &[Option<usize>], capacity: usize) -> (f64, f64) {
    let n = trace.len().max(1) as f64;
    let lru = distances
        .iter()
        .filter(|d| d.is_some_and(|d| d < capacity))
        .count() as f64
        / n;
    let moka = moka_hits(trace, capacity).iter().filter(|&&h| h).count() as f64 / n;
    (lru, moka)
}

#[cfg(test)]
mod lru_tests {
    use super::*;

    #[test]
    fn lru_distances_count_other_channels_read_since() {
        let trace: Vec<Access> = [1, 2, 3, 1, 1, 2]
            .iter()
            .map(|&channel| Access { channel, depth: 0 })
            .collect();
        assert_eq!(
            lru_distances(&trace),
            [None, None, None, Some(2), Some(0), Some(2)]
        );
    }
}
