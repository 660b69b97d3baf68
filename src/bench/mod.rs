//! `hotchan bench`: seeds a dataset, drives the same seeded workload against `--cache
//! off`, `redis` and `full` (and, over HTTP, a ceiling that answers one fixed page from
//! memory), and runs the hit-rate study. Writes `report.md`, `hitrate.csv` and
//! `hitrate.svg` into `--out-dir`.

mod contender;
mod dataset;
mod driver;
mod feeds;
pub mod hitrate;
mod overload;
mod report;
mod rng;
mod scale;
mod svg;
mod workload;
mod wrk;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::config::{CacheMode, Settings};
use contender::{contender_settings, run_ceiling, run_contender, wrk_seconds, Contest};
use dataset::{Dataset, Shape};
use report::{write_l1_table, write_plot, write_scenario, write_study};
use workload::Mix;

/// How the workload reaches hotchan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// HTTP over loopback, through the whole stack.
    Http,
    /// Calls into the service: no HTTP, no JSON parsing of requests.
    InProcess,
}

/// Settings of `hotchan bench` (the serve settings apply to every contender).
#[derive(Debug, Clone, Args)]
pub struct BenchSettings {
    #[command(flatten)]
    pub serve: Settings,
    /// Channels in the dataset.
    #[arg(long, default_value_t = 2000)]
    pub channels: usize,
    /// Members per channel.
    #[arg(long, default_value_t = 5)]
    pub members: usize,
    /// Messages seeded per channel.
    #[arg(long, default_value_t = 300)]
    pub messages: usize,
    /// Users in the pool members are drawn from.
    #[arg(long, default_value_t = 2000)]
    pub users: usize,
    /// Zipf exponent of channel popularity.
    #[arg(long, default_value_t = 1.1)]
    pub zipf: f64,
    /// Share of writes (posts) in the mixed workload.
    #[arg(long, default_value_t = 0.05)]
    pub write_ratio: f64,
    /// Measured requests per contender and scenario.
    #[arg(long, default_value_t = 20_000)]
    pub requests: usize,
    /// Unmeasured requests first, per contender and scenario: the caches start empty, and
    /// this brings them near their steady state.
    #[arg(long, default_value_t = 20_000)]
    pub warmup: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Seed of the workload: the same seed gives every contender the same sequence.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = Transport::Http)]
    pub transport: Transport,
    /// Reads in the simulated trace of the hit-rate study.
    #[arg(long, default_value_t = 300_000)]
    pub trace_reads: usize,
    /// A trace recorded by `serve --trace-file`, replayed through the L1 sweep too.
    #[arg(long)]
    pub replay: Option<std::path::PathBuf>,
    /// With `--replay`: only replay the trace (no dataset, no load), and print one JSON
    /// object with the hit ratios of an exact LRU and of moka at each
    /// `--replay-capacities`, for comparing with `/v1/admin/cache/advice`.
    #[arg(long, requires = "replay")]
    pub replay_only: bool,
    /// Cache sizes in channels for `--replay-only`, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [100usize, 1000, 10000])]
    pub replay_capacities: Vec<usize>,
    /// Where the report and the plot go.
    #[arg(long, default_value = "bench-results")]
    pub out_dir: std::path::PathBuf,
    /// Seconds of each wrk run over HTTP, beside the bench's own driver (0: no wrk; wrk
    /// runs only where it is installed).
    #[arg(long, default_value_t = 10)]
    pub wrk_seconds: u64,
    /// A run of a few seconds with a tiny dataset (CI uses it so the benchmark never rots).
    #[arg(long)]
    pub quick: bool,
    /// The scale profile instead: this many messages (`10m`, `100m`, at least `200k`),
    /// plain against partitioned, 1 and 32 clients, `off` and `full` (see `scale.rs`).
    /// Seeds databases named after `--database-url`'s with `_<size>_plain` and
    /// `_<size>_p<N>`; drop them when done. Never in CI.
    #[arg(long, value_parser = scale::parse_scale)]
    pub scale: Option<u64>,
    /// With `--scale`: drop each database once it is measured, so that only one is on
    /// disk at a time (a 100m database takes about 40 GB).
    #[arg(long)]
    pub drop_after: bool,
    /// With `--scale`: which layouts to seed and measure. `partitioned` alone measures a
    /// database that `hotchan migrate --partition-messages N` converted (rename the plain
    /// one to the `_p<N>` name first): faster than seeding it anew at 100m.
    #[arg(long, value_enum, default_value_t = scale::Layouts::Both)]
    pub scale_layouts: scale::Layouts,
    /// The activity feed scenario instead (`feeds.rs`): publishing at audiences of 10,
    /// 1,000 and 100,000 beside `COPY`, feed reads per cache mode, and a hot feed page
    /// against a hot channel page. Writes `feeds.md`.
    #[arg(long)]
    pub feeds: bool,
    /// The overload profile instead (`overload.rs`): goodput and latency of latest pages
    /// at 1× to 60× the saturating concurrency, admission control on and off. Writes
    /// `overload.md` and `overload.svg`.
    #[arg(long)]
    pub overload: bool,
}

