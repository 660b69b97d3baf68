//! One contender of the load benchmark: an instance with its own cache mode and Redis
//! prefix, warmed, then measured by the bench's driver and (over HTTP) by wrk; and the
//! ceiling, the same HTTP stack answering one page from memory.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::dataset::Dataset;
use super::driver::{self, Run, Target};
use super::workload::{self, Op};
use super::{wrk, BenchSettings, Transport};
use crate::app::Application;
use crate::cache::paths::PathSnapshot;
use crate::cache::stats::StatsSnapshot;
use crate::config::{CacheMode, Settings};
use crate::domain::{Cursor, PageRequest};

pub struct Contender {
    pub name: String,
    pub run: Run,
    pub stats: StatsSnapshot,
    /// Read latency by the path that answered, measured inside the contender.
    pub latency: PathSnapshot,
    pub reads: u64,
    /// The same contender driven by wrk, when it ran.
    pub wrk: Option<wrk::WrkRun>,
    /// Resident size of the bench process (hotchan runs in it) before the contender
    /// started and at its peak, in bytes, where Linux tells.
    pub rss: Option<(u64, u64)>,
    /// Postgres's own count of the contender's work: transactions in the bench database
    /// from its start to its end (warm-up, fills, background work and the wrk run
    /// included), and the reads sent in that time; `None` where it was not counted.
    pub postgres: Option<(i64, u64)>,
    /// Postgres calls by operation over the whole run, from the instance's `/metrics`
    /// (HTTP only): where the transactions above come from.
    pub postgres_calls: Vec<(String, u64)>,
    /// With read replicas set: where the reads that reached Postgres went.
    pub replicas: Option<Replicated>,
}

/// Where a contender's Postgres reads went, with read replicas set, over its whole run.
#[derive(Debug, Clone, Copy)]
pub struct Replicated {
    /// Reads the primary answered (by the instance's count).
    pub primary_reads: u64,
    /// Reads the replicas answered.
    pub replica_reads: u64,
    /// Transactions on the replicas, as their `pg_stat_database` counts them.
    pub replica_transactions: i64,
}

/// A store on each replica alone, to read its transaction count.
async fn replica_counters(settings: &Settings) -> anyhow::Result<Vec<crate::postgres::Db>> {
    let mut counters = Vec::new();
    for url in &settings.db.database_replica_urls {
        let mut pg = settings.db.pg();
        pg.url = url.clone();
        pg.replicas.clear();
        counters.push(crate::postgres::Db::connect(&pg).await?);
    }
    Ok(counters)
}

async fn transactions_of(counters: &[crate::postgres::Db]) -> anyhow::Result<i64> {
    let mut total = 0;
    for counter in counters {
        total += counter.transactions().await?;
    }
    Ok(total)
}

impl Contender {
    /// Postgres transactions per read, as Postgres counts them.
    pub fn transactions_per_read(&self) -> Option<f64> {
        let (transactions, reads) = self.postgres?;
        Some(transactions as f64 / reads.max(1) as f64)
    }
}

/// A field of `/proc/self/status` in bytes (`VmRSS`, `VmHWM`).
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Starts a resident-size measurement: the peak so far is reset to the current size.
fn rss_start() -> Option<u64> {
    std::fs::write("/proc/self/clear_refs", "5").ok()?;
    status_bytes("VmRSS:")
}

/// The size at the start and the peak since.
fn rss_end(start: Option<u64>) -> Option<(u64, u64)> {
    Some((start?, status_bytes("VmHWM:")?))
}

/// The serve settings of one contender: its cache mode, and a Redis prefix of its own
/// (`run` names the run and scenario), on port 0.
pub fn contender_settings(serve: &Settings, mode: CacheMode, run: &str) -> Settings {
    let mut settings = serve.clone();
    settings.cache = mode;
    settings.redis_prefix = format!("{}.bench.{run}.{}", serve.redis_prefix, mode.as_str());
    settings.listen = "127.0.0.1:0".parse().expect("a valid address");
    settings
}

/// One contender: an instance built from `settings`, warmed with `warm`, then measured.
pub struct Contest<'a> {
    pub settings: Settings,
    pub transport: Transport,
    pub concurrency: usize,
    /// Names the progress bars.
    pub label: String,
    pub warm: &'a Arc<Vec<Op>>,
    pub measured: &'a Arc<Vec<Op>>,
    /// Makes this run's posts new messages.
    pub salt: u64,
    /// Seconds of a wrk run after the measured one (HTTP only; 0: none).
    pub wrk_seconds: u64,
    /// Where wrk's script is written.
    pub out_dir: &'a std::path::Path,
}

/// The wrk seconds to run: none when wrk is not installed (the report says so).
pub fn wrk_seconds(b: &BenchSettings) -> u64 {
    if b.transport == Transport::Http && wrk::installed() {
        b.wrk_seconds
    } else {
        0
    }
}

