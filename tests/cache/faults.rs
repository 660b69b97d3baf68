//! Redis faults: refused and black-holed connections (through the proxy), a restart that
//! loses everything, eviction under `maxmemory`; and Postgres going away.

use std::time::{Duration, Instant};

use hotchan::config::CacheMode;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{page_ids, spawn_app_with, users, TestApp};
use crate::support::{
    cache_stats, eventually, l1_serving, until_cached, Link, PrivateRedis, Proxy,
};

/// What the issue allows one request while Redis misbehaves.
const REQUEST_BOUND: Duration = Duration::from_secs(2);

/// Runs one request and checks it ended within [`REQUEST_BOUND`].
async fn bounded<T>(request: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    let answer = request.await;
    let took = started.elapsed();
    assert!(
        took < REQUEST_BOUND,
        "a request took {took:?} while Redis was failing"
    );
    answer
}

async fn app_behind(url: String, mode: CacheMode) -> TestApp {
    spawn_app_with(|s| {
        s.cache = mode;
        s.redis_url = url;
    })
    .await
}

/// Cuts the proxy with `link` while the app reads and writes, heals it, and checks that
/// nothing the outage's writes changed is served afterwards.
async fn outage(link: Link) {
    let Some(proxy) = Proxy::to_shared_redis().await else {
        return;
    };
    let app = app_behind(proxy.url(), CacheMode::Full).await;
    l1_serving(&app).await;
    let [u] = users();
    let cid = app.group(&[u]).await;
    let old = app.say(cid, u, "before the outage").await;
    let page = format!("/v1/channels/{cid}/messages");
    app.get(&page).await.expect(200);
    app.get(&page).await.expect(200); // held in L1 and Redis

    proxy.set(link);
    for _ in 0..3 {
        bounded(app.get(&page)).await.expect(200);
    }
    let posted = bounded(app.post(&page, json!({"sender_id": u, "content": "during"})))
        .await
        .expect(201);
    bounded(app.patch(
        &format!("/v1/messages/{}", old["id"]),
        json!({"content": "edited during"}),
    ))
    .await
    .expect(200);
    let during = bounded(app.get(&page)).await.expect(200);
    assert_eq!(
        during["messages"][0]["id"], posted["id"],
        "the instance that wrote shows its write"
    );
    assert_eq!(during["messages"][1]["content"], "edited during");
    let stats = cache_stats(&app).await;
    assert_eq!(
        stats["redis"]["dirty_channels"], 1,
        "the written channel skips Redis: {stats}"
    );
    // A channel nobody cached: each read asks Redis, fails, and the breaker opens.
    // Behind a black hole each failure is a timeout, and timeouts within 500 ms of the
    // last success do not count: keep reading (each answered at once) until it opens.
    let cold = app.group(&[u]).await;
    eventually(Duration::from_secs(10), "the breaker opens", || async {
        bounded(app.get(&format!("/v1/channels/{cold}/messages")))
            .await
            .expect(200);
        cache_stats(&app).await["redis"]["breaker"] == "open"
    })
    .await;
    bounded(app.get(&format!("/v1/channels/{cold}/messages")))
        .await
        .expect(200);
    // Readiness says Redis is down, with a reason; the background repair keeps trying and
    // counts every failed attempt.
    let ready = app.get("/readyz").await.expect(200);
    assert_eq!(ready["redis"], "down", "{ready}");
    assert!(
        ready["redis_error"].as_str().is_some_and(|r| !r.is_empty()),
        "{ready}"
    );
    eventually(
        Duration::from_secs(10),
        "failed repairs are counted",
        || async { repair_failures(&app).await > 0 },
    )
    .await;

    proxy.set(Link::Pass);
    // From the moment Redis is back, every read shows the outage's writes.
    let healed = Instant::now();
    while healed.elapsed() < Duration::from_secs(3) {
        let now = app.get(&page).await.expect(200);
        assert_eq!(now["messages"][0]["id"], posted["id"], "{now}");
        assert_eq!(now["messages"][1]["content"], "edited during", "{now}");
        let stats = cache_stats(&app).await;
        if stats["redis"]["breaker"] == "closed" && stats["redis"]["dirty_channels"] == 0 {
            break;
        }
    }
    eventually(
        Duration::from_secs(20),
        "breaker closed, nothing dirty",
        || async {
            let s = cache_stats(&app).await;
            s["redis"]["breaker"] == "closed" && s["redis"]["dirty_channels"] == 0
        },
    )
    .await;
    // The tiers serve again (a read without Postgres), with the outage's writes.
    eventually(
        Duration::from_secs(20),
        "a read served by the tiers",
        || async {
            let before = cache_stats(&app).await["postgres_reads"].clone();
            let now = app.get(&page).await.expect(200);
            assert_eq!(now["messages"][1]["content"], "edited during", "{now}");
            cache_stats(&app).await["postgres_reads"] == before
        },
    )
    .await;
}

