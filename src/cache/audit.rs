//! The consistency auditor, after Meta's Polaris: a sample of channel writes is checked
//! 1 s, 10 s and 60 s later. Each check compares the window that L1 and Redis would
//! answer from with the one Postgres gives now; the share of consistent checks per delay
//! is reported as "nines" (`/v1/admin/cache`, `/metrics`). A mismatch is logged with the
//! channel and the differing fields, and the channel is dropped everywhere through the
//! cache's own flush (L1 on every instance, Redis, and the dirty-channel path when Redis
//! fails), so the next read fills it from Postgres.
//!
//! A write that lands while a check runs could make a sound cache look behind: a
//! mismatch is therefore read again 200 ms later, and counts only when Postgres has not
//! moved on in between and the tier still differs; otherwise the check is "skipped".

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tracing::warn;

use super::sources::WindowSource;
use super::stats::bump;
use super::tiers::Tiers;
use super::HotCache;
use crate::domain::window::Window;
use crate::domain::{ChannelId, Message};

/// When a sampled write is checked.
pub const DELAYS: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(10),
    Duration::from_secs(60),
];
const DELAY_NAMES: [&str; 3] = ["1s", "10s", "60s"];

/// Most checks waiting at once; samples beyond it are dropped (and counted).
const MAX_PENDING: usize = 10_000;

/// How long a mismatch waits before it is read again.
const RECHECK: Duration = Duration::from_millis(200);

/// What one delay's checks found.
#[derive(Default)]
struct Counts {
    consistent: AtomicU64,
    inconsistent: AtomicU64,
    skipped: AtomicU64,
}

/// The auditor's state, owned by the cache.
pub struct Auditor {
    /// Writes sampled, as a share of 2^32 (0: the auditor is off).
    threshold: u64,
    percent: f64,
    rng: AtomicU64,
    queue: mpsc::Sender<ChannelId>,
    receiver: std::sync::Mutex<Option<mpsc::Receiver<ChannelId>>>,
    pending: AtomicUsize,
    sampled: AtomicU64,
    dropped: AtomicU64,
    counts: [Counts; 3],
    last: std::sync::Mutex<Option<Inconsistency>>,
}

/// The latest mismatch found, for `/v1/admin/cache`.
#[derive(Debug, Clone, Serialize)]
pub struct Inconsistency {
    pub channel: ChannelId,
    pub delay: &'static str,
    pub differences: Vec<String>,
    /// RFC 3339, when it was found.
    pub found_at: String,
}

/// One delay's figures.
#[derive(Debug, Clone, Serialize)]
pub struct DelayReport {
    pub delay: &'static str,
    pub checks: u64,
    pub consistent: u64,
    pub inconsistent: u64,
    /// Checks a concurrent write made inconclusive.
    pub skipped: u64,
    /// consistent / (consistent + inconsistent).
    pub consistent_ratio: Option<f64>,
    /// -log10(inconsistent share): 3 means 99.9 % consistent. With no inconsistent check
    /// it is log10(checks), a lower bound (`nines_at_least`).
    pub nines: Option<f64>,
    pub nines_at_least: bool,
}

/// The auditor's figures.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    pub sample_percent: f64,
    pub sampled_writes: u64,
    pub dropped_samples: u64,
    pub pending_checks: usize,
    pub delays: Vec<DelayReport>,
    /// The latest mismatch (the channel was dropped everywhere when it was found).
    pub last_inconsistency: Option<Inconsistency>,
}

impl Auditor {
    /// An auditor that samples `percent` of channel writes (0 to 100).
    pub fn new(percent: f64) -> Auditor {
        let (queue, receiver) = mpsc::channel(1024);
        let percent = percent.clamp(0.0, 100.0);
        Auditor {
            threshold: (percent / 100.0 * f64::from(u32::MAX)).round() as u64,
            percent,
            rng: AtomicU64::new(seed()),
            queue,
            receiver: std::sync::Mutex::new(Some(receiver)),
            pending: AtomicUsize::new(0),
            sampled: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            counts: Default::default(),
            last: std::sync::Mutex::new(None),
        }
    }