pub async fn run_contender(c: Contest<'_>) -> anyhow::Result<Contender> {
    let mode = c.settings.cache;
    let token = c.settings.token.as_ref().map(|t| t.0.clone());
    let (warm, measured, salt) = (c.warm, c.measured, c.salt);
    let reads = measured.iter().filter(|op| op.is_read()).count() as u64;
    let warm_reads = warm.iter().filter(|op| op.is_read()).count() as u64;
    let counter = crate::postgres::Db::connect(&c.settings.db.pg()).await?;
    let transactions_before = counter.transactions().await?;
    let replica_counters = replica_counters(&c.settings).await?;
    let replica_before = transactions_of(&replica_counters).await?;
    let rss = rss_start();
    let app = Application::build(c.settings).await?;
    let app_db = app.db().clone();
    let redis = crate::redis::Redis::connect(app.redis_settings()).await?;
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
    let wrk = match (&target, c.wrk_seconds) {
        (Target::Http { base, .. }, seconds) if seconds > 0 => {
            let duration = Duration::from_secs(seconds);
            let token = token.as_deref();
            Some(
                wrk::run(
                    base,
                    wrk::Requests::Ops(measured),
                    c.concurrency,
                    duration,
                    salt,
                    token,
                    c.out_dir,
                )
                .await?,
            )
        }
        _ => None,
    };
    let postgres_calls = match &target {
        Target::Http { client, base } => postgres_calls(client, base, token.as_deref()).await,
        _ => Vec::new(),
    };
    let _ = stop_tx.send(());
    if let Some(server) = server {
        server.await??;
    }
    if let Some(app) = idle {
        app.close().await;
    }
    let rss = rss_end(rss);
    // The instance's connections are closed: their counts reach Postgres on exit; the
    // wait covers a backend still finishing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let transactions = counter.transactions().await? - transactions_before;
    counter.close();
    let replica_transactions = transactions_of(&replica_counters).await? - replica_before;
    for replica in replica_counters {
        replica.close();
    }
    let replicas = app_db
        .replica_health()
        .map(|(primary_reads, nodes)| Replicated {
            primary_reads,
            replica_reads: nodes.iter().map(|n| n.reads).sum(),
            replica_transactions,
        });
    let wrk_reads = wrk.as_ref().map_or(0, |w| {
        (w.requests as f64 * reads as f64 / measured.len().max(1) as f64) as u64
    });
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
        wrk,
        rss,
        postgres: Some((transactions, warm_reads + reads + wrk_reads)),
        postgres_calls,
        replicas,
    })
}

/// The instance's Postgres calls by operation, read from its `/metrics`; empty when that
/// fails (the report then leaves the line out).
async fn postgres_calls(
    client: &reqwest::Client,
    base: &str,
    token: Option<&str>,
) -> Vec<(String, u64)> {
    let mut request = client.get(format!("{base}/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let Ok(response) = request.send().await else {
        return Vec::new();
    };
    let text = response.text().await.unwrap_or_default();
    let mut calls: Vec<(String, u64)> = text
        .lines()
        .filter_map(|line| {
            let rest =
                line.strip_prefix("hotchan_postgres_call_duration_seconds_count{operation=\"")?;
            let (operation, count) = rest.split_once("\"} ")?;
            Some((
                operation.to_owned(),
                count.trim().parse::<f64>().ok()? as u64,
            ))
        })
        .filter(|(_, count)| *count > 0)
        .collect();
    calls.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    calls
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
pub async fn run_ceiling(
    b: &BenchSettings,
    data: &Dataset,
    measured: &Arc<Vec<Op>>,
) -> anyhow::Result<Contender> {
    let db = crate::postgres::Db::connect(&b.serve.db.pg()).await?;
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
    let base = format!("http://{}", listener.local_addr()?);
    let url = format!("{base}/page");
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let target = Target::Ceiling {
        client: http_client(b.concurrency),
        url: url.clone(),
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
    let wrk = match wrk_seconds(b) {
        0 => None,
        seconds => {
            let duration = Duration::from_secs(seconds);
            let requests = wrk::Requests::Get {
                path: "/page",
                count: measured.len(),
            };
            let dir = &b.out_dir;
            Some(wrk::run(&base, requests, b.concurrency, duration, 0, None, dir).await?)
        }
    };
    server.abort();
    db.close();
    Ok(Contender {
        name: "ceiling".into(),
        run,
        stats: StatsSnapshot::default(),
        latency: PathSnapshot::default(),
        reads: measured.len() as u64,
        wrk,
        rss: None,
        postgres: None,
        postgres_calls: Vec::new(),
        replicas: None,
    })
}
