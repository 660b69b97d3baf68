//! Sizing advice from live traffic: an online miss-ratio curve of channel reads, after
//! SHARDS (Waldspurger et al., FAST '15). A read is sampled when the hash of its channel
//! falls under a threshold (spatial sampling: a channel is always or never sampled), so
//! the sampled channels see their true reuse pattern. For each sampled read, the LRU
//! stack distance among sampled channels, divided by the sampling rate, estimates how
//! many channels an LRU cache must hold for that read to hit. The set of sampled channels
//! has a fixed size ([`MAX_TRACKED`]): when it is full, the threshold drops to evict the
//! channel with the largest hash, and the rate with it (fixed-size SHARDS).
//!
//! The curve is an LRU curve; L1 is moka (TinyLFU admission, LRU eviction), so it is a
//! guide. `tests/api/advice.rs` checks it against `hotchan bench --replay` (exact LRU and
//! moka) on the same reads.
//!
//! Reads reach the advisor through a bounded queue and are processed by a background
//! task ([`run`]) every 50 ms, in a batch (a request never wakes it): a full queue drops
//! the read (counted), never slows a request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::mpsc;

use crate::domain::ChannelId;

mod report;
mod stack;

use report::recommend;
pub use report::{Advice, L1Point, WindowPoint};
pub use stack::Fenwick;
use stack::Stack;

/// Most channels whose reuse is tracked (about 1 MB in all, with the tree and histograms).
pub const MAX_TRACKED: usize = 8192;
/// Hot windows the advice covers, in messages.
pub const WINDOWS: [u32; 5] = [50, 100, 200, 500, 1000];
/// L1 sizes the advice covers, as multiples of today's.
pub const FACTORS: [f64; 5] = [0.25, 0.5, 1.0, 2.0, 4.0];
/// Reads waiting for the background task; past this they are dropped.
const QUEUE: usize = 65_536;
/// How often the background task takes in the reads waiting ([`run`]).
const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(50);
/// Histogram buckets grow by 2 % (a capacity is placed within 2 %).
const GROWTH: f64 = 1.02;
/// Buckets: up to 1.02^1200 ≈ 2·10^10 channels.
const BUCKETS: usize = 1200;

/// A read as the advisor sees it: the channel's hash, its id, how deep it reads.
type Read = (u64, u128, u32);

/// The online curve.
pub struct Advisor {
    enabled: bool,
    /// [`MAX_TRACKED`], or less for a test.
    max_tracked: usize,
    /// Channels with a hash at or above this are not sampled (`u64::MAX`: every one).
    threshold: AtomicU64,
    queue: mpsc::Sender<Read>,
    receiver: Mutex<Option<mpsc::Receiver<Read>>>,
    reads_seen: AtomicU64,
    reads_dropped: AtomicU64,
    /// Reads the dropped samples stood for.
    reads_lost_weight: AtomicU64,
    curve: Mutex<Curve>,
}

/// The sampled channels in LRU order and the histograms of scaled stack distances.
struct Curve {
    stack: Stack,
    /// Sampled reads, each counted with weight 1 / rate at the time.
    total: f64,
    /// The same, for reads no deeper than each of [`WINDOWS`].
    total_by_window: [f64; 5],
    /// For all reads, then for reads no deeper than each of [`WINDOWS`]: weight per
    /// bucket of scaled stack distance.
    histograms: [Vec<f64>; 6],
    sampled: u64,
}

/// Assumed weight of a window entry before L1 holds any.
const DEFAULT_ENTRY_BYTES: u64 = 64 * 1024;

impl Advisor {
    pub fn new(enabled: bool) -> Advisor {
        Advisor::tracking(enabled, MAX_TRACKED)
    }

    /// An advisor that tracks at most `max_tracked` channels (a small set samples
    /// sooner: tests use it to check the curve at low sampling rates).
    pub fn tracking(enabled: bool, max_tracked: usize) -> Advisor {
        let (queue, receiver) = mpsc::channel(QUEUE);
        Advisor {
            enabled,
            max_tracked: max_tracked.max(1),
            threshold: AtomicU64::new(u64::MAX),
            queue,
            receiver: Mutex::new(Some(receiver)),
            reads_seen: AtomicU64::new(0),
            reads_dropped: AtomicU64::new(0),
            reads_lost_weight: AtomicU64::new(0),
            curve: Mutex::new(Curve {
                stack: Stack::new(max_tracked.max(1)),
                total: 0.0,
                total_by_window: [0.0; 5],
                histograms: std::array::from_fn(|_| vec![0.0; BUCKETS]),
                sampled: 0,
            }),
        }
    }

