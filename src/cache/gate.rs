//! The standing rule, kept while serving: on every kind of read, the cache is at least as
//! fast as Postgres alone (`--cache off`).
//!
//! Each kind of read is split, request by request, into two groups: one asks the tiers
//! (and Postgres when they cannot answer), the other goes straight to Postgres, as
//! `--cache off` would, unless L1 already holds the answer: a hit costs nothing, and is
//! counted in neither group. Most reads take the route that is cheaper; one in
//! [`MINORITY_CLOSE`] (or [`MINORITY_CLEAR`] while the winner is at least twice as cheap)
//! takes the other, so both keep being measured, and the tiers keep warming while
//! Postgres is the faster route. Every [`EPOCH`] the two groups' mean cost is compared
//! (smoothed over epochs) and the favoured route changes when the other one has been
//! cheaper by [`MARGIN`] at the end of [`STRIKES`] epochs in a row.
//!
//! A read's cost is its own latency. Background fills are charged to the tiers of the
//! kind of read that queued them (a task-local carries the kind down to the queue): a
//! fill costs the machine as much as a read, and on a cold start it is the fills, not the
//! reads, that make the cache dearer than Postgres.
//!
//! Both routes answer alike: Postgres is the source of truth, so a read sent straight to
//! it is never staler than one the tiers answer. `--cache-gate off` sends every read to
//! the tiers (tests of the tiers' own behaviour use that).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the two routes of a kind are compared: short enough to judge within the
/// first second of a cold start, long enough for a few dozen reads of the minority route.
pub const EPOCH: Duration = Duration::from_millis(100);
/// One read in this many takes the other route, while the two are close.
pub const MINORITY_CLOSE: u64 = 32;
/// One read in this many takes the other route, while the favoured one costs at most
/// half as much: fewer than 1% of reads, so the slower route never sets the p99.
pub const MINORITY_CLEAR: u64 = 128;
/// The favoured route changes when the other costs this much less (0.1: 10%) ...
pub const MARGIN: f64 = 0.1;
/// ... at the end of this many epochs in a row. A cold start costs the tiers most in its
/// first epoch (every read misses, every fill is charged), and a hot kind of read warms
/// within a few: one bad epoch must not send it to Postgres, where it would warm only
/// through the few reads left on the tiers.
pub const STRIKES: u32 = 3;
/// Reads of each route an epoch needs before it counts; until then it keeps gathering.
const MIN_SAMPLES: u64 = 8;
/// Weight of the newest epoch in the smoothed costs.
const SMOOTHING: f64 = 0.5;

/// The kinds of reads judged apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    LatestPage,
    CursorPage,
    Channel,
    Members,
    Unread,
    Message,
    FeedPage,
    FeedUnseen,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::LatestPage,
        Kind::CursorPage,
        Kind::Channel,
        Kind::Members,
        Kind::Unread,
        Kind::Message,
        Kind::FeedPage,
        Kind::FeedUnseen,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::LatestPage => "latest_page",
            Kind::CursorPage => "cursor_page",
            Kind::Channel => "channel",
            Kind::Members => "members",
            Kind::Unread => "unread",
            Kind::Message => "message",
            Kind::FeedPage => "feed_page",
            Kind::FeedUnseen => "feed_unseen",
        }
    }
}

/// Where one read goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// The tiers, then Postgres when they cannot answer.
    Tiers,
    /// Postgres alone.
    Postgres,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Tiers => "tiers",
            Route::Postgres => "postgres",
        }
    }

    fn other(self) -> Route {
        match self {
            Route::Tiers => Route::Postgres,
            Route::Postgres => Route::Tiers,
        }
    }
}

tokio::task_local! {
    /// The kind of read a task is serving, for charging the fills it queues.
    static SERVING: Kind;
}

/// Runs `work` as part of a read of `kind`: fills it queues are charged to that kind.
pub async fn serving<F: Future>(kind: Kind, work: F) -> F::Output {
    SERVING.scope(kind, work).await
}

/// The kind of read the current task is serving, if any.
pub fn current() -> Option<Kind> {
    SERVING.try_with(|k| *k).ok()
}

