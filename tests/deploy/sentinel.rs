//! Sentinel: one primary, one replica, one sentinel (quorum 1), and a forced failover
//! (`SENTINEL FAILOVER`) while an instance writes and another reads. No acknowledged
//! write is lost, and nothing stale is served afterwards.

use std::time::Duration;

use hotchan::config::CacheMode;
use serde_json::json;

use crate::helpers::{spawn_with_settings, test_settings, users};
use crate::servers::{free_port, redis_cli, wait_until, PrivateRedis, Scratch};
use crate::support::{cache_stats, eventually};
use crate::support::{Link, Proxy};

const SERVICE: &str = "hc";

async fn primary_port(sentinel: u16) -> Option<u16> {
    let answer = redis_cli(sentinel, &["sentinel", "get-master-addr-by-name", SERVICE]).await;
    answer.lines().nth(1)?.trim().parse().ok()
}

/// A primary, a replica that replicates through `via` (when given: a proxy port in front
/// of the primary), and a sentinel that knows both.
struct Deployment {
    replica_port: u16,
    sentinel_port: u16,
    _servers: Vec<PrivateRedis>,
    _dirs: Vec<Scratch>,
}

async fn deploy(proxy: Option<&Proxy>, primary: u16) -> Deployment {
    let (pdir, rdir, sdir) = (
        Scratch::new("primary"),
        Scratch::new("replica"),
        Scratch::new("sentinel"),
    );
    let (r, s) = (free_port(), free_port());
    let p = primary;
    let primary = PrivateRedis::start_with(p, Some(&pdir.0), &[]).await;
    let upstream = proxy.map_or(p, Proxy::port);
    let r_args = ["--replicaof", "127.0.0.1", &upstream.to_string()].map(String::from);
    let r_args: Vec<&str> = r_args.iter().map(String::as_str).collect();
    let replica = PrivateRedis::start_with(r, Some(&rdir.0), &r_args).await;
    wait_until(
        Duration::from_secs(20),
        "the replica is in sync",
        || async {
            redis_cli(r, &["info", "replication"])
                .await
                .contains("master_link_status:up")
        },
    )
    .await;
    let conf = sdir.path("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "sentinel monitor {SERVICE} 127.0.0.1 {p} 1\n\
             sentinel down-after-milliseconds {SERVICE} 1000\n\
             sentinel failover-timeout {SERVICE} 10000\n"
        ),
    )
    .unwrap();
    let conf = conf.display().to_string();
    let s_port = s.to_string();
    let sentinel =
        PrivateRedis::start_with(s, Some(&sdir.0), &[&conf, "--sentinel", "--port", &s_port]).await;
    wait_until(
        Duration::from_secs(20),
        "the sentinel knows the replica",
        || async {
            redis_cli(s, &["sentinel", "replicas", SERVICE])
                .await
                .contains(&r.to_string())
        },
    )
    .await;
    Deployment {
        replica_port: r,
        sentinel_port: s,
        _servers: vec![primary, replica, sentinel],
        _dirs: vec![pdir, rdir, sdir],
    }
}

async fn fail_over(d: &Deployment) {
    let answer = redis_cli(d.sentinel_port, &["sentinel", "failover", SERVICE]).await;
    assert!(answer.contains("OK"), "{answer}");
}

fn sentinel_settings(d: &Deployment) -> hotchan::config::Settings {
    let mut settings = test_settings();
    settings.redis_url = format!(
        "redis-sentinel://127.0.0.1:{}?sentinelServiceName={SERVICE}",
        d.sentinel_port
    );
    settings.cache = CacheMode::Full;
    settings
}