pub async fn run(mut b: BenchSettings) -> anyhow::Result<()> {
    if let (true, Some(path)) = (b.replay_only, &b.replay) {
        return replay_only(path, &b.replay_capacities);
    }
    if let Some(messages) = b.scale {
        return scale::run(&b, messages).await;
    }
    if b.feeds {
        if b.quick {
            (b.requests, b.warmup) = (600, 200);
        }
        return feeds::run(&b).await;
    }
    if b.quick {
        (
            b.channels,
            b.messages,
            b.users,
            b.requests,
            b.warmup,
            b.trace_reads,
        ) = (50, 60, 100, 600, 200, 20_000);
        b.wrk_seconds = b.wrk_seconds.min(1);
    }
    let db = &b.serve.db;
    crate::postgres::ensure_database(&db.pg()).await?;
    crate::postgres::migrate(&db.pg()).await?;
    let shape = Shape {
        channels: b.channels,
        members_per_channel: b.members,
        messages_per_channel: b.messages,
        users: b.users,
        markers: dataset::Markers::Recent,
    };
    let data = dataset::seed(&db.pg(), shape)
        .await
        .context("seeding the dataset")?;
    std::fs::create_dir_all(&b.out_dir)
        .with_context(|| format!("--out-dir {}", b.out_dir.display()))?;
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    if b.overload {
        return overload::run(&b, &data, &run_id).await;
    }

    let mut report = String::new();
    let _ = writeln!(
        report,
        "# hotchan bench\n\n{} channels × {} members × {} messages; Zipf {}; {} measured requests after {} warm-up ones per contender; concurrency {}; transport {:?}; seed {}.\n",
        b.channels, b.members, b.messages, b.zipf, b.requests, b.warmup, b.concurrency, b.transport, b.seed
    );
    let scenarios = [
        ("latest pages", Mix::LATEST_ONLY),
        ("mixed", Mix::mixed(b.write_ratio)),
    ];
    for (index, (scenario, mix)) in scenarios.iter().enumerate() {
        let ops = workload::generate(&data, b.zipf, *mix, b.warmup + b.requests, b.seed);
        let (warm, measured) = ops.split_at(b.warmup);
        let (warm, measured) = (Arc::new(warm.to_vec()), Arc::new(measured.to_vec()));
        let mut contenders = Vec::new();
        for mode in [CacheMode::Off, CacheMode::Redis, CacheMode::Full] {
            let salt = (index * 3 + contenders.len()) as u64 + 1;
            let contender = run_contender(Contest {
                settings: contender_settings(&b.serve, mode, &format!("{run_id}.{index}")),
                transport: b.transport,
                concurrency: b.concurrency,
                label: format!("{:>7}", mode.as_str()),
                warm: &warm,
                measured: &measured,
                salt,
                wrk_seconds: wrk_seconds(&b),
                out_dir: &b.out_dir,
            })
            .await?;
            contenders.push(contender);
        }
        if b.transport == Transport::Http && index == 0 {
            contenders.push(run_ceiling(&b, &data, &measured).await?);
        }
        write_scenario(&mut report, scenario, &contenders);
    }

    let trace = study_trace(&b, &data);
    let points = hitrate::sweep(&trace, data.channels.len());
    let coverage = hitrate::window_coverage(&trace);
    write_study(&mut report, &b, &points, &coverage, trace.len());
    write_plot(&b, &points)?;
    if let Some(path) = &b.replay {
        let replayed = replay_trace(path)?;
        let channels = replayed
            .iter()
            .map(|a| a.channel)
            .max()
            .map_or(1, |m| m as usize + 1);
        let points = hitrate::sweep(&replayed, channels);
        let _ = writeln!(
            report,
            "\n### Replayed trace: {} ({} reads, {channels} channels)\n",
            path.display(),
            replayed.len()
        );
        write_l1_table(&mut report, &points);
    }
    std::fs::write(b.out_dir.join("report.md"), &report)?;
    println!("{report}");
    eprintln!("==> wrote {}", b.out_dir.join("report.md").display());
    Ok(())
}

/// The reads of a long workload as the study's trace (or a shorter one with --quick).
fn study_trace(b: &BenchSettings, data: &Dataset) -> Vec<hitrate::Access> {
    let index: HashMap<_, _> = data
        .channels
        .iter()
        .enumerate()
        .map(|(i, c)| (*c, i as u32))
        .collect();
    workload::generate(
        data,
        b.zipf,
        Mix::mixed(0.0),
        b.trace_reads,
        b.seed ^ 0x5eed,
    )
    .iter()
    .map(|op| hitrate::Access {
        channel: index[&op.channel()],
        depth: op.depth(),
    })
    .collect()
}

/// `--replay-only`: the trace's exact LRU and moka hit ratios at each capacity, as JSON.
fn replay_only(path: &std::path::Path, capacities: &[usize]) -> anyhow::Result<()> {
    let trace = replay_trace(path)?;
    let distances = hitrate::lru_distances(&trace);
    let points: Vec<serde_json::Value> = capacities
        .iter()
        .map(|&capacity| {
            let (lru, moka) = hitrate::replay_point(&trace, &distances, capacity.max(1));
            serde_json::json!({"capacity": capacity, "lru": lru, "moka": moka})
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({"reads": trace.len(), "points": points})
    );
    Ok(())
}

/// A trace file: one read a line, `<channel id> <depth>`; channels numbered as they come.
fn replay_trace(path: &std::path::Path) -> anyhow::Result<Vec<hitrate::Access>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("--replay {}", path.display()))?;
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut trace = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut words = line.split_whitespace();
        let channel = words.next().unwrap_or_default().to_owned();
        let depth = words
            .next()
            .and_then(|d| d.parse().ok())
            .unwrap_or(workload::PAGE_LIMIT);
        let next = ids.len() as u32;
        let channel = *ids.entry(channel).or_insert(next);
        trace.push(hitrate::Access { channel, depth });
    }
    Ok(trace)
}
