//! `hotchan bench`: seeds a dataset, drives the same seeded workload against `--cache
//! off`, `redis` and `full` (and, over HTTP, a ceiling that answers one fixed page from
//! memory), and runs the hit-rate study. Writes `report.md`, `hitrate.csv` and
//! `hitrate.svg` into `--out-dir`.

mod dataset;
mod driver;
pub mod hitrate;
mod rng;
mod scale;
mod svg;
mod workload;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::app::Application;
use crate::cache::paths::{Path, PathSnapshot};
use crate::cache::stats::{ratio, StatsSnapshot};
use crate::config::{CacheMode, Settings};
use crate::domain::{Cursor, PageRequest};
use dataset::{Dataset, Shape};
use driver::{Run, Target};
use workload::{Mix, Op};

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
    /// Where the report and the plot go.
    #[arg(long, default_value = "bench-results")]
    pub out_dir: std::path::PathBuf,
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
}

struct Contender {
    name: String,
    run: Run,
    stats: StatsSnapshot,
    /// Read latency by the path that answered, measured inside the contender.
    latency: PathSnapshot,
    reads: u64,
}

pub async fn run(mut b: BenchSettings) -> anyhow::Result<()> {
    if let Some(messages) = b.scale {
        return scale::run(&b, messages).await;
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
    }
    let db = &b.serve.db;
    crate::postgres::ensure_database(db).await?;
    crate::postgres::migrate(db).await?;
    let (client, connection) = crate::postgres::connect_config(db)
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(connection);
    let shape = Shape {
        channels: b.channels,
        members_per_channel: b.members,
        messages_per_channel: b.messages,
        users: b.users,
        markers: dataset::Markers::Recent,
    };
    let data = dataset::seed(&client, shape)
        .await
        .context("seeding the dataset")?;
    std::fs::create_dir_all(&b.out_dir)
        .with_context(|| format!("--out-dir {}", b.out_dir.display()))?;
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();

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

/// The serve settings of one contender: its cache mode, and a Redis prefix of its own
/// (`run` names the run and scenario), on port 0.
fn contender_settings(serve: &Settings, mode: CacheMode, run: &str) -> Settings {
    let mut settings = serve.clone();
    settings.cache = mode;
    settings.redis_prefix = format!("{}.bench.{run}.{}", serve.redis_prefix, mode.as_str());
    settings.listen = "127.0.0.1:0".parse().expect("a valid address");
    settings
}

/// One contender: an instance built from `settings`, warmed with `warm`, then measured.
struct Contest<'a> {
    settings: Settings,
    transport: Transport,
    concurrency: usize,
    /// Names the progress bars.
    label: String,
    warm: &'a Arc<Vec<Op>>,
    measured: &'a Arc<Vec<Op>>,
    /// Makes this run's posts new messages.
    salt: u64,
}

