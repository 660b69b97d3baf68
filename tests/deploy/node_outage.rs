//! One dead primary of a Redis Cluster hurts only its own slots (issue #25, part 2): on a
//! private cluster of three primaries with a replica each, one primary is killed. The
//! other primaries' channels keep their Redis hit ratio with no errors; the dead
//! primary's channels are served with no errors and nothing stale (from L1 while it is
//! valid, else from Postgres), a write to one of them included; its breaker alone
//! opens, in `/v1/admin/cache` and `/metrics`; once its replica takes over, its channels
//! come back into Redis with nothing stale filled.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hotchan::config::CacheMode;
use uuid::Uuid;

use crate::helpers::{spawn_with_settings, test_settings, users, TestApp};
use crate::redis_cluster::Cluster;
use crate::servers::redis_cli;
use crate::support::{cache_stats, eventually};

/// `per` channels of `user` on each primary, in primary order.
async fn channels_per_node(app: &TestApp, user: Uuid, per: usize) -> [Vec<Uuid>; 3] {
    let mut found: [Vec<Uuid>; 3] = Default::default();
    while found.iter().any(|f| f.len() < per) {
        let cid = app.group(&[user]).await;
        let slot = fred::util::redis_keyslot(cid.to_string().as_bytes());
        let bucket = &mut found[Cluster::owner(slot)];
        if bucket.len() < per {
            bucket.push(cid);
        }
    }
    found
}

/// Redis hits, and every read that asked the tiers (hits, misses, skipped).
fn redis_reads(app: &serde_json::Value) -> (u64, u64) {
    let r = &app["redis"];
    let n = |k: &str| r[k].as_u64().unwrap();
    (n("hits"), n("hits") + n("misses") + n("skipped"))
}

/// Reads `channels` in turn on `app` for `span`: Redis's hit ratio over those reads,
/// how many reads there were, and how many did not answer 200.
async fn read_for(app: &TestApp, channels: &[Uuid], span: Duration) -> (f64, u64, u64) {
    let before = redis_reads(&cache_stats(app).await);
    let (mut reads, mut errors) = (0, 0);
    let started = Instant::now();
    while started.elapsed() < span {
        for cid in channels {
            let answer = app.get(&format!("/v1/channels/{cid}/messages")).await;
            reads += 1;
            errors += u64::from(answer.status != 200);
        }
    }
    let after = redis_reads(&cache_stats(app).await);
    let asked = (after.1 - before.1).max(1);
    ((after.0 - before.0) as f64 / asked as f64, reads, errors)
}

fn node_breaker(stats: &serde_json::Value, port: u16) -> String {
    let name = format!("127.0.0.1:{port}");
    stats["redis"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == name.as_str())
        .map_or("absent".into(), |n| {
            n["breaker"].as_str().unwrap().to_owned()
        })
}

