//! What the advisor answers: the predicted hit ratios at other L1 sizes and hot windows,
//! and the one-line recommendation drawn from them.

use serde::Serialize;

/// The predicted hit ratio at one L1 size.
#[derive(Debug, Clone, Serialize)]
pub struct L1Point {
    pub factor: f64,
    pub capacity_bytes: u64,
    /// Windows that fit, at today's average window weight.
    pub channels: u64,
    pub predicted_hit_ratio: Option<f64>,
}

/// The predicted tier hit ratio (in L1 and deep enough) for one hot window.
#[derive(Debug, Clone, Serialize)]
pub struct WindowPoint {
    pub window: u32,
    /// Windows of this size that fit in today's L1.
    pub channels: u64,
    pub predicted_hit_ratio: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Advice {
    /// The share of channels sampled now.
    pub sampling_rate: f64,
    pub tracked_channels: usize,
    pub reads_seen: u64,
    pub reads_sampled: u64,
    pub reads_dropped: u64,
    /// Today's L1 budget, and the average weight of a window entry in it (`None` while
    /// L1 holds no window: the advice then assumes 64 KiB).
    pub l1_capacity_bytes: u64,
    pub window_entry_bytes: Option<u64>,
    pub hot_window: usize,
    pub l1: Vec<L1Point>,
    pub windows: Vec<WindowPoint>,
    pub recommendation: String,
}

/// One line: what changing L1's size would do.
pub(super) fn recommend(l1: &[L1Point], sampled: u64) -> String {
    let at = |factor: f64| {
        l1.iter()
            .find(|p| p.factor == factor)
            .and_then(|p| p.predicted_hit_ratio)
    };
    let (Some(quarter), Some(half), Some(now), Some(double), Some(quad)) =
        (at(0.25), at(0.5), at(1.0), at(2.0), at(4.0))
    else {
        return "not enough reads yet: the advice needs channel reads to sample".to_owned();
    };
    let pct = |r: f64| format!("{:.1} %", r * 100.0);
    if sampled < 1000 {
        format!(
            "few reads sampled yet ({sampled}); for now: L1 at 1× predicts {} hits, at 2× {}",
            pct(now),
            pct(double)
        )
    } else if double - now >= 0.05 {
        format!(
            "grow L1 (--l1-capacity-bytes): 2× predicts {} hits against {} now, 4× {}",
            pct(double),
            pct(now),
            pct(quad)
        )
    } else if now - half < 0.01 {
        format!(
            "L1 could shrink: ½× predicts {} hits against {} now (¼×: {})",
            pct(half),
            pct(now),
            pct(quarter)
        )
    } else {
        format!(
            "L1 is about right: {} hits now, {} at 2×, {} at ½×",
            pct(now),
            pct(double),
            pct(half)
        )
    }
}