/// One kind's judge.
struct Judge {
    reads: AtomicU64,
    /// Postgres alone is the favoured route.
    postgres_favoured: AtomicBool,
    /// One read in this many takes the other route.
    minority: AtomicU64,
    /// Per route: microseconds and reads in the current epoch.
    micros: [AtomicU64; 2],
    counts: [AtomicU64; 2],
    /// Milliseconds since the gate started, when the current epoch began.
    epoch_ms: AtomicU64,
    /// Milliseconds since the gate started, when Postgres last became favoured.
    postgres_since_ms: AtomicU64,
    costs: Mutex<Costs>,
}

/// The smoothed mean cost of each route, in microseconds.
#[derive(Clone, Copy, Debug, Default)]
struct Costs {
    tiers: Option<f64>,
    postgres: Option<f64>,
    switches: u64,
    /// Epochs in a row at whose end the other route was cheaper by [`MARGIN`].
    strikes: u32,
}

impl Default for Judge {
    fn default() -> Self {
        Judge {
            reads: AtomicU64::new(0),
            postgres_favoured: AtomicBool::new(false),
            minority: AtomicU64::new(MINORITY_CLOSE),
            micros: [AtomicU64::new(0), AtomicU64::new(0)],
            counts: [AtomicU64::new(0), AtomicU64::new(0)],
            epoch_ms: AtomicU64::new(0),
            postgres_since_ms: AtomicU64::new(0),
            costs: Mutex::new(Costs::default()),
        }
    }
}

fn slot(route: Route) -> usize {
    match route {
        Route::Tiers => 0,
        Route::Postgres => 1,
    }
}

/// How one kind stands, for `/v1/admin/cache` and `/metrics`.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Standing {
    pub kind: &'static str,
    /// The route most reads take.
    pub favoured: &'static str,
    /// Smoothed mean cost of a read by each route, in microseconds (`None`: not measured yet).
    pub tiers_micros: Option<f64>,
    pub postgres_micros: Option<f64>,
    /// One read in this many takes the other route.
    pub minority: u64,
    /// Times the favoured route changed.
    pub switches: u64,
}

pub struct Gate {
    enabled: bool,
    started: Instant,
    judges: [Judge; Kind::ALL.len()],
}