/// `hotchan_redis_repair_failures_total` from `/metrics`.
async fn repair_failures(app: &crate::helpers::TestApp) -> u64 {
    let text = app.metrics_text().await;
    text.lines()
        .find_map(|l| l.strip_prefix("hotchan_redis_repair_failures_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A Redis that answers PING but refuses every script (`EVALSHA` renamed away), as a
/// cluster node behind a `redis://` URL answers `MOVED`: readiness must not say "up".
#[tokio::test]
async fn readiness_is_down_with_the_servers_message_while_calls_fail_though_ping_works() {
    let redis = PrivateRedis::start(&["--rename-command", "EVALSHA", ""]).await;
    let app = app_behind(redis.url(), CacheMode::Full).await;
    let [u] = users();
    let cid = app.group(&[u]).await;
    // Writes call scripts (reads of a channel Redis never held may not ask it).
    for i in 0..5 {
        app.say(cid, u, &format!("m{i}")).await;
        app.get(&format!("/v1/channels/{cid}/messages"))
            .await
            .expect(200);
    }
    let ready = app.get("/readyz").await.expect(200);
    assert_eq!(ready["redis"], "down", "{ready}");
    let reason = ready["redis_error"].as_str().expect("a reason");
    assert!(
        reason.contains("unknown command"),
        "the server's own message: {reason}"
    );
}

#[tokio::test]
async fn refused_redis_connections_cost_no_request_and_serve_nothing_stale_after() {
    outage(Link::Refuse).await;
}

#[tokio::test]
async fn a_black_holed_redis_costs_no_request_and_serves_nothing_stale_after() {
    outage(Link::Blackhole).await;
}

#[tokio::test]
async fn a_redis_restart_that_loses_everything_is_a_round_of_misses() {
    let mut redis = PrivateRedis::start(&[]).await;
    let app = app_behind(redis.url(), CacheMode::Full).await;
    let [u] = users();
    let cid = app.group(&[u]).await;
    app.say(cid, u, "before").await;
    let page = format!("/v1/channels/{cid}/messages");
    app.get(&page).await.expect(200);
    let fills = cache_stats(&app).await["fills"].as_u64().unwrap();

    redis.restart_empty().await;
    assert_eq!(
        redis.cli(&[
            "SCRIPT",
            "EXISTS",
            "0000000000000000000000000000000000000000"
        ]),
        "0"
    );

    // Reads and writes keep working while the client reconnects…
    for i in 0..5 {
        bounded(app.get(&page)).await.expect(200);
        bounded(app.say(cid, u, &format!("after {i}"))).await;
    }
    // …and once it has, the scripts are loaded again (NOSCRIPT) and windows refill.
    eventually(
        Duration::from_secs(20),
        "a window refilled after the restart",
        || async {
            let now = app.get(&page).await.expect(200);
            assert_eq!(now["messages"][0]["content"], "after 4", "{now}");
            cache_stats(&app).await["fills"].as_u64().unwrap() > fills
        },
    )
    .await;
    let now = app.get(&page).await.expect(200);
    assert_eq!(now["messages"].as_array().unwrap().len(), 6);
}

/// The newest live ids of a channel, straight from Postgres.
async fn truth(app: &TestApp, cid: Uuid, limit: i64) -> Vec<i64> {
    app.pg()
        .await
        .query(
            "SELECT id FROM messages WHERE channel_id = $1 AND deleted_at IS NULL ORDER BY id DESC LIMIT $2",
            &[&cid, &limit],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn eviction_under_maxmemory_never_leaves_a_partial_window_served() {
    let redis =
        PrivateRedis::start(&["--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru"]).await;
    let app = app_behind(redis.url(), CacheMode::Redis).await;
    let [u] = users();
    let mut channels = Vec::new();
    for _ in 0..40 {
        let cid = app.group(&[u]).await;
        // 60 messages of 1 KB: each full window is about 60 KB, 40 of them far over 2 MB.
        app.pg()
            .await
            .execute(
                "WITH posted AS (
                   INSERT INTO messages (channel_id, sender_id, content, seq)
                   SELECT $1, $2, repeat('x', 1000) || s, s FROM generate_series(1, 60) s)
                 UPDATE channels SET last_seq = 60 WHERE id = $1",
                &[&cid, &u],
            )
            .await
            .unwrap();
        channels.push(cid);
    }

    for round in 0..3 {
        for &cid in &channels {
            let page = app
                .get(&format!("/v1/channels/{cid}/messages?limit=50"))
                .await
                .expect(200);
            assert_eq!(page_ids(&page), truth(&app, cid, 50).await, "round {round}");
            if round == 1 {
                app.say(cid, u, "appended under memory pressure").await;
            }
        }
    }

    let evicted: u64 = redis
        .cli(&["INFO", "stats"])
        .lines()
        .find_map(|l| l.strip_prefix("evicted_keys:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(evicted > 0, "the test must actually have evicted keys");
}

#[tokio::test]
async fn without_postgres_hot_reads_are_served_from_the_cache_and_writes_answer_503() {
    for mode in [CacheMode::Full, CacheMode::Redis] {
        let app = spawn_app_with(|s| s.cache = mode).await;
        let [u] = users();
        let cid = app.group(&[u]).await;
        app.say(cid, u, "hot").await;
        let page = format!("/v1/channels/{cid}/messages");
        let warm = until_cached(&app, &page).await;
        until_cached(&app, &format!("/v1/channels/{cid}/members")).await;
        app.admin_pg()
            .await
            .batch_execute(&format!(
                "ALTER DATABASE {db} ALLOW_CONNECTIONS false;
                 SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}';",
                db = app.db_name
            ))
            .await
            .unwrap();

        assert_eq!(app.get(&page).await.expect(200), warm, "{mode:?}");
        let members = app
            .get(&format!("/v1/channels/{cid}/members"))
            .await
            .expect(200);
        assert_eq!(members["members"][0]["user_id"], u.to_string());
        app.post(&page, json!({"sender_id": u, "content": "x"}))
            .await
            .expect_error(503, "unavailable");
    }
}
