//! Postgres read replicas (issue #26, part 1; API.md promise 8) on a private primary and
//! a streaming standby: misses and fills read from the standby while it keeps up; a
//! standby held back (`pg_wal_replay_pause()`) never answers a read of a write already
//! acknowledged, whether this instance made it, heard of it, or only Redis knows of it
//! (the stale-set race, against a lagging replica); it leaves the rotation past the lag
//! bound and comes back once it catches up; a standby that is down costs no errors.

use std::time::Duration;

use hotchan::config::CacheMode;
use hotchan::postgres::parse_database_url;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{page_ids, spawn_with_settings, test_settings, users, TestApp};
use crate::postgres_servers::Postgres;
use crate::servers::{redis_cli, PrivateRedis};
use crate::support::{cache_stats, eventually};

/// An instance on `primary` with `replicas`, in `mode`, sharing `redis` and `prefix`.
async fn instance(
    primary: &Postgres,
    replicas: &[&Postgres],
    mode: CacheMode,
    redis: &PrivateRedis,
    prefix: &str,
) -> TestApp {
    let mut settings = test_settings();
    // One database for all, named by the prefix, on the private servers (the name is the
    // test's own, so the cleanup on the shared server finds nothing to drop).
    let db = format!("hctest_{prefix}");
    settings.db.database_url = parse_database_url(&primary.url_of(&db, "")).unwrap();
    settings.db.database_replica_urls = replicas
        .iter()
        .map(|r| parse_database_url(&r.url_of(&db, "")).unwrap())
        .collect();
    settings.db.database_replica_max_lag_ms = 300;
    settings.redis_url = format!("redis://127.0.0.1:{}", redis.port);
    settings.redis_prefix = prefix.to_owned();
    settings.cache = mode;
    spawn_with_settings(settings).await
}

fn replica(stats: &serde_json::Value) -> &serde_json::Value {
    &stats["postgres"]["replicas"][0]
}

/// Reads the standby answered, and the primary, by this instance's count.
async fn node_reads(app: &TestApp) -> (u64, u64) {
    let stats = cache_stats(app).await;
    (
        replica(&stats)["reads"].as_u64().unwrap(),
        stats["postgres"]["primary_reads"].as_u64().unwrap(),
    )
}

