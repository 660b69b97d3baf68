//! Read latency by the path that answered: L1, Redis, a Postgres fill, or Postgres alone.
//! Lock-free log-scale histograms (four buckets per doubling, about 19% wide), so the
//! tail of each path can be read apart instead of guessed from one mixed histogram.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How a read was answered. Ordered from cheapest to dearest: a read that took two
/// lookups is counted under the dearer one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Path {
    /// From L1, no network.
    L1,
    /// From Redis (then kept in L1 when L1 is on).
    Redis,
    /// A miss in both tiers that read Postgres to fill them, and answered from that read.
    Fill,
    /// Postgres alone: the tiers could not answer (outside the window, bypassed, refused).
    Postgres,
}

impl Path {
    pub const ALL: [Path; 4] = [Path::L1, Path::Redis, Path::Fill, Path::Postgres];

    pub fn as_str(self) -> &'static str {
        match self {
            Path::L1 => "l1",
            Path::Redis => "redis",
            Path::Fill => "fill",
            Path::Postgres => "postgres",
        }
    }
}

/// Buckets per doubling of the latency.
const PER_OCTAVE: f64 = 4.0;
/// 1 µs to 2^27 µs (about 134 s); longer reads land in the last bucket.
const BUCKETS: usize = 27 * 4 + 1;

fn bucket_of(micros: u64) -> usize {
    if micros <= 1 {
        return 0;
    }
    ((micros as f64).log2() * PER_OCTAVE)
        .ceil()
        .min((BUCKETS - 1) as f64) as usize
}

/// The upper bound of a bucket, in microseconds.
fn upper_micros(bucket: usize) -> f64 {
    (bucket as f64 / PER_OCTAVE).exp2()
}

struct Histogram {
    buckets: [AtomicU64; BUCKETS],
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// The live histograms of every path.
#[derive(Default)]
pub struct PathLatency {
    paths: [Histogram; 4],
}

impl PathLatency {
    pub fn record(&self, path: Path, elapsed: Duration) {
        let micros = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
        self.paths[path as usize].buckets[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> PathSnapshot {
        PathSnapshot {
            counts: std::array::from_fn(|p| {
                std::array::from_fn(|b| self.paths[p].buckets[b].load(Ordering::Relaxed))
            }),
        }
    }
}

/// A copy of the histograms at one moment.
#[derive(Clone, Debug)]
pub struct PathSnapshot {
    counts: [[u64; BUCKETS]; 4],
}

impl Default for PathSnapshot {
    fn default() -> Self {
        PathSnapshot {
            counts: [[0; BUCKETS]; 4],
        }
    }
}

impl PathSnapshot {
    /// The reads between an earlier snapshot and this one.
    pub fn since(&self, before: &PathSnapshot) -> PathSnapshot {
        PathSnapshot {
            counts: std::array::from_fn(|p| {
                std::array::from_fn(|b| self.counts[p][b] - before.counts[p][b])
            }),
        }
    }

    pub fn count(&self, path: Path) -> u64 {
        self.counts[path as usize].iter().sum()
    }

    /// The latency at `quantile` (0..=1) in milliseconds, as the upper bound of its
    /// bucket; `None` without reads.
    pub fn quantile_ms(&self, path: Path, quantile: f64) -> Option<f64> {
        let counts = &self.counts[path as usize];
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((quantile * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (bucket, &n) in counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(upper_micros(bucket) / 1000.0);
            }
        }
        None
    }

    /// Reads per bucket as `(upper bound in ms, reads)`, empty buckets left out.
    pub fn buckets(&self, path: Path) -> Vec<(f64, u64)> {
        self.counts[path as usize]
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(b, &n)| (upper_micros(b) / 1000.0, n))
            .collect()
    }

    /// Per path: reads and p50, p99, p99.9 in ms (for `/v1/admin/cache`).
    pub fn summary(&self) -> serde_json::Value {
        let entries = Path::ALL.iter().map(|&p| {
            let q = |x| self.quantile_ms(p, x);
            (
                p.as_str().to_owned(),
                serde_json::json!({
                    "reads": self.count(p),
                    "p50_ms": q(0.5),
                    "p99_ms": q(0.99),
                    "p999_ms": q(0.999),
                }),
            )
        });
        serde_json::Value::Object(entries.collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_right_path_and_bucket() {
        let latency = PathLatency::default();
        for _ in 0..990 {
            latency.record(Path::L1, Duration::from_micros(20));
        }
        for _ in 0..10 {
            latency.record(Path::L1, Duration::from_millis(30));
        }
        latency.record(Path::Fill, Duration::from_millis(3));
        let s = latency.snapshot();
        let p50 = s.quantile_ms(Path::L1, 0.5).unwrap();
        assert!((0.020..0.024).contains(&p50), "{p50}");
        let p999 = s.quantile_ms(Path::L1, 0.999).unwrap();
        assert!((30.0..36.0).contains(&p999), "{p999}");
        assert_eq!(s.count(Path::Fill), 1);
        assert_eq!(s.count(Path::Redis), 0);
        assert_eq!(s.quantile_ms(Path::Postgres, 0.5), None);
        let later = latency.snapshot();
        latency.record(Path::Redis, Duration::from_micros(400));
        assert_eq!(latency.snapshot().since(&later).count(Path::Redis), 1);
        assert_eq!(latency.snapshot().since(&later).count(Path::L1), 0);
    }
}
