//! The scale profile, `hotchan bench --scale 10m` (or `100m`, or any count from 200k):
//! seeds that many messages twice, into a plain and a hash-partitioned `messages`, and
//! times every scenario with 1 and with 32 clients against `--cache off`, `redis` and
//! `full`, in process (the service's own latency, without HTTP). Run by hand; never in CI.
//!
//! Before the contenders of a scenario, an unmeasured `off` pass reads the same requests,
//! so that each contender finds the same Postgres pages in memory; they also take turns
//! at going first (the order rotates with the scenario and load). Without the pass, the
//! first one met whatever the page cache lacked: at 10M, a 0.8× that was the order's,
//! not the mode's.
//!
//! The dataset: 1,000 messages per channel, 20 members per channel, every user in 200
//! channels, read markers 90% in the newest 100 messages of their channel and 10% anywhere
//! in its history. Channels are drawn by Zipf popularity (`--zipf`).

use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::Context;

use super::contender::{contender_settings, run_contender, Contender, Contest};
use super::dataset::{self, Markers, Shape};
use super::workload::{self, Scenario};
use super::{BenchSettings, Transport};
use crate::config::{CacheMode, DatabaseSettings};
use crate::postgres::partition::{layout, Layout};

const MESSAGES_PER_CHANNEL: usize = 1000;
const MEMBERS_PER_CHANNEL: usize = 20;
const CHANNELS_PER_USER: usize = 200;
/// Smallest `--scale`: enough channels for every user to be in 200 of them.
const MIN_MESSAGES: u64 = 200_000;
/// The partitions compared with the plain table when `--message-partitions` is 0 (the
/// default).
const DEFAULT_PARTITIONS: u32 = 16;
/// (clients, warm-up requests, measured requests) of each run.
const LOADS: [(usize, usize, usize); 2] = [(1, 500, 2_000), (32, 5_000, 10_000)];

/// Parses `10m`, `250k` or a plain count of messages.
pub fn parse_scale(s: &str) -> Result<u64, String> {
    let (digits, unit) = match s.as_bytes().last() {
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1_000_000),
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1_000),
        _ => (s, 1),
    };
    let n = digits
        .parse::<u64>()
        .map_err(|_| format!("'{s}' is not a message count like 10m, 250k or 1000000"))?
        * unit;
    if n < MIN_MESSAGES {
        return Err(format!(
            "the scale profile needs at least {MIN_MESSAGES} messages"
        ));
    }
    Ok(n)
}