    /// Called for every channel read that needs `depth` messages back from the newest.
    pub fn record(&self, channel: ChannelId, depth: u32) {
        if !self.enabled {
            return;
        }
        self.reads_seen.fetch_add(1, Ordering::Relaxed);
        let hash = self.hash(channel);
        if hash >= self.threshold.load(Ordering::Relaxed) {
            return;
        }
        if self
            .queue
            .try_send((hash, channel.0.as_u128(), depth))
            .is_err()
        {
            self.reads_dropped.fetch_add(1, Ordering::Relaxed);
            // A lost sample stood for 1 / rate reads: leave them out of the count too.
            let rate = self.threshold.load(Ordering::Relaxed) as f64 / u64::MAX as f64;
            self.reads_lost_weight
                .fetch_add((1.0 / rate) as u64, Ordering::Relaxed);
        }
    }

    /// A fixed hash (SplitMix64 of both halves of the id): the same traffic gives the
    /// same sample, and so the same advice, on every instance and after a restart.
    fn hash(&self, channel: ChannelId) -> u64 {
        let id = channel.0.as_u128();
        let h = splitmix(splitmix(id as u64) ^ (id >> 64) as u64);
        // Never u64::MAX, so that the starting threshold samples every channel.
        h.min(u64::MAX - 1)
    }

    /// Takes one sampled read into the curve (the background task's work; public for
    /// replays in tests).
    pub fn process(&self, channel: ChannelId, depth: u32) {
        self.reads_seen.fetch_add(1, Ordering::Relaxed);
        let hash = self.hash(channel);
        if hash < self.threshold.load(Ordering::Relaxed) {
            self.take((hash, channel.0.as_u128(), depth));
        }
    }

    fn take(&self, (hash, id, depth): Read) {
        let Ok(mut curve) = self.curve.lock() else {
            return;
        };
        let threshold = self.threshold.load(Ordering::Relaxed);
        if hash >= threshold {
            return; // sampled before the threshold dropped
        }
        let rate = threshold as f64 / u64::MAX as f64;
        let weight = 1.0 / rate;
        curve.sampled += 1;
        curve.total += weight;
        for (i, w) in WINDOWS.iter().enumerate() {
            if depth <= *w {
                curve.total_by_window[i] += weight;
            }
        }
        match curve.stack.touch(hash, id) {
            Some(position) => {
                let bucket = bucket_of(position as f64 / rate);
                curve.histograms[0][bucket] += weight;
                for (i, w) in WINDOWS.iter().enumerate() {
                    if depth <= *w {
                        curve.histograms[i + 1][bucket] += weight;
                    }
                }
            }
            None if curve.stack.len() > self.max_tracked => {
                // Full: lower the threshold to the largest hash held (this one's
                // included), and forget the channels at or above it.
                let new_threshold = curve.stack.largest_hash();
                self.threshold.store(new_threshold, Ordering::Relaxed);
                curve.stack.forget_from(new_threshold);
            }
            None => {}
        }
    }

    /// The `n` sampled channels read most since they were first sampled, with their
    /// reads (sampled channels only: at a sampling rate below 1, a hot channel may be
    /// missing).
    pub fn hottest(&self, n: usize) -> Vec<(ChannelId, u64)> {
        let Ok(curve) = self.curve.lock() else {
            return Vec::new();
        };
        let mut all: Vec<(ChannelId, u64)> = curve
            .stack
            .channels
            .iter()
            .map(|(&id, c)| (ChannelId(uuid::Uuid::from_u128(id)), c.reads))
            .collect();
        all.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }

    /// The predicted hit ratio of an LRU cache of `channels` windows, for reads no deeper
    /// than `window` (`None`: every read).
    pub fn hit_ratio(&self, channels: f64, window: Option<u32>) -> Option<f64> {
        let curve = self.curve.lock().ok()?;
        if curve.total == 0.0 {
            return None;
        }
        let series = match window {
            None => 0,
            Some(w) => {
                1 + WINDOWS
                    .iter()
                    .position(|&x| x >= w)
                    .unwrap_or(WINDOWS.len() - 1)
            }
        };
        let histogram = &curve.histograms[series];
        // SHARDS_adj: the reads actually seen minus those the samples stand for goes to
        // the first bucket (a hit at any size). Hot channels dominate the hits, and
        // whether a few of them fall under the threshold swings the sample count; this
        // corrects the curve for it. Per window, in proportion to its share of samples.
        let seen = self.reads_seen.load(Ordering::Relaxed) as f64
            - self.reads_lost_weight.load(Ordering::Relaxed) as f64;
        let share = match series {
            0 => 1.0,
            s => curve.total_by_window[s - 1] / curve.total,
        };
        let mut hits = (seen - curve.total) * share;
        for (i, weight) in histogram.iter().enumerate() {
            let (low, high) = bucket_bounds(i);
            if high <= channels {
                hits += weight;
            } else {
                if low < channels {
                    hits += weight * (channels - low) / (high - low);
                }
                break;
            }
        }
        let reads = if seen > 0.0 { seen } else { curve.total };
        Some((hits / reads).clamp(0.0, 1.0))
    }