async fn in_rotation(app: &TestApp, up: bool) {
    eventually(
        Duration::from_secs(10),
        &format!("the replica is up: {up}"),
        || async { replica(&cache_stats(app).await)["up"] == json!(up) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_answers_misses_and_never_anything_older_than_a_known_write() {
    let primary = Postgres::start("").await;
    let standby = Postgres::standby_of(&primary, "s1").await;
    let redis = PrivateRedis::start(&[]).await;
    let prefix = format!("hct_{}", Uuid::new_v4().simple());
    // A writes and reads with L1; B reads through Redis only, so it hears nothing of A's
    // writes but what Redis keeps beside the fences; C has no cache: every read is
    // Postgres's, routed by what C itself wrote.
    let a = instance(&primary, &[&standby], CacheMode::Full, &redis, &prefix).await;
    let b = instance(&primary, &[&standby], CacheMode::Redis, &redis, &prefix).await;
    let c = instance(&primary, &[&standby], CacheMode::Off, &redis, &prefix).await;
    let db = a.db_name.clone();
    in_rotation(&a, true).await;
    in_rotation(&b, true).await;
    in_rotation(&c, true).await;

    // Keeping up, the standby answers the misses.
    let [u] = users::<1>();
    let mut channels = Vec::new();
    for i in 0..10 {
        let cid = a.group(&[u]).await;
        a.say(cid, u, &format!("hello {i}")).await;
        channels.push(cid);
    }
    // B knows nothing of A's writes but the positions in Redis and what the standby
    // replays within the lag bound (promise 3's second): wait until it has them.
    let on_standby = standby.connect(&db).await;
    eventually(
        Duration::from_secs(5),
        "the standby has the channels",
        || async {
            let ids: Vec<Uuid> = channels.clone();
            let n: i64 = on_standby
                .query_one("SELECT count(*) FROM channels WHERE id = ANY($1)", &[&ids])
                .await
                .unwrap()
                .get(0);
            n == channels.len() as i64
        },
    )
    .await;
    drop(on_standby);
    let (before, _) = node_reads(&b).await;
    for cid in &channels {
        redis_cli(redis.port, &["DEL", &window_key(&redis, cid).await]).await;
    }
    eventually(
        Duration::from_secs(5),
        "B's misses reach the standby",
        || async {
            for cid in &channels {
                b.get(&format!("/v1/channels/{cid}/messages"))
                    .await
                    .expect(200);
            }
            node_reads(&b).await.0 > before
        },
    )
    .await;

    // The standby stops replaying; each instance writes, and reads what it wrote.
    let held = standby.connect(&db).await;
    held.execute("SELECT pg_wal_replay_pause()", &[])
        .await
        .unwrap();
    let (target, other) = (channels[0], channels[1]);
    let by_a = a.say(target, u, "written while the standby is held").await["id"]
        .as_i64()
        .unwrap();
    // B: the window goes from Redis (the fence and its position stay), so B must fill it,
    // knowing of A's write only through the position beside the fence.
    redis_cli(redis.port, &["DEL", &window_key(&redis, &target).await]).await;
    let page = b
        .get(&format!("/v1/channels/{target}/messages"))
        .await
        .expect(200);
    assert!(
        page_ids(&page).contains(&by_a),
        "B's fill read the primary, not the held standby: {page}"
    );
    // C writes with no cache; its next read of that channel goes to the primary.
    let by_c = c.say(other, u, "C's own write").await["id"]
        .as_i64()
        .unwrap();
    let page = c
        .get(&format!("/v1/channels/{other}/messages"))
        .await
        .expect(200);
    assert!(
        page_ids(&page).contains(&by_c),
        "C reads its own write: {page}"
    );
    // The standby has not replayed either write.
    let on_standby: i64 = held
        .query_one(
            "SELECT count(*) FROM messages WHERE id = ANY($1)",
            &[&vec![by_a, by_c]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(on_standby, 0, "the standby really is behind");

    // Past the lag bound it leaves the rotation, with the reason; reads go on.
    in_rotation(&a, false).await;
    let stats = cache_stats(&a).await;
    let reason = replica(&stats)["error"].as_str().unwrap().to_owned();
    assert!(reason.contains("behind"), "{reason}");
    let metrics = a.metrics_text().await;
    assert!(
        metrics.contains(&format!(
            "hotchan_postgres_replica_up{{replica=\"127.0.0.1:{}\"}} 0",
            standby.port
        )),
        "{metrics}"
    );
    for cid in &channels {
        c.get(&format!("/v1/channels/{cid}/messages"))
            .await
            .expect(200);
    }

    // Replaying again, it catches up and comes back by itself.
    held.execute("SELECT pg_wal_replay_resume()", &[])
        .await
        .unwrap();
    in_rotation(&a, true).await;
    in_rotation(&c, true).await;
    let (before, _) = node_reads(&c).await;
    for cid in &channels {
        c.get(&format!("/v1/channels/{cid}/messages"))
            .await
            .expect(200);
    }
    assert!(
        node_reads(&c).await.0 > before,
        "C reads from the standby again"
    );

    // Down, it leaves the rotation and reads answer from the primary, with no error.
    drop(held);
    standby.kill().await;
    in_rotation(&c, false).await;
    for cid in &channels {
        c.get(&format!("/v1/channels/{cid}/messages"))
            .await
            .expect(200);
    }
    for mut app in [a, b, c] {
        app.stop().await;
    }
}

/// The Redis key of a channel's window list, whatever the database identity in the prefix.
async fn window_key(redis: &PrivateRedis, cid: &Uuid) -> String {
    let keys = redis_cli(
        redis.port,
        &["--scan", "--pattern", &format!("*{{{cid}}}:msgs")],
    )
    .await;
    keys.lines().next().map(str::to_owned).unwrap_or_default()
}