/// `10m`, `250k`, `1234`.
fn short(n: u64) -> String {
    match n {
        n if n % 1_000_000 == 0 => format!("{}m", n / 1_000_000),
        n if n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

/// Which layouts a scale run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Layouts {
    Both,
    Plain,
    Partitioned,
}

/// One timed run.
struct Row {
    layout: String,
    scenario: String,
    clients: usize,
    contender: Contender,
}

/// A database of its own for one layout, migrated and seeded.
async fn prepare(
    base: &DatabaseSettings,
    messages: u64,
    partitions: u32,
    shape: Shape,
) -> anyhow::Result<(DatabaseSettings, dataset::Dataset)> {
    let mut db = base.clone();
    db.message_partitions = partitions;
    let stem = base.database_url.0.get_dbname().unwrap_or("hotchan_bench");
    let kind = match partitions {
        0 => "plain".to_owned(),
        n => format!("p{n}"),
    };
    let name = format!("{stem}_{}_{kind}", short(messages));
    db.database_url.0.dbname(&name);
    crate::postgres::ensure_database(&db.pg()).await?;
    crate::postgres::migrate(&db.pg()).await?;
    let expected = match partitions {
        0 => Layout::Plain,
        n => Layout::Partitioned(n),
    };
    let found = layout(&db.pg()).await?;
    anyhow::ensure!(
        found == expected,
        "the database {name} holds messages as {found:?}, not {expected:?}: drop it and run again"
    );
    eprintln!("==> {name}: {} messages ({kind})", short(messages));
    let data = dataset::seed(&db.pg(), shape)
        .await
        .with_context(|| format!("seeding {name}"))?;
    Ok((db, data))
}

pub async fn run(b: &BenchSettings, messages: u64) -> anyhow::Result<()> {
    let channels = messages as usize / MESSAGES_PER_CHANNEL;
    let shape = Shape {
        channels,
        members_per_channel: MEMBERS_PER_CHANNEL,
        messages_per_channel: MESSAGES_PER_CHANNEL,
        users: channels * MEMBERS_PER_CHANNEL / CHANNELS_PER_USER,
        markers: Markers::MostlyRecent,
    };
    let partitions = match b.serve.db.message_partitions {
        0 => DEFAULT_PARTITIONS,
        n => n,
    };
    let scenarios = [
        Scenario::Latest,
        Scenario::DeepBefore,
        Scenario::After,
        Scenario::ChannelUnread,
        Scenario::UserUnread,
        Scenario::SyncUser,
        Scenario::Mix(b.write_ratio),
    ];
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let mut rows = Vec::new();
    let layouts: &[u32] = match b.scale_layouts {
        Layouts::Both => &[0, partitions],
        Layouts::Plain => &[0],
        Layouts::Partitioned => &[partitions],
    };
    for &parts in layouts {
        let (db, data) = prepare(&b.serve.db, messages, parts, shape).await?;
        let layout = match parts {
            0 => "plain".to_owned(),
            n => format!("{n} partitions"),
        };
        let mut serve = b.serve.clone();
        serve.db = db;
        for (s, scenario) in scenarios.iter().enumerate() {
            for (l, &(clients, warm, measured)) in LOADS.iter().enumerate() {
                let seed = b.seed ^ (s as u64 * 16 + l as u64);
                let ops = workload::scenario(&data, b.zipf, *scenario, warm + measured, seed);
                let (warm, measured) = ops.split_at(warm);
                let (warm, measured) = (Arc::new(warm.to_vec()), Arc::new(measured.to_vec()));
                let mut modes = [CacheMode::Off, CacheMode::Redis, CacheMode::Full];
                modes.rotate_left((s * LOADS.len() + l) % 3);
                // An unmeasured `off` pass over the same requests first: every contender
                // then finds the same pages in Postgres's and the kernel's caches, and the
                // first one is not charged for reading them from disk (the order effect of
                // earlier runs). The tiers still start empty: a cold start of the cache.
                run_contender(Contest {
                    settings: contender_settings(
                        &serve,
                        CacheMode::Off,
                        &format!("{run_id}.{parts}.{s}.{l}.prime"),
                    ),
                    transport: Transport::InProcess,
                    concurrency: clients,
                    label: format!(
                        "{layout}, {}, {clients} client(s), priming Postgres",
                        scenario.name()
                    ),
                    warm: &warm,
                    measured: &measured,
                    salt: 900 + (parts as u64 * 100 + s as u64 * 8 + l as u64 * 4),
                    wrk_seconds: 0,
                    out_dir: &b.out_dir,
                })
                .await?;
                for (m, mode) in modes.into_iter().enumerate() {
                    let contender = run_contender(Contest {
                        settings: contender_settings(
                            &serve,
                            mode,
                            &format!("{run_id}.{parts}.{s}.{l}"),
                        ),
                        transport: Transport::InProcess,
                        concurrency: clients,
                        label: format!(
                            "{layout}, {}, {clients} client(s), {}",
                            scenario.name(),
                            mode.as_str()
                        ),
                        warm: &warm,
                        measured: &measured,
                        salt: 1_000 + (parts as u64 * 100 + s as u64 * 8 + l as u64 * 4 + m as u64),
                        wrk_seconds: 0,
                        out_dir: &b.out_dir,
                    })
                    .await?;
                    rows.push(Row {
                        layout: layout.clone(),
                        scenario: scenario.name(),
                        clients,
                        contender,
                    });
                }
            }
        }
        if b.drop_after {
            crate::postgres::drop_database(&serve.db.pg()).await?;
        }
    }
    let report = write_report(b, messages, shape, &rows);
    std::fs::create_dir_all(&b.out_dir)?;
    let path = b.out_dir.join(format!("scale-{}.md", short(messages)));
    std::fs::write(&path, &report)?;
    println!("{report}");
    eprintln!("==> wrote {}", path.display());
    Ok(())
}

fn find<'a>(
    rows: &'a [Row],
    layout: &str,
    scenario: &str,
    clients: usize,
    mode: &str,
) -> Option<&'a Row> {
    rows.iter().find(|r| {
        r.layout == layout
            && r.scenario == scenario
            && r.clients == clients
            && r.contender.name == mode
    })
}