async fn healed(app: &crate::helpers::TestApp) {
    eventually(
        Duration::from_secs(30),
        "the cache is whole again",
        || async {
            let stats = cache_stats(app).await;
            stats["redis"]["breaker"] == "closed" && stats["redis"]["dirty_channels"] == 0
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_sentinel_failover_during_writes_loses_nothing_and_serves_nothing_stale() {
    let d = deploy(None, free_port()).await;
    let (r, s) = (d.replica_port, d.sentinel_port);
    let settings = sentinel_settings(&d);
    let writer = spawn_with_settings(settings.clone()).await;
    let reader = spawn_with_settings(settings.clone()).await;
    let mut truth_settings = settings.clone();
    truth_settings.cache = CacheMode::Off;
    let truth = spawn_with_settings(truth_settings).await;

    let [u] = users();
    let cid = writer.group(&[u]).await;
    let page = format!("/v1/channels/{cid}/messages?limit=200");
    let mut acked = Vec::new();
    let mut failed_over = false;
    let started = std::time::Instant::now();
    let mut after_failover = 0;
    while after_failover < 40 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the failover did not finish"
        );
        let i = acked.len();
        let m = writer.say(cid, u, &format!("m{i}")).await;
        acked.push(m["id"].as_i64().unwrap());
        if i % 3 == 0 {
            let edited = writer
                .patch(
                    &format!("/v1/messages/{}", m["id"]),
                    json!({"content": format!("e{i}")}),
                )
                .await
                .expect(200);
            assert_eq!(edited["content"], format!("e{i}"));
        }
        reader.get(&page).await.expect(200);
        writer.get(&page).await.expect(200);
        if i == 10 {
            fail_over(&d).await;
            failed_over = true;
        }
        if failed_over && primary_port(s).await == Some(r) {
            after_failover += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The old primary rejoins as a replica; writes then reach a replica again and the
    // cache heals.
    for app in [&writer, &reader] {
        healed(app).await;
    }
    let expected = truth.get(&page).await.expect(200);
    let ids: Vec<i64> = expected["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    for id in &acked {
        assert!(ids.contains(id), "acknowledged message {id} is in Postgres");
    }
    for _ in 0..20 {
        for app in [&writer, &reader] {
            assert_eq!(app.get(&page).await.expect(200), expected, "no stale page");
        }
    }
    // And the tiers serve it (not only Postgres).
    let hits = |v: &serde_json::Value| {
        v["l1"]["hits"].as_u64().unwrap() + v["redis"]["hits"].as_u64().unwrap()
    };
    let before = hits(&cache_stats(&reader).await);
    reader.get(&page).await.expect(200);
    assert!(
        hits(&cache_stats(&reader).await) > before,
        "the cache serves again"
    );
}

/// Failover safety, made certain: the replica stops hearing the primary (its replication
/// link is black-holed), a write bumps the fence on the primary only, and the replica is
/// promoted with the old window and the old fence version. A write that counted as done
/// without reaching a replica would leave that window to be served. `WAIT` makes the
/// write a failed write-through instead: announced, and dropped before Redis serves the
/// channel again. (With `--redis-wait-replicas 0` this test fails at the announcement.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_promoted_replica_never_saw_is_never_hidden_by_its_old_window() {
    let primary = free_port();
    let proxy = Proxy::start(primary).await;
    let d = deploy(Some(&proxy), primary).await;
    let settings = sentinel_settings(&d);
    let writer = spawn_with_settings(settings.clone()).await;
    let reader = spawn_with_settings(settings.clone()).await;
    let [u] = users();
    let cid = writer.group(&[u]).await;
    writer.say(cid, u, "before").await;
    let page = format!("/v1/channels/{cid}/messages");
    // The window is cached, and the replica holds it.
    let meta = format!("{}*{cid}*meta", settings.redis_prefix);
    eventually(
        Duration::from_secs(10),
        "the replica holds the window",
        || async {
            reader.get(&page).await.expect(200);
            writer.get(&page).await.expect(200);
            !redis_cli(d.replica_port, &["--scan", "--pattern", &meta])
                .await
                .trim()
                .is_empty()
        },
    )
    .await;

    proxy.set(Link::Blackhole);
    // The proxy drops the replication connection on its own task.
    wait_until(
        Duration::from_secs(5),
        "the primary lost its replica",
        || async {
            redis_cli(primary, &["info", "replication"])
                .await
                .contains("connected_slaves:0")
        },
    )
    .await;
    writer.say(cid, u, "after").await;
    assert!(writer
        .get(&page)
        .await
        .expect(200)
        .to_string()
        .contains("after"));
    // The write-through reached the primary only: it counts as failed, and the writer
    // announced the channel through Postgres (with `--redis-wait-replicas 0` it would
    // count as done, and nothing would be announced).
    let stats = cache_stats(&writer).await;
    assert!(stats["notices"]["sent"].as_u64().unwrap() >= 1, "{stats}");
    fail_over(&d).await;
    wait_until(
        Duration::from_secs(20),
        "the replica is promoted",
        || async { primary_port(d.sentinel_port).await == Some(d.replica_port) },
    )
    .await;
    // From now on, every read on either instance shows the write, until the cache healed
    // and beyond.
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < deadline {
        for app in [&writer, &reader] {
            let body = app.get(&page).await.expect(200);
            assert!(body.to_string().contains("after"), "a stale window: {body}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for app in [&writer, &reader] {
        healed(app).await;
        let body = app.get(&page).await.expect(200);
        assert!(body.to_string().contains("after"), "a stale window: {body}");
    }
}