async fn run_contender(c: Contest<'_>) -> anyhow::Result<Contender> {
    let mode = c.settings.cache;
    let (warm, measured, salt) = (c.warm, c.measured, c.salt);
    let reads = measured.iter().filter(|op| op.is_read()).count() as u64;
    let app = Application::build(c.settings).await?;
    let redis = crate::redis::Redis::connect(app.redis_settings())?;
    let service = app.service();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut idle = None;
    let (target, server) = match c.transport {
        Transport::InProcess => {
            idle = Some(app);
            (Target::InProcess(service.clone()), None)
        }
        Transport::Http => {
            let base = match app.local_addr() {
                crate::config::ListenAddr::Tcp(addr) => format!("http://{addr}"),
                crate::config::ListenAddr::Unix(_) => unreachable!("the bench listens on TCP"),
            };
            let server = tokio::spawn(app.run_until(async {
                let _ = stop_rx.await;
            }));
            (
                Target::Http {
                    client: http_client(c.concurrency),
                    base,
                },
                Some(server),
            )
        }
    };
    if mode == CacheMode::Full {
        // L1 serves once the instance hears its own heartbeat.
        for _ in 0..100 {
            if !service.cache().l1().is_bypassed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let label = c.label;
    driver::run(
        &target,
        warm.clone(),
        c.concurrency,
        &format!("{label} warm-up "),
        salt,
    )
    .await;
    let before = service.cache().stats().snapshot();
    let latency_before = service.cache().latency().snapshot();
    let run = driver::run(
        &target,
        measured.clone(),
        c.concurrency,
        &format!("{label} measured"),
        salt,
    )
    .await;
    let stats = service.cache().stats().snapshot().since(&before);
    let latency = service.cache().latency().snapshot().since(&latency_before);
    let _ = stop_tx.send(());
    if let Some(server) = server {
        server.await??;
    }
    if let Some(app) = idle {
        app.close().await;
    }
    if mode != CacheMode::Off {
        let _ = redis.delete_prefix().await;
    }
    redis.close().await;
    Ok(Contender {
        name: mode.as_str().into(),
        run,
        stats,
        latency,
        reads,
    })
}

fn http_client(concurrency: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a plain HTTP client builds")
}

/// The same HTTP stack (axum on hyper, loopback) answering one pre-encoded 50-message
/// page from memory: what no cache can beat.
async fn run_ceiling(
    b: &BenchSettings,
    data: &Dataset,
    measured: &Arc<Vec<Op>>,
) -> anyhow::Result<Contender> {
    let db = crate::postgres::Db::connect(&b.serve.db).await?;
    let request = PageRequest {
        limit: workload::PAGE_LIMIT,
        cursor: Cursor::Latest,
    };
    let page = db
        .load_page(data.channels[0], request)
        .await?
        .context("the first bench channel exists")?;
    let body = bytes::Bytes::from(serde_json::to_vec(&page)?);
    let router = axum::Router::new().route(
        "/page",
        axum::routing::get(move || {
            let body = body.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/page", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let target = Target::Ceiling {
        client: http_client(b.concurrency),
        url,
    };
    driver::run(
        &target,
        measured.clone(),
        b.concurrency,
        "ceiling measured",
        0,
    )
    .await;
    let run = driver::run(
        &target,
        measured.clone(),
        b.concurrency,
        "ceiling measured",
        0,
    )
    .await;
    server.abort();
    db.close();
    Ok(Contender {
        name: "ceiling".into(),
        run,
        stats: StatsSnapshot::default(),
        latency: PathSnapshot::default(),
        reads: measured.len() as u64,
    })
}

fn percent(r: Option<f64>) -> String {
    r.map_or("–".into(), |r| format!("{:.1}%", r * 100.0))
}

fn write_scenario(report: &mut String, scenario: &str, contenders: &[Contender]) {
    let _ = writeln!(report, "## Scenario: {scenario}\n");
    let _ = writeln!(report, "| contender | req/s | p50 ms | p99 ms | p99.9 ms | errors | L1 hit | Redis hit | Postgres reads per read |");
    let _ = writeln!(report, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for c in contenders {
        let s = &c.stats;
        let pg = if c.name == "ceiling" {
            "–".into()
        } else {
            format!("{:.3}", s.postgres_reads as f64 / c.reads.max(1) as f64)
        };
        let _ = writeln!(
            report,
            "| {} | {} | {} | {} | {} |",
            c.name,
            c.run.cells(),
            percent(ratio(s.l1_hits, s.l1_misses)),
            percent(ratio(s.l2_hits, s.l2_misses)),
            pg
        );
    }
    let by: HashMap<&str, &Contender> = contenders.iter().map(|c| (c.name.as_str(), c)).collect();
    let rate = |a: &str, b: &str| Some(by.get(a)?.run.throughput() / by.get(b)?.run.throughput());
    let p99 = |a: &str, b: &str| Some(by.get(a)?.run.ms(0.99) / by.get(b)?.run.ms(0.99));
    let fmt = |r: Option<f64>| r.map_or("–".into(), |r| format!("{r:.2}×"));
    let _ = writeln!(
        report,
        "\nThroughput full/off {}, redis/off {}, full/ceiling {}; p99 full/off {}.\n",
        fmt(rate("full", "off")),
        fmt(rate("redis", "off")),
        fmt(rate("full", "ceiling")),
        fmt(p99("full", "off"))
    );
    write_paths(report, contenders);
}

/// Per contender, the reads each path answered and their latency, measured inside it.
fn write_paths(report: &mut String, contenders: &[Contender]) {
    let _ = writeln!(report, "Reads by the path that answered them (timed inside hotchan, from the service call to its answer):\n");
    let _ = writeln!(
        report,
        "| contender | path | reads | share | p50 ms | p99 ms | p99.9 ms |"
    );
    let _ = writeln!(report, "|---|---|---:|---:|---:|---:|---:|");
    for c in contenders.iter().filter(|c| c.name != "ceiling") {
        let total: u64 = Path::ALL.iter().map(|&p| c.latency.count(p)).sum();
        for path in Path::ALL {
            let n = c.latency.count(path);
            if n == 0 {
                continue;
            }
            let q = |x| {
                c.latency
                    .quantile_ms(path, x)
                    .map_or("–".into(), |v| format!("{v:.3}"))
            };
            let _ = writeln!(
                report,
                "| {} | {} | {n} | {:.1}% | {} | {} | {} |",
                c.name,
                path.as_str(),
                n as f64 * 100.0 / total.max(1) as f64,
                q(0.5),
                q(0.99),
                q(0.999)
            );
        }
    }
    let _ = writeln!(report);
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

fn write_l1_table(report: &mut String, points: &[hitrate::Point]) {
    let _ = writeln!(
        report,
        "| L1 size (% of channels) | entries | moka hit ratio | Belady (optimum) | gap (points) |"
    );
    let _ = writeln!(report, "|---:|---:|---:|---:|---:|");
    for p in points {
        let _ = writeln!(
            report,
            "| {:.1}% | {} | {:.1}% | {:.1}% | {:.1} |",
            p.fraction * 100.0,
            p.entries,
            p.moka * 100.0,
            p.belady * 100.0,
            (p.belady - p.moka) * 100.0
        );
    }
}

fn write_study(
    report: &mut String,
    b: &BenchSettings,
    points: &[hitrate::Point],
    coverage: &[f64],
    reads: usize,
) {
    let _ = writeln!(
        report,
        "## Hit-rate study\n\nA trace of {reads} reads of the mixed workload (Zipf {}, {} channels), through moka (the L1) and through the clairvoyant optimum (Belady) at each size. Plot: `hitrate.svg`.\n",
        b.zipf, b.channels
    );
    write_l1_table(report, points);
    let _ = writeln!(report, "\nReads answered by both L1 and a hot window of each size (and by the window alone, first row):\n");
    let header: Vec<String> = hitrate::WINDOWS
        .iter()
        .map(|w| format!("window {w}"))
        .collect();
    let _ = writeln!(report, "| L1 size | {} |", header.join(" | "));
    let _ = writeln!(report, "|---:|{}", "---:|".repeat(hitrate::WINDOWS.len()));
    let row: Vec<String> = coverage
        .iter()
        .map(|c| format!("{:.1}%", c * 100.0))
        .collect();
    let _ = writeln!(report, "| window only | {} |", row.join(" | "));
    for p in points {
        let row: Vec<String> = p
            .combined
            .iter()
            .map(|c| format!("{:.1}%", c * 100.0))
            .collect();
        let _ = writeln!(
            report,
            "| {:.1}% | {} |",
            p.fraction * 100.0,
            row.join(" | ")
        );
    }
}

fn write_plot(b: &BenchSettings, points: &[hitrate::Point]) -> anyhow::Result<()> {
    let series = [
        svg::Series {
            name: "Belady (optimum)",
            colour: "#888888",
            dashed: true,
            points: points
                .iter()
                .map(|p| (p.fraction * 100.0, p.belady))
                .collect(),
        },
        svg::Series {
            name: "moka (L1)",
            colour: "#1f6feb",
            dashed: false,
            points: points
                .iter()
                .map(|p| (p.fraction * 100.0, p.moka))
                .collect(),
        },
    ];
    let title = format!("L1 hit ratio, Zipf {}, {} channels", b.zipf, b.channels);
    std::fs::write(
        b.out_dir.join("hitrate.svg"),
        svg::chart(&title, "L1 size, % of channels (log scale)", &series),
    )?;
    let mut csv = String::from("l1_percent_of_channels,entries,moka,belady\n");
    for p in points {
        let _ = writeln!(
            csv,
            "{},{},{:.4},{:.4}",
            p.fraction * 100.0,
            p.entries,
            p.moka,
            p.belady
        );
    }
    std::fs::write(b.out_dir.join("hitrate.csv"), csv)?;
    Ok(())
}