    /// Called after every channel write: queues a sample of them for checking.
    pub fn sample(&self, channel: ChannelId) {
        if self.threshold == 0 || self.next_random() > self.threshold {
            return;
        }
        bump(&self.sampled);
        if self.queue.try_send(channel).is_err() {
            bump(&self.dropped);
        }
    }

    /// A 32-bit random number (xorshift; sampling needs no more).
    fn next_random(&self) -> u64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        x >> 32
    }

    pub fn report(&self) -> AuditReport {
        let delays = self
            .counts
            .iter()
            .zip(DELAY_NAMES)
            .map(|(c, delay)| {
                let consistent = c.consistent.load(Ordering::Relaxed);
                let inconsistent = c.inconsistent.load(Ordering::Relaxed);
                let checks = consistent + inconsistent;
                let (nines, at_least) = match (checks, inconsistent) {
                    (0, _) => (None, false),
                    (n, 0) => (Some((n as f64).log10()), true),
                    (n, bad) => (Some(-(bad as f64 / n as f64).log10()), false),
                };
                DelayReport {
                    delay,
                    checks,
                    consistent,
                    inconsistent,
                    skipped: c.skipped.load(Ordering::Relaxed),
                    consistent_ratio: super::stats::ratio(consistent, inconsistent),
                    nines,
                    nines_at_least: at_least,
                }
            })
            .collect();
        AuditReport {
            sample_percent: self.percent,
            sampled_writes: self.sampled.load(Ordering::Relaxed),
            dropped_samples: self.dropped.load(Ordering::Relaxed),
            pending_checks: self.pending.load(Ordering::Relaxed),
            delays,
            last_inconsistency: self.last.lock().map(|l| l.clone()).unwrap_or(None),
        }
    }
}

fn seed() -> u64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) | 1
}

/// The verdict of one check.
enum Verdict {
    Consistent,
    Inconsistent(Vec<String>),
    Skipped,
}

/// Takes sampled writes and runs their checks at each delay, until aborted.
pub async fn run(cache: Arc<HotCache>) {
    let Some(mut samples) = cache.audit.receiver.lock().ok().and_then(|mut r| r.take()) else {
        return;
    };
    while let Some(channel) = samples.recv().await {
        for (index, delay) in DELAYS.into_iter().enumerate() {
            if cache.audit.pending.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING {
                cache.audit.pending.fetch_sub(1, Ordering::AcqRel);
                bump(&cache.audit.dropped);
                continue;
            }
            let cache = cache.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let verdict = audit_channel(&cache.tiers, channel).await;
                let counts = &cache.audit.counts[index];
                match verdict {
                    Verdict::Consistent => bump(&counts.consistent),
                    Verdict::Skipped => bump(&counts.skipped),
                    Verdict::Inconsistent(differences) => {
                        bump(&counts.inconsistent);
                        warn!(
                            channel = %channel,
                            delay = DELAY_NAMES[index],
                            differences = %differences.join("; "),
                            "audit: the cache differs from Postgres; dropping the channel everywhere"
                        );
                        if let Ok(mut last) = cache.audit.last.lock() {
                            *last = Some(Inconsistency {
                                channel,
                                delay: DELAY_NAMES[index],
                                differences,
                                found_at: chrono::Utc::now().to_rfc3339(),
                            });
                        }
                        cache.coherence.flush(Some(channel)).await;
                    }
                }
                cache.audit.pending.fetch_sub(1, Ordering::AcqRel);
            });
        }
    }
}

/// Compares what L1 and Redis hold for `channel` with Postgres.
async fn audit_channel(tiers: &Tiers, channel: ChannelId) -> Verdict {
    let Some(first) = audit_once(tiers, channel).await else {
        return Verdict::Skipped;
    };
    if first.1.is_empty() {
        return Verdict::Consistent;
    }
    tokio::time::sleep(RECHECK).await;
    match audit_once(tiers, channel).await {
        Some((seq, differences)) if seq == first.0 && !differences.is_empty() => {
            Verdict::Inconsistent(differences)
        }
        Some((_, differences)) if differences.is_empty() => Verdict::Consistent,
        _ => Verdict::Skipped,
    }
}