fn shows(body: &serde_json::Value, text: &str) -> bool {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["content"] == text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dead_primary_sends_only_its_slots_to_postgres_and_its_replica_takes_over_with_nothing_stale(
) {
    let mut cluster = Cluster::start_replicated().await;
    let mut settings = test_settings();
    settings.redis_url = cluster.url();
    // A reads through Redis on every read (no L1), so its hit ratio is Redis's own.
    settings.cache = CacheMode::Redis;
    let a = spawn_with_settings(settings.clone()).await;
    let c = spawn_with_settings(settings.clone()).await;
    settings.cache = CacheMode::Full;
    let b = spawn_with_settings(settings).await;
    let [u] = users();
    let [dead, one, two] = channels_per_node(&a, u, 4).await;
    let healthy: Vec<Uuid> = one.iter().chain(&two).copied().collect();
    for &cid in dead.iter().chain(&healthy) {
        a.say(cid, u, "first").await;
    }
    // Hot: every channel's window is in Redis.
    eventually(
        Duration::from_secs(20),
        "A's reads are Redis hits",
        || async { read_for(&a, &healthy, Duration::from_millis(200)).await.0 > 0.99 },
    )
    .await;
    for cid in &dead {
        for app in [&b, &c] {
            app.get(&format!("/v1/channels/{cid}/messages"))
                .await
                .expect(200);
        }
    }
    let (before, _, errors) = read_for(&a, &healthy, Duration::from_secs(1)).await;
    assert_eq!(errors, 0);

    // B reads and writes the dead primary's channels all through the outage; C reads
    // them through Redis (no L1), so its calls meet the dead primary.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = [&b, &c]
        .into_iter()
        .map(|app| {
            let (client, base, dead) = (app.client.clone(), app.base.clone(), dead.clone());
            let (stop, written) = (stop.clone(), written.clone());
            tokio::spawn(async move {
                let (mut reads, mut errors, mut stale) = (0u64, 0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    for cid in &dead {
                        let wrote = written.load(Ordering::Acquire);
                        let url = format!("{base}/v1/channels/{cid}/messages");
                        reads += 1;
                        match client.get(&url).send().await {
                            Ok(r) if r.status() == 200 => {
                                let body: serde_json::Value = r.json().await.unwrap();
                                stale += u64::from(
                                    *cid == dead[0] && wrote && !shows(&body, "while down"),
                                );
                            }
                            _ => errors += 1,
                        }
                    }
                }
                (reads, errors, stale)
            })
        })
        .collect();

    cluster.nodes[0].kill();
    let dead_port = cluster.nodes[0].port;
    let outage = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Acknowledged from Postgres while its primary is down.
        b.say(dead[0], u, "while down").await;
        written.store(true, Ordering::Release);
        // Only the dead primary's breaker opened, on the instance whose calls met it.
        eventually(
            Duration::from_millis(1500),
            "C's breaker of the dead node",
            || async { node_breaker(&cache_stats(&c).await, dead_port) == "open" },
        )
        .await;
        let stats = cache_stats(&c).await;
        for node in &cluster.nodes[1..] {
            assert_eq!(node_breaker(&stats, node.port), "closed", "{stats}");
        }
        assert!(c.metrics_text().await.contains(&format!(
            "hotchan_redis_node_breaker_open{{node=\"127.0.0.1:{dead_port}\"}} 1"
        )));
    };
    let ((during, reads, errors), ()) =
        tokio::join!(read_for(&a, &healthy, Duration::from_secs(3)), outage);
    // The figures docs/performance/README.md reports (`-- --nocapture` shows them).
    eprintln!(
        "healthy primaries' channels on A: Redis hit ratio {before:.3} before, {during:.3} \
         in the 3 s after the kill; {reads} reads, {errors} errors"
    );
    assert_eq!(
        errors, 0,
        "the healthy primaries' channels answer while one is down"
    );
    assert!(
        during >= before - 0.05,
        "their Redis hit ratio holds: {before:.3} before, {during:.3} with one primary dead ({reads} reads)"
    );
    assert!(
        reads > 100,
        "reads of the healthy primaries do not wait on the dead one: {reads} in 3 s"
    );

    // The replica takes over; the dead primary's channels come back, nothing stale.
    let replica = cluster.replicas[0].port;
    eventually(
        Duration::from_secs(20),
        "the replica is promoted",
        || async { redis_cli(replica, &["role"]).await.starts_with("master") },
    )
    .await;
    cluster.wait_ok().await;
    for app in [&a, &b, &c] {
        eventually(
            Duration::from_secs(20),
            "every breaker closes and nothing is dirty",
            || async {
                let s = cache_stats(app).await;
                s["redis"]["breaker"] == "closed" && s["redis"]["dirty_channels"] == 0
            },
        )
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        let (reads, errors, stale) = reader.await.unwrap();
        assert_eq!(
            errors, 0,
            "every read of the dead primary's channels answered"
        );
        assert_eq!(stale, 0, "no read after the write missed it");
        assert!(reads > 20);
    }
    // Back in Redis at the new primary: A's reads of those channels hit Redis again, and
    // the written channel's window (filled anew, not the one the replica held) shows the
    // write on both instances.
    eventually(
        Duration::from_secs(20),
        "the dead primary's channels hit Redis again",
        || async { read_for(&a, &dead, Duration::from_millis(200)).await.0 > 0.9 },
    )
    .await;
    for app in [&a, &b, &c] {
        for _ in 0..20 {
            let body = app
                .get(&format!("/v1/channels/{}/messages", dead[0]))
                .await
                .expect(200);
            assert!(shows(&body, "while down"), "{body}");
        }
    }
}
