//! A private 3-primary Redis Cluster: a one-server URL at a node is refused; two
//! instances, hot channels on every node, flush-all, and a primary killed and restarted
//! during reads, with nothing stale served afterwards.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hotchan::config::CacheMode;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{spawn_with_settings, test_settings, users, TestApp};
use crate::redis_cluster::Cluster;
use crate::servers::{redis_cli, refusal};
use crate::support::{cache_stats, eventually, l1_serving, within_promise};

fn hot_channels(stats: &serde_json::Value) -> i64 {
    stats["redis"]["hot_channels"].as_i64().unwrap_or(-1)
}

/// Keys under `prefix` on every node.
async fn keys_under(cluster: &Cluster, prefix: &str) -> usize {
    let mut n = 0;
    for node in &cluster.nodes {
        let pattern = format!("{prefix}*");
        n += redis_cli(node.port, &["--scan", "--pattern", &pattern])
            .await
            .lines()
            .filter(|l| !l.is_empty())
            .count();
    }
    n
}

/// A channel of `user` whose keys live on each node, in node order.
async fn one_channel_per_node(app: &TestApp, user: Uuid) -> [Uuid; 3] {
    let mut found: [Option<Uuid>; 3] = [None; 3];
    while found.iter().any(Option::is_none) {
        let cid = app.group(&[user]).await;
        let slot = fred::util::redis_keyslot(cid.to_string().as_bytes());
        found[Cluster::owner(slot)].get_or_insert(cid);
    }
    found.map(Option::unwrap)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_serves_two_instances_counts_and_flushes_every_node_and_survives_a_primary_restart(
) {
    let mut cluster = Cluster::start().await;

    // A one-server URL at a cluster node is refused, naming the cluster form.
    let mut plain = test_settings();
    plain.redis_url = format!("redis://127.0.0.1:{}", cluster.nodes[0].port);
    let refused = refusal(plain).await;
    assert!(refused.contains("redis-cluster://"), "{refused}");

    let mut settings = test_settings();
    settings.redis_url = cluster.url();
    settings.cache = CacheMode::Full;
    let a = spawn_with_settings(settings.clone()).await;
    let b = spawn_with_settings(settings.clone()).await;
    l1_serving(&a).await;
    l1_serving(&b).await;
    let [u] = users();
    let channels = one_channel_per_node(&a, u).await;
    for cid in channels {
        a.say(cid, u, "first").await;
        for app in [&a, &b] {
            app.get(&format!("/v1/channels/{cid}/messages"))
                .await
                .expect(200);
        }
    }
    // Every node's windows are counted (reads queue fills; read until all are in).
    eventually(Duration::from_secs(10), "3 hot channels", || async {
        for cid in channels {
            a.get(&format!("/v1/channels/{cid}/messages"))
                .await
                .expect(200);
        }
        let stats = cache_stats(&a).await;
        hot_channels(&stats) == 3
    })
    .await;

    // Two instances: a write on one shows on the other within the promise, on every node.
    for cid in channels {
        let page = format!("/v1/channels/{cid}/messages");
        b.get(&page).await.expect(200);
        a.say(cid, u, "second").await;
        within_promise(&b, &page, "the other instance shows the post", |body| {
            body.to_string().contains("second")
        })
        .await;
    }

    // Flush everything: nothing is left under the prefix on any node.
    a.post("/v1/admin/cache/flush", json!({})).await.expect(204);
    assert_eq!(hot_channels(&cache_stats(&a).await), 0);
    assert_eq!(keys_under(&cluster, &a.settings.redis_prefix).await, 0);
    assert_eq!(cache_stats(&a).await["redis"]["dirty_channels"], 0);

    // Kill the primary of the first channel while both instances read it.
    let cid = channels[0];
    let page = format!("/v1/channels/{cid}/messages");
    for app in [&a, &b] {
        app.get(&page).await.expect(200);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for app in [&a, &b] {
        let (client, url) = (app.client.clone(), format!("{}{page}", app.base));
        let (stop, failures, reads) = (stop.clone(), failures.clone(), reads.clone());
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let ok = matches!(client.get(&url).send().await, Ok(r) if r.status() == 200);
                reads.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.nodes[0].kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A write while its primary is down: acknowledged from Postgres...
    a.say(cid, u, "while its primary was down").await;
    // ...and shown at once by the writer, and by the other instance within the promise.
    assert!(a
        .get(&page)
        .await
        .expect(200)
        .to_string()
        .contains("while its primary was down"));
    within_promise(
        &b,
        &page,
        "the other instance shows the outage write",
        |body| body.to_string().contains("while its primary was down"),
    )
    .await;
    cluster.nodes[0].restart_empty().await;
    cluster.wait_ok().await;
    // After the restart: never the old window, on either instance, and the tiers serve
    // again (the breaker closes and Redis answers reads).
    let truth = a.pg().await;
    let count: i64 = truth
        .query_one(
            "SELECT count(*) FROM messages WHERE channel_id = $1",
            &[&cid],
        )
        .await
        .unwrap()
        .get(0);
    for _ in 0..50 {
        for app in [&a, &b] {
            let body = app.get(&page).await.expect(200);
            assert_eq!(
                body["messages"].as_array().unwrap().len() as i64,
                count,
                "{body}"
            );
            assert!(body.to_string().contains("while its primary was down"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "every read answered 200"
    );
    assert!(reads.load(Ordering::Relaxed) > 50);
    for app in [&a, &b] {
        eventually(Duration::from_secs(20), "the breaker closes", || async {
            cache_stats(app).await["redis"]["breaker"] == "closed"
                && cache_stats(app).await["redis"]["dirty_channels"] == 0
        })
        .await;
    }
    // Back in Redis: a fill the fence let in (it goes into L1 too, so the reads after it
    // are L1 hits), or a read Redis answered.
    let in_redis =
        |s: &serde_json::Value| s["fills"].as_u64().unwrap() + s["redis"]["hits"].as_u64().unwrap();
    let before = in_redis(&cache_stats(&b).await);
    b.post("/v1/admin/cache/flush", json!({"channel_id": cid}))
        .await
        .expect(204);
    for _ in 0..3 {
        b.get(&page).await.expect(200);
    }
    eventually(Duration::from_secs(10), "Redis serves again", || async {
        b.get(&page).await.expect(200);
        in_redis(&cache_stats(&b).await) > before
    })
    .await;
}