/// Postgres' seq for the channel and how each tier differs from it; `None` when a store
/// did not answer (nothing to judge).
async fn audit_once(tiers: &Tiers, channel: ChannelId) -> Option<(i64, Vec<String>)> {
    let source = WindowSource {
        channel,
        head: None,
    };
    let found = tiers.inspect(&source).await?;
    let truth = &found.postgres;
    let mut differences = Vec::new();
    for (tier, held) in [("l1", &found.l1), ("redis", &found.redis)] {
        if let Some(held) = held {
            compare(tier, &held.window, truth, &mut differences);
        }
    }
    Some((truth.seq(), differences))
}

/// Adds how `held` (a tier's window) differs from `truth` (Postgres') to `out`, over the
/// ids both cover.
fn compare(tier: &str, held: &Window, truth: &Window, out: &mut Vec<String>) {
    if held.seq() != truth.seq() {
        out.push(format!(
            "{tier}: last_seq {} (postgres {})",
            held.seq(),
            truth.seq()
        ));
    }
    let floor = |w: &Window| w.messages.last().map_or(i64::MAX, |m| m.id.0);
    let from = floor(held).max(floor(truth));
    let in_range = |w: &'_ Window| -> Vec<Message> {
        w.messages
            .iter()
            .filter(|m| m.id.0 >= from)
            .cloned()
            .collect()
    };
    let (held, truth) = (in_range(held), in_range(truth));
    let mut truth_by_id = truth
        .iter()
        .map(|m| (m.id, m))
        .collect::<std::collections::BTreeMap<_, _>>();
    for message in &held {
        let Some(right) = truth_by_id.remove(&message.id) else {
            out.push(format!(
                "{tier}: message {} is not in postgres",
                message.id.0
            ));
            continue;
        };
        let fields = [
            ("content", message.content != right.content),
            ("updated_at", message.updated_at != right.updated_at),
            ("deleted_at", message.deleted_at != right.deleted_at),
            ("seq", message.seq != right.seq),
            ("sender_id", message.sender_id != right.sender_id),
            ("reply_to_id", message.reply_to_id != right.reply_to_id),
        ];
        for (field, differs) in fields {
            if differs {
                out.push(format!("{tier}: message {} {field}", message.id.0));
            }
        }
    }
    for id in truth_by_id.keys() {
        out.push(format!("{tier}: message {} is missing", id.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_follows_the_percentage() {
        let all = Auditor::new(100.0);
        let none = Auditor::new(0.0);
        let some = Auditor::new(10.0);
        let channel = ChannelId(uuid::Uuid::nil());
        for _ in 0..1000 {
            all.sample(channel);
            none.sample(channel);
        }
        for _ in 0..10_000 {
            some.sample(channel);
        }
        // The queue holds 1,024; the rest are counted as dropped.
        assert_eq!(all.report().sampled_writes, 1000);
        assert_eq!(none.report().sampled_writes, 0);
        let share = some.report().sampled_writes as f64 / 10_000.0;
        assert!((0.08..0.12).contains(&share), "{share}");
    }

    #[test]
    fn nines_are_a_lower_bound_without_a_mismatch() {
        let auditor = Auditor::new(1.0);
        for _ in 0..1000 {
            bump(&auditor.counts[0].consistent);
        }
        let report = auditor.report();
        assert_eq!(report.delays[0].nines, Some(3.0));
        assert!(report.delays[0].nines_at_least);
        bump(&auditor.counts[0].inconsistent);
        let report = auditor.report();
        let nines = report.delays[0].nines.unwrap();
        assert!((nines - 3.0004).abs() < 0.001, "{nines}");
        assert!(!report.delays[0].nines_at_least);
        assert_eq!(report.delays[1].nines, None);
    }
}
