//! `hotchan bench --feeds`: the activity feed scenario, in process (service calls, no
//! HTTP), on the bench database.
//!
//! 1. **Publishing** at audiences of 10, 1,000, 10,000 and 100,000 (channel members): events/s
//!    and deliveries/s until every recipient has the event, beside the rate at which the
//!    same Postgres takes the same number of feed items with `COPY`, measured right after.
//! 2. **Feed reads**: latest pages of users drawn by Zipf over readers, `off`, `redis`
//!    and `full` in turn, with hit ratios.
//! 3. **A hot feed page against a hot channel page**, both from L1 in one `full`
//!    instance, each encoded to JSON as the API does.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use uuid::Uuid;

use super::contender::contender_settings;
use super::rng::{Rng, Zipf};
use super::BenchSettings;
use crate::app::Application;
use crate::config::CacheMode;
use crate::domain::feed::{FeedCursor, FeedRequest, NewEvent};
use crate::domain::{ChannelId, Cursor, PageRequest, UserId};
use crate::service::Service;

/// Feed items per reader in the read scenario.
const ITEMS_PER_READER: i64 = 60;

struct Sizes {
    /// (audience, events published).
    publish: [(i64, usize); 4],
    readers: usize,
    events: i64,
    hot_calls: usize,
}

fn sizes(quick: bool) -> Sizes {
    if quick {
        Sizes {
            publish: [(10, 40), (100, 10), (1_500, 2), (3_000, 1)],
            readers: 300,
            events: 300,
            hot_calls: 500,
        }
    } else {
        Sizes {
            publish: [(10, 2_000), (1_000, 100), (10_000, 10), (100_000, 3)],
            readers: 20_000,
            events: 20_000,
            hot_calls: 20_000,
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

async fn instance(b: &BenchSettings, mode: CacheMode, run: &str) -> anyhow::Result<Application> {
    let app = Application::build(contender_settings(&b.serve, mode, run)).await?;
    for _ in 0..100 {
        if mode != CacheMode::Full || !app.service().cache().l1().is_bypassed() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(app)
}

/// Stops an instance and deletes what it left in Redis (its prefix is its own).
async fn close(app: Application) -> anyhow::Result<()> {
    let redis = crate::redis::Redis::connect(app.redis_settings()).await?;
    app.close().await;
    let _ = redis.delete_prefix().await;
    redis.close().await;
    Ok(())
}

pub async fn run(b: &BenchSettings) -> anyhow::Result<()> {
    let s = sizes(b.quick);
    let db = &b.serve.db;
    crate::postgres::ensure_database(&db.pg()).await?;
    crate::postgres::migrate(&db.pg()).await?;
    // Seeding a million feed items takes longer than a request's statement timeout.
    let sql = crate::postgres::Seeder::connect(&db.pg()).await?;
    let run_id = Uuid::new_v4().simple().to_string()[..8].to_owned();
    let mut report = format!(
        "# hotchan bench --feeds\n\nIn process (service calls, no HTTP); {} readers × {ITEMS_PER_READER} feed items; Zipf {}; {} measured reads after {} warm-up ones; concurrency {}; seed {}.\n",
        s.readers, b.zipf, b.requests, b.warmup, b.concurrency, b.seed
    );

    // 1. Publishing with `off` and with `full` (the default deployment), one instance at
    // a time (every instance's fan-out worker would take the other's background work).
    let mut channels = Vec::new();
    for (audience, _) in s.publish {
        channels.push(sql.audience_channel(audience).await?);
    }
    // Per audience, `off` then `full`, each in an instance of its own, so that neither
    // always runs on the larger tables.
    let mut runs = [Vec::new(), Vec::new()];
    for (&(audience, events), &channel) in s.publish.iter().zip(&channels) {
        for (at, mode) in [CacheMode::Off, CacheMode::Full].into_iter().enumerate() {
            let app = instance(
                b,
                mode,
                &format!("{run_id}.pub{audience}.{}", mode.as_str()),
            )
            .await?;
            let run = publish(&app.service(), &sql, channel, events).await?;
            close(app).await?;
            eprintln!(
                "{}: published {events} events to {audience} members each in {:?}",
                mode.as_str(),
                run.0
            );
            runs[at].push(run);
        }
    }
    let pool = crate::postgres::Db::connect(&db.pg()).await?;
    let _ = writeln!(
        report,
        "\n## Publishing\n\n`off` and `full` publish the same events in turn, per audience; `COPY` writes as many feed items (at most 200,000) right after.\n\n| audience | events | `full` events/s | `off` events/s | `full` / `off` | `full` deliveries/s | `full` publish p50 / p99 ms | all delivered after (`full`) | COPY rows/s | fan-out (`full`) / COPY |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for (at, &(audience, events)) in s.publish.iter().enumerate() {
        let ((full_took, latency), (off_took, _)) = (&runs[1][at], &runs[0][at]);
        let rows = (audience as usize * events).min(200_000);
        let users: Vec<Uuid> = (0..rows).map(|_| Uuid::new_v4()).collect();
        let started = Instant::now();
        pool.copy_feed_items(&users, -(audience)).await?;
        let copy_rate = rows as f64 / started.elapsed().as_secs_f64();
        let rate = |took: &Duration| events as f64 / took.as_secs_f64();
        let deliveries = (audience as usize * events) as f64 / full_took.as_secs_f64();
        let _ = writeln!(
            report,
            "| {audience} | {events} | {:.0} | {:.0} | {:.2}× | {deliveries:.0} | {:.2} / {:.2} | {:.2} s | {copy_rate:.0} | {:.2} |",
            rate(full_took),
            rate(off_took),
            rate(full_took) / rate(off_took),
            latency.value_at_quantile(0.5) as f64 / 1000.0,
            latency.value_at_quantile(0.99) as f64 / 1000.0,
            full_took.as_secs_f64(),
            deliveries / copy_rate,
        );
    }

    // 2. Feed reads.
    let readers = seed_readers(&sql, s.readers, s.events).await?;
    let zipf = Zipf::new(readers.len(), b.zipf);
    let mut rng = Rng::new(b.seed);
    let picks: Arc<Vec<UserId>> = Arc::new(
        (0..b.warmup + b.requests)
            .map(|_| readers[zipf.sample(&mut rng)])
            .collect(),
    );
    let _ = writeln!(
        report,
        "\n## Feed reads (latest pages of 50)\n\n| contender | reads/s | vs off | p50 ms | p99 ms | L1 hit ratio | Redis hit ratio | Postgres reads per read |\n|---|---|---|---|---|---|---|---|"
    );
    let mut off_rate = None;
    for mode in [CacheMode::Off, CacheMode::Redis, CacheMode::Full] {
        let app = instance(b, mode, &format!("{run_id}.{}", mode.as_str())).await?;
        let service = app.service();
        drive(&service, &picks[..b.warmup], b.concurrency).await;
        let before = service.cache().stats().snapshot();
        let (took, latency) = drive(&service, &picks[b.warmup..], b.concurrency).await;
        let st = service.cache().stats().snapshot().since(&before);
        let rate = b.requests as f64 / took.as_secs_f64();
        let off = *off_rate.get_or_insert(rate);
        let ratio = |hits: u64, misses: u64| {
            if hits + misses == 0 {
                "–".to_string()
            } else {
                format!("{:.1}%", 100.0 * hits as f64 / (hits + misses) as f64)
            }
        };
        let _ = writeln!(
            report,
            "| {} | {rate:.0} | {:.2}× | {:.2} | {:.2} | {} | {} | {:.3} |",
            mode.as_str(),
            rate / off,
            latency.value_at_quantile(0.5) as f64 / 1000.0,
            latency.value_at_quantile(0.99) as f64 / 1000.0,
            ratio(st.l1_hits, st.l1_misses),
            ratio(st.l2_hits, st.l2_misses),
            st.postgres_reads as f64 / b.requests as f64,
        );
        close(app).await?;
    }
    // In an instance of its own: in the one above, L1 is full of feeds and bodies, and
    // moka's admission may keep a new channel window out.
    let app = instance(b, CacheMode::Full, &format!("{run_id}.hot")).await?;
    hot_against_channel(&mut report, &app.service(), &sql, picks[0], s.hot_calls).await?;
    close(app).await?;
    std::fs::create_dir_all(&b.out_dir)
        .with_context(|| format!("--out-dir {}", b.out_dir.display()))?;
    std::fs::write(b.out_dir.join("feeds.md"), &report)?;
    println!("{report}");
    eprintln!("==> wrote {}", b.out_dir.join("feeds.md").display());
    Ok(())
}

/// Publishes `events` events to `channel`, 8 at a time; the time until every recipient
/// has each one (background fan-outs included), and the latency of the publishes.
async fn publish(
    service: &Arc<Service>,
    sql: &crate::postgres::Seeder,
    channel: ChannelId,
    events: usize,
) -> anyhow::Result<(Duration, Histogram<u64>)> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..8.min(events))
        .map(|_| {
            let (service, next) = (service.clone(), next.clone());
            tokio::spawn(async move {
                let mut latency = histogram();
                while next.fetch_add(1, Ordering::Relaxed) < events {
                    let new = NewEvent {
                        actor: UserId(Uuid::new_v4()),
                        verb: "comment".into(),
                        object_type: "task".into(),
                        object_id: "Task-42".into(),
                        target: None,
                        data: Some(r#"{"excerpt":"looks good"}"#.into()),
                        channels: vec![channel],
                        users: vec![],
                        client_event_id: None,
                    };
                    let t = Instant::now();
                    service.feeds.publish_event(new).await?;
                    let _ = latency.record(t.elapsed().as_micros().max(1) as u64);
                }
                anyhow::Ok(latency)
            })
        })
        .collect();
    let mut latency = histogram();
    for task in tasks {
        latency.add(task.await??)?;
    }
    loop {
        if sql.fanouts_left().await? == 0 {
            return Ok((started.elapsed(), latency));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `readers` users with [`ITEMS_PER_READER`] feed items each, over `events` events,
/// written with SQL.
async fn seed_readers(
    sql: &crate::postgres::Seeder,
    readers: usize,
    events: i64,
) -> anyhow::Result<Vec<UserId>> {
    let started = Instant::now();
    let ids: Vec<Uuid> = (0..readers).map(|_| Uuid::new_v4()).collect();
    sql.seed_feed_readers(&ids, events, ITEMS_PER_READER)
        .await?;
    eprintln!(
        "seeded {readers} readers × {ITEMS_PER_READER} feed items in {:?}",
        started.elapsed()
    );
    Ok(ids.into_iter().map(UserId).collect())
}

/// A feed page's JSON, as the API encodes it.
fn encode_feed(page: &crate::domain::feed::FeedPage) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(page).expect("a feed page always serializes"))
}

/// Reads the latest feed page of each user in `picks`, `concurrency` at a time.
async fn drive(
    service: &Arc<Service>,
    picks: &[UserId],
    concurrency: usize,
) -> (Duration, Histogram<u64>) {
    let picks: Arc<Vec<UserId>> = Arc::new(picks.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (service, picks, next) = (service.clone(), picks.clone(), next.clone());
            tokio::spawn(async move {
                let mut latency = histogram();
                let request = FeedRequest {
                    limit: 50,
                    cursor: FeedCursor::Latest,
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&user) = picks.get(i) else { break };
                    let t = Instant::now();
                    if service.feeds.feed(user, request, encode_feed).await.is_ok() {
                        let _ = latency.record(t.elapsed().as_micros().max(1) as u64);
                    }
                }
                latency
            })
        })
        .collect();
    let mut latency = histogram();
    for task in tasks {
        if let Ok(h) = task.await {
            let _ = latency.add(h);
        }
    }
    (started.elapsed(), latency)
}

/// One user's latest feed page against a hot channel's latest page, both from L1 and
/// encoded to JSON, one call at a time.
async fn hot_against_channel(
    report: &mut String,
    service: &Arc<Service>,
    sql: &crate::postgres::Seeder,
    user: UserId,
    calls: usize,
) -> anyhow::Result<()> {
    let channel = sql.hot_channel(300).await?;
    let page = PageRequest {
        limit: 50,
        cursor: Cursor::Latest,
    };
    let feed = FeedRequest {
        limit: 50,
        cursor: FeedCursor::Latest,
    };
    let encode = |p: &crate::domain::Page| bytes::Bytes::from(serde_json::to_vec(p).expect("json"));
    // Warm both until L1 holds them (fills run in the background).
    for _ in 0..200 {
        service.reads.page(channel, page, encode).await?;
        service.feeds.feed(user, feed, encode_feed).await?;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Each in a loop of its own, three rounds in turn; the best round of each counts.
    let time = |n: usize| async move {
        let (mut channel_us, mut feed_us) = (f64::MAX, f64::MAX);
        for _ in 0..3 {
            let t = Instant::now();
            for _ in 0..n {
                std::hint::black_box(service.reads.page(channel, page, encode).await?);
            }
            channel_us = channel_us.min(t.elapsed().as_secs_f64() * 1e6 / n as f64);
            let t = Instant::now();
            for _ in 0..n {
                std::hint::black_box(service.feeds.feed(user, feed, encode_feed).await?);
            }
            feed_us = feed_us.min(t.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
        anyhow::Ok((channel_us, feed_us))
    };
    let l1_before = service.cache().stats().snapshot();
    let (channel_us, feed_us) = time(calls).await?;
    let st = service.cache().stats().snapshot().since(&l1_before);
    let _ = writeln!(
        report,
        "\n## A hot feed page against a hot channel page (`full`, from L1, encoded)\n\n| page | µs per call (best of 3 rounds) |\n|---|---|\n| channel, latest 50 | {channel_us:.1} |\n| feed, latest 50 | {feed_us:.1} |\n\nFeed / channel: **{:.2}×** (goal ≤ 1.5×). L1 hits {} of {} lookups.",
        feed_us / channel_us,
        st.l1_hits,
        st.l1_hits + st.l1_misses
    );
    Ok(())
}