fn write_report(b: &BenchSettings, messages: u64, shape: Shape, rows: &[Row]) -> String {
    let mut report = String::new();
    let _ = writeln!(
        report,
        "# hotchan bench --scale {}\n\n{} channels × {} messages ({} in all), {} members per channel, {} users each in {} channels; read markers 90% in the newest 100 messages, 10% anywhere. Zipf {} over channels; in process (no HTTP); per run: {}. Seed {}.\n",
        short(messages),
        shape.channels,
        shape.messages_per_channel,
        messages,
        shape.members_per_channel,
        shape.users,
        CHANNELS_PER_USER,
        b.zipf,
        LOADS
            .iter()
            .map(|(c, w, m)| format!("{c} client(s), {w} warm-up then {m} measured requests"))
            .collect::<Vec<_>>()
            .join("; "),
        b.seed
    );
    let mut layouts: Vec<&str> = rows.iter().map(|r| r.layout.as_str()).collect();
    layouts.dedup();
    let mut scenarios: Vec<&str> = rows.iter().map(|r| r.scenario.as_str()).collect();
    scenarios.dedup();
    scenarios.sort();
    scenarios.dedup();
    for layout in &layouts {
        let _ = writeln!(report, "## {layout}\n");
        let _ = writeln!(report, "| scenario | clients | mode | req/s | p50 ms | p99 ms | p99.9 ms | errors | Postgres reads per read |");
        let _ = writeln!(report, "|---|---:|---|---:|---:|---:|---:|---:|---:|");
        for r in rows.iter().filter(|r| r.layout == *layout) {
            let c = &r.contender;
            let _ = writeln!(
                report,
                "| {} | {} | {} | {} | {:.3} |",
                r.scenario,
                r.clients,
                c.name,
                c.run.cells(),
                c.stats.postgres_reads as f64 / c.reads.max(1) as f64,
            );
        }
        let _ = writeln!(report);
    }
    for layout in &layouts {
        let _ = writeln!(
            report,
            "## {layout}: the cache against `off`\n\nThe standing rule: on every path, a cache mode is at least as fast as `off`. req/s ratio ≥ 1 and p99 ratio ≤ 1 keep it.\n"
        );
        let _ = writeln!(
            report,
            "| scenario | clients | redis/off req/s | redis/off p99 | full/off req/s | full/off p99 |"
        );
        let _ = writeln!(report, "|---|---:|---:|---:|---:|---:|");
        for scenario in &scenarios {
            for (clients, ..) in LOADS {
                let run =
                    |mode| find(rows, layout, scenario, clients, mode).map(|r| &r.contender.run);
                let (Some(off), Some(redis), Some(full)) = (run("off"), run("redis"), run("full"))
                else {
                    continue;
                };
                let _ = writeln!(
                    report,
                    "| {scenario} | {clients} | {:.2} | {:.2} | {:.2} | {:.2} |",
                    redis.throughput() / off.throughput(),
                    redis.ms(0.99) / off.ms(0.99),
                    full.throughput() / off.throughput(),
                    full.ms(0.99) / off.ms(0.99),
                );
            }
        }
        let _ = writeln!(report);
    }
    if let [plain, partitioned] = layouts[..] {
        let _ = writeln!(
            report,
            "## {partitioned} against plain\n\nRatios partitioned / plain: req/s above 1 and p99 below 1 favour partitions.\n"
        );
        let _ = writeln!(
            report,
            "| scenario | clients | mode | req/s ratio | p99 ratio |"
        );
        let _ = writeln!(report, "|---|---:|---|---:|---:|");
        for scenario in &scenarios {
            for (clients, ..) in LOADS {
                for mode in ["off", "redis", "full"] {
                    let (Some(a), Some(p)) = (
                        find(rows, plain, scenario, clients, mode),
                        find(rows, partitioned, scenario, clients, mode),
                    ) else {
                        continue;
                    };
                    let (a, p) = (&a.contender.run, &p.contender.run);
                    let _ = writeln!(
                        report,
                        "| {scenario} | {clients} | {mode} | {:.2} | {:.2} |",
                        p.throughput() / a.throughput(),
                        p.ms(0.99) / a.ms(0.99)
                    );
                }
            }
        }
    }
    report
}