impl Gate {
    /// A gate that judges when `enabled`; otherwise every read goes to the tiers.
    pub fn new(enabled: bool) -> Gate {
        Gate {
            enabled,
            started: Instant::now(),
            judges: Default::default(),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    fn judge(&self, kind: Kind) -> &Judge {
        &self.judges[kind as usize]
    }

    /// The route of the next read of `kind`.
    pub fn route(&self, kind: Kind) -> Route {
        if !self.enabled {
            return Route::Tiers;
        }
        let judge = self.judge(kind);
        let n = judge.reads.fetch_add(1, Ordering::Relaxed);
        let favoured = if judge.postgres_favoured.load(Ordering::Relaxed) {
            Route::Postgres
        } else {
            Route::Tiers
        };
        // The last of every `minority` reads, so the first read takes the favoured route.
        let minority = judge.minority.load(Ordering::Relaxed);
        if n % minority == minority - 1 {
            favoured.other()
        } else {
            favoured
        }
    }

    /// Records a read of `kind` that took `route` and `elapsed`, ending at `now`.
    pub fn record(&self, kind: Kind, route: Route, elapsed: Duration, now: Instant) {
        self.record_at(kind, route, elapsed, now);
    }

    /// Charges the tiers of `kind` with work done apart from any read (a fill).
    pub fn charge(&self, kind: Kind, elapsed: Duration) {
        if self.enabled {
            let judge = self.judge(kind);
            judge.micros[0].fetch_add(micros(elapsed), Ordering::Relaxed);
        }
    }

    fn record_at(&self, kind: Kind, route: Route, elapsed: Duration, now: Instant) {
        if !self.enabled {
            return;
        }
        let judge = self.judge(kind);
        judge.micros[slot(route)].fetch_add(micros(elapsed), Ordering::Relaxed);
        judge.counts[slot(route)].fetch_add(1, Ordering::Relaxed);
        let now_ms = now.saturating_duration_since(self.started).as_millis() as u64;
        if now_ms.saturating_sub(judge.epoch_ms.load(Ordering::Relaxed)) >= EPOCH.as_millis() as u64
            && judge
                .counts
                .iter()
                .all(|c| c.load(Ordering::Relaxed) >= MIN_SAMPLES)
        {
            judge.close_epoch(now_ms);
        }
    }

    /// Whether a fill queued at `queued` by a read of `kind` is still worth running: not
    /// when Postgres became favoured after it was queued. The fills a cold start queued
    /// before the gate judged would otherwise run on for seconds beside the reads the
    /// gate now sends to Postgres; the reads still sent to the tiers queue new ones.
    pub fn fill_wanted(&self, kind: Kind, queued: Instant) -> bool {
        let judge = self.judge(kind);
        if !self.enabled || !judge.postgres_favoured.load(Ordering::Relaxed) {
            return true;
        }
        let queued_ms = queued.saturating_duration_since(self.started).as_millis() as u64;
        queued_ms >= judge.postgres_since_ms.load(Ordering::Relaxed)
    }

    pub fn standings(&self) -> Vec<Standing> {
        Kind::ALL
            .iter()
            .map(|&kind| {
                let judge = self.judge(kind);
                let costs = *judge.costs.lock().unwrap_or_else(|e| e.into_inner());
                Standing {
                    kind: kind.as_str(),
                    favoured: if !self.enabled || !judge.postgres_favoured.load(Ordering::Relaxed) {
                        Route::Tiers.as_str()
                    } else {
                        Route::Postgres.as_str()
                    },
                    tiers_micros: costs.tiers.map(round),
                    postgres_micros: costs.postgres.map(round),
                    minority: judge.minority.load(Ordering::Relaxed),
                    switches: costs.switches,
                }
            })
            .collect()
    }
}

impl Judge {
    /// Ends the epoch: folds its means into the smoothed costs and picks the route.
    fn close_epoch(&self, now_ms: u64) {
        let Ok(mut costs) = self.costs.try_lock() else {
            return; // another read is closing it
        };
        if now_ms.saturating_sub(self.epoch_ms.load(Ordering::Relaxed)) < EPOCH.as_millis() as u64 {
            return;
        }
        self.epoch_ms.store(now_ms, Ordering::Relaxed);
        let mean = |route: Route| {
            let count = self.counts[slot(route)].swap(0, Ordering::Relaxed);
            let micros = self.micros[slot(route)].swap(0, Ordering::Relaxed);
            micros as f64 / count.max(1) as f64
        };
        let smooth = |old: Option<f64>, new: f64| {
            Some(old.map_or(new, |old| old * (1.0 - SMOOTHING) + new * SMOOTHING))
        };
        costs.tiers = smooth(costs.tiers, mean(Route::Tiers));
        costs.postgres = smooth(costs.postgres, mean(Route::Postgres));
        let (Some(tiers), Some(postgres)) = (costs.tiers, costs.postgres) else {
            return;
        };
        let postgres_favoured = self.postgres_favoured.load(Ordering::Relaxed);
        let other_cheaper = if postgres_favoured {
            tiers < postgres * (1.0 - MARGIN)
        } else {
            postgres < tiers * (1.0 - MARGIN)
        };
        costs.strikes = if other_cheaper { costs.strikes + 1 } else { 0 };
        let switch = costs.strikes >= STRIKES;
        let postgres_favoured = postgres_favoured != switch;
        if switch {
            costs.switches += 1;
            costs.strikes = 0;
            if postgres_favoured {
                self.postgres_since_ms.store(now_ms, Ordering::Relaxed);
            }
            self.postgres_favoured
                .store(postgres_favoured, Ordering::Relaxed);
        }
        let (winner, loser) = if postgres_favoured {
            (postgres, tiers)
        } else {
            (tiers, postgres)
        };
        let minority = if winner * 2.0 <= loser {
            MINORITY_CLEAR
        } else {
            MINORITY_CLOSE
        };
        self.minority.store(minority, Ordering::Relaxed);
    }
}

fn micros(elapsed: Duration) -> u64 {
    elapsed.as_micros().min(u128::from(u64::MAX)) as u64
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `reads` reads through the gate at `at`, each costing what its route costs.
    fn serve(gate: &Gate, at: Instant, reads: u64, tiers: u64, postgres: u64) -> [u64; 2] {
        let mut taken = [0; 2];
        for _ in 0..reads {
            let route = gate.route(Kind::LatestPage);
            taken[slot(route)] += 1;
            let cost = match route {
                Route::Tiers => tiers,
                Route::Postgres => postgres,
            };
            gate.record_at(Kind::LatestPage, route, Duration::from_micros(cost), at);
        }
        taken
    }

    #[test]
    fn the_cheaper_route_takes_most_reads_and_the_other_keeps_a_few() {
        let gate = Gate::new(true);
        let t0 = gate.started;
        let second = |n| t0 + EPOCH * n;
        // The tiers start favoured, with one read in 32 sent to Postgres.
        let taken = serve(&gate, t0, 100 * MINORITY_CLOSE, 900, 300);
        assert_eq!(taken, [100 * (MINORITY_CLOSE - 1), 100]);
        // The tiers are found 3× dearer: Postgres takes over after STRIKES epochs.
        for epoch in 1..STRIKES {
            serve(&gate, second(epoch), MINORITY_CLOSE * MIN_SAMPLES, 900, 300);
            assert_eq!(gate.standings()[0].favoured, "tiers", "epoch {epoch}");
        }
        serve(&gate, second(STRIKES), 1, 900, 300);
        assert_eq!(gate.standings()[0].favoured, "postgres");
        let taken = serve(&gate, second(STRIKES), 100 * MINORITY_CLEAR, 900, 300);
        assert_eq!(
            taken,
            [100, 100 * (MINORITY_CLEAR - 1)],
            "a clear winner leaves one read in 128"
        );
        // Fills queued before the switch are not worth running; those queued after are.
        assert!(!gate.fill_wanted(Kind::LatestPage, t0));
        assert!(gate.fill_wanted(Kind::LatestPage, second(STRIKES)));
        assert!(
            gate.fill_wanted(Kind::Unread, t0),
            "other kinds are not judged"
        );
        // Fills charged to the tiers count against them.
        gate.charge(Kind::LatestPage, Duration::from_secs(1));
        // The tiers warm up and become cheaper: they take over again, once the smoothed
        // cost crosses the margin.
        let mut epoch = STRIKES + 1;
        while gate.standings()[0].favoured == "postgres" {
            assert!(epoch < STRIKES + 12, "the tiers never took over");
            serve(&gate, second(epoch), 10 * MINORITY_CLEAR, 50, 300);
            epoch += 1;
        }
        assert!(gate.standings()[0].switches == 2);
        // Costs within the margin of each other change nothing.
        let switches = gate.standings()[0].switches;
        for e in epoch..epoch + 5 {
            serve(&gate, second(e), 10 * MINORITY_CLOSE, 300, 290);
        }
        assert_eq!(gate.standings()[0].switches, switches);
        assert_eq!(gate.standings()[0].favoured, "tiers");
    }

    #[test]
    fn an_epoch_waits_for_enough_reads_of_both_routes() {
        let gate = Gate::new(true);
        let t0 = gate.started;
        serve(&gate, t0 + EPOCH * 3, MINORITY_CLOSE, 900, 300);
        assert_eq!(
            gate.standings()[0].tiers_micros,
            None,
            "one Postgres read is not enough"
        );
        serve(
            &gate,
            t0 + EPOCH * 3,
            (MIN_SAMPLES - 1) * MINORITY_CLOSE,
            900,
            300,
        );
        assert!(
            gate.standings()[0].tiers_micros.is_some(),
            "the epoch counted"
        );
    }

    #[test]
    fn a_closed_gate_sends_everything_to_the_tiers() {
        let gate = Gate::new(false);
        let taken = serve(&gate, gate.started + EPOCH * 5, 1000, 900, 300);
        assert_eq!(taken, [1000, 0]);
        assert_eq!(gate.standings()[0].favoured, "tiers");
    }
}