    /// The advice for an L1 of `capacity_bytes` now holding `window_entries` windows of
    /// `window_bytes` in all, with hot windows of `hot_window` messages.
    pub fn advice(
        &self,
        capacity_bytes: u64,
        window_entries: u64,
        window_bytes: u64,
        hot_window: usize,
    ) -> Advice {
        let entry_bytes = (window_entries > 0).then(|| (window_bytes / window_entries).max(1));
        let per_window = entry_bytes.unwrap_or(DEFAULT_ENTRY_BYTES) as f64;
        let l1: Vec<L1Point> = FACTORS
            .iter()
            .map(|&factor| {
                let bytes = (capacity_bytes as f64 * factor) as u64;
                let channels = bytes as f64 / per_window;
                L1Point {
                    factor,
                    capacity_bytes: bytes,
                    channels: channels as u64,
                    predicted_hit_ratio: self.hit_ratio(channels, None),
                }
            })
            .collect();
        // A window's weight grows with its messages.
        let per_message = per_window / hot_window.max(1) as f64;
        let windows: Vec<WindowPoint> = WINDOWS
            .iter()
            .map(|&w| {
                let channels = capacity_bytes as f64 / (per_message * f64::from(w));
                WindowPoint {
                    window: w,
                    channels: channels as u64,
                    predicted_hit_ratio: self.hit_ratio(channels, Some(w)),
                }
            })
            .collect();
        let (sampled, tracked) = self
            .curve
            .lock()
            .map(|c| (c.sampled, c.stack.len()))
            .unwrap_or_default();
        Advice {
            sampling_rate: self.threshold.load(Ordering::Relaxed) as f64 / u64::MAX as f64,
            tracked_channels: tracked,
            reads_seen: self.reads_seen.load(Ordering::Relaxed),
            reads_sampled: sampled,
            reads_dropped: self.reads_dropped.load(Ordering::Relaxed),
            l1_capacity_bytes: capacity_bytes,
            window_entry_bytes: entry_bytes,
            hot_window,
            recommendation: if self.enabled {
                recommend(&l1, sampled)
            } else {
                "the advisor is off (--cache off, or --advice off)".to_owned()
            },
            l1,
            windows,
        }
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn bucket_of(distance: f64) -> usize {
    (((distance + 1.0).ln() / GROWTH.ln()) as usize).min(BUCKETS - 1)
}

/// The scaled distances of a bucket: a read in it hits a cache of more than `low`.
fn bucket_bounds(i: usize) -> (f64, f64) {
    (GROWTH.powi(i as i32) - 1.0, GROWTH.powi(i as i32 + 1) - 1.0)
}

/// Takes sampled reads into the curve until aborted.
pub async fn run(advisor: std::sync::Arc<super::HotCache>) {
    let advisor = &advisor.advice;
    let Some(mut reads) = advisor.receiver.lock().ok().and_then(|mut r| r.take()) else {
        return;
    };
    // Drained in batches: a task parked in `recv` would be woken by every sampled read,
    // a cross-thread wake on the request's path. Between drains the queue only fills
    // (50 ms of reads is far below its bound at any rate this process serves).
    let mut tick = tokio::time::interval(DRAIN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        loop {
            match reads.try_recv() {
                Ok(read) => advisor.take(read),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(i: u32) -> ChannelId {
        ChannelId(uuid::Uuid::from_u128(u128::from(i) + 1))
    }

    #[test]
    fn a_loop_over_n_channels_hits_only_with_room_for_n() {
        let advisor = Advisor::new(true);
        for _ in 0..50 {
            for i in 0..100 {
                advisor.process(channel(i), 50);
            }
        }
        // LRU over a loop of 100: every read misses below 100 entries, hits above.
        assert!(advisor.hit_ratio(90.0, None).unwrap() < 0.01);
        let above = advisor.hit_ratio(110.0, None).unwrap();
        assert!((above - 0.98).abs() < 0.01, "{above}");
        // Reads of 50 messages fit every window.
        assert_eq!(advisor.hit_ratio(110.0, Some(50)), Some(above));
    }

    #[test]
    fn the_tracked_set_is_bounded_and_the_rate_falls() {
        let advisor = Advisor::new(true);
        for i in 0..(MAX_TRACKED as u32 * 4) {
            advisor.process(channel(i), 10);
        }
        let advice = advisor.advice(1 << 20, 0, 0, 200);
        assert!(advice.tracked_channels <= MAX_TRACKED);
        assert!(advice.sampling_rate < 0.5, "{}", advice.sampling_rate);
    }
}
