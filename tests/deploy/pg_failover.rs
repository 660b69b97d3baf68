//! The Postgres primary fails over (issue #26, part 2): a private primary with a
//! synchronous streaming standby, and an instance whose URL names both hosts with
//! `target_session_attrs=read-write`. Under a running writer and reader, the primary is
//! killed and the standby promoted. Writes in flight answer 503 and are retried with their
//! `client_msg_id`; the instance follows the new primary, notices the new timeline and
//! drops what it cached; no acknowledged write is lost, none is stored twice, and no read
//! misses a write acknowledged before it began.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hotchan::config::CacheMode;
use hotchan::postgres::parse_database_url;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{page_ids, spawn_with_settings, test_settings, users, TestApp};
use crate::postgres_servers::Postgres;
use crate::servers::PrivateRedis;
use crate::support::{cache_stats, eventually};

/// Writes the test stops at.
const WRITES: usize = 60;

/// An instance whose URL names both servers, with `target_session_attrs=read-write`, on a
/// private Redis; with its database's name, and the Redis (stopped when dropped).
async fn instance(primary: &Postgres, standby: &Postgres) -> (TestApp, String, PrivateRedis) {
    let redis = PrivateRedis::start(&[]).await;
    let prefix = format!("hct_{}", Uuid::new_v4().simple());
    let db = format!("hctest_{prefix}");
    let mut settings = test_settings();
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{db}?target_session_attrs=read-write",
        primary.port, standby.port
    );
    settings.db.database_url = parse_database_url(&url).unwrap();
    settings.db.pg_connect_timeout_ms = 1000;
    settings.redis_url = format!("redis://127.0.0.1:{}", redis.port);
    settings.redis_prefix = prefix;
    settings.cache = CacheMode::Full;
    (spawn_with_settings(settings).await, db, redis)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failover_loses_no_acknowledged_write_and_serves_nothing_stale() {
    let primary = Postgres::start("synchronous_standby_names = 's1'").await;
    let standby = Postgres::standby_of(&primary, "s1").await;
    let (app, db, _redis) = instance(&primary, &standby).await;
    let app = Arc::new(app);
    let [u] = users::<1>();
    let cid = app.group(&[u]).await;

    let acked = Arc::new(Mutex::new(Vec::<i64>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (app, acked) = (app.clone(), acked.clone());
        tokio::spawn(async move {
            let mut refused = 0;
            for i in 0..WRITES {
                let body = json!({"sender_id": u, "content": format!("m{i}"), "client_msg_id": format!("m{i}")});
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let answer = app
                        .post(&format!("/v1/channels/{cid}/messages"), body.clone())
                        .await;
                    match answer.status.as_u16() {
                        200 | 201 => {
                            acked
                                .lock()
                                .unwrap()
                                .push(answer.body["id"].as_i64().unwrap());
                            break;
                        }
                        503 => refused += 1,
                        other => panic!("a write answered {other}: {}", answer.body),
                    }
                    assert!(
                        Instant::now() < deadline,
                        "write m{i} acknowledged within 30 s"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            refused
        })
    };
    let reader = {
        let (app, acked, done) = (app.clone(), acked.clone(), done.clone());
        tokio::spawn(async move {
            let (mut reads, mut stale) = (0, Vec::new());
            while !done.load(Ordering::Relaxed) {
                let before: Vec<i64> = acked.lock().unwrap().clone();
                let answer = app
                    .get(&format!("/v1/channels/{cid}/messages?limit=100"))
                    .await;
                if answer.status == 200 {
                    reads += 1;
                    let ids = page_ids(&answer.body);
                    let missing: Vec<i64> =
                        before.into_iter().filter(|id| !ids.contains(id)).collect();
                    if !missing.is_empty() {
                        stale.push(missing);
                    }
                }
            }
            (reads, stale)
        })
    };

    // A third of the writes in, the primary dies and the standby takes over.
    eventually(
        Duration::from_secs(20),
        "writes before the failover",
        || async { acked.lock().unwrap().len() >= WRITES / 3 },
    )
    .await;
    primary.kill().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    standby.promote().await;
    let refused = tokio::time::timeout(Duration::from_secs(60), writer)
        .await
        .expect("the writer finishes within 60 s")
        .unwrap();
    done.store(true, Ordering::Relaxed);
    let (reads, stale) = reader.await.unwrap();

    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), WRITES);
    assert!(reads > 0, "the reader read");
    assert!(
        stale.is_empty(),
        "reads missed acknowledged writes: {stale:?}"
    );
    // Synchronous replication: every acknowledged write is on the new primary, once.
    let new_primary = standby.connect(&db).await;
    let rows = new_primary
        .query(
            "SELECT id, client_msg_id FROM messages WHERE channel_id = $1",
            &[&cid],
        )
        .await
        .unwrap();
    let stored: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    for id in &acked {
        assert!(
            stored.contains(id),
            "acknowledged write {id} is on the new primary"
        );
    }
    assert_eq!(rows.len(), WRITES, "each client_msg_id stored once");
    // The instance saw the new timeline, and serves what the new primary holds.
    let stats = cache_stats(&app).await;
    assert!(
        stats["postgres"]["failovers"].as_u64().unwrap() >= 1,
        "{}",
        stats["postgres"]
    );
    let page = app
        .get(&format!("/v1/channels/{cid}/messages?limit=100"))
        .await
        .expect(200);
    let mut served = page_ids(&page);
    served.sort();
    let mut expected = stored.clone();
    expected.sort();
    assert_eq!(served, expected);
    println!("failover: {reads} reads, {refused} writes refused with 503 and retried");
    drop(new_primary);
    Arc::try_unwrap(app)
        .ok()
        .expect("the tasks are done")
        .stop()
        .await;
}

/// Posts `content` until it is acknowledged (a failover answers 503 for a while); its id.
async fn post_until_acknowledged(app: &TestApp, cid: Uuid, u: Uuid, content: &str) -> i64 {
    let body = json!({"sender_id": u, "content": content, "client_msg_id": content});
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = app
            .post(&format!("/v1/channels/{cid}/messages"), body.clone())
            .await;
        if answer.status.is_success() {
            return answer.body["id"].as_i64().unwrap();
        }
        assert_eq!(answer.status, 503, "{}", answer.body);
        assert!(
            Instant::now() < deadline,
            "{content} acknowledged within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// With asynchronous replication a failover loses the writes the standby had not
/// received. The cache held them; after the failover it must neither serve them as if
/// they were in the database nor let them hide the writes that follow (whose seqs the new
/// primary hands out again).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_an_asynchronous_failover_the_cache_shows_the_new_primary() {
    let primary = Postgres::start("").await;
    let standby = Postgres::standby_of(&primary, "s1").await;
    let (mut app, db, _redis) = instance(&primary, &standby).await;
    let [u] = users::<1>();
    let cid = app.group(&[u]).await;
    let read = || async {
        let page = app
            .get(&format!("/v1/channels/{cid}/messages?limit=100"))
            .await
            .expect(200);
        let mut ids = page_ids(&page);
        ids.sort();
        ids
    };
    for i in 0..10 {
        post_until_acknowledged(&app, cid, u, &format!("kept {i}")).await;
    }
    let standby_db = standby.connect(&db).await;
    eventually(
        Duration::from_secs(10),
        "the standby has the first writes",
        || async {
            let n: i64 = standby_db
                .query_one("SELECT count(*) FROM messages", &[])
                .await
                .unwrap()
                .get(0);
            n == 10
        },
    )
    .await;
    // The standby stops receiving; these writes will be lost.
    let admin = standby.connect("postgres").await;
    for statement in [
        "ALTER SYSTEM SET primary_conninfo = ''",
        "SELECT pg_reload_conf()",
    ] {
        admin.batch_execute(statement).await.unwrap();
    }
    let on_primary = primary.connect("postgres").await;
    eventually(
        Duration::from_secs(10),
        "the standby is detached",
        || async {
            let n: i64 = on_primary
                .query_one("SELECT count(*) FROM pg_stat_replication", &[])
                .await
                .unwrap()
                .get(0);
            n == 0
        },
    )
    .await;
    drop(on_primary);
    for i in 0..5 {
        post_until_acknowledged(&app, cid, u, &format!("lost {i}")).await;
    }
    assert_eq!(
        read().await.len(),
        15,
        "the cache holds the writes to be lost"
    );

    primary.kill().await;
    standby.promote().await;
    let mut after = Vec::new();
    for i in 0..5 {
        after.push(post_until_acknowledged(&app, cid, u, &format!("after {i}")).await);
    }
    let mut stored: Vec<i64> = standby_db
        .query("SELECT id FROM messages WHERE channel_id = $1", &[&cid])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    stored.sort();
    assert_eq!(stored.len(), 15, "10 kept and 5 written after the failover");
    let served = read().await;
    for id in &after {
        assert!(
            served.contains(id),
            "a write acknowledged after the failover is served: {served:?}"
        );
    }
    assert_eq!(served, stored, "the cache shows what the new primary holds");
    let stats = cache_stats(&app).await;
    assert_eq!(
        stats["postgres"]["failovers"],
        json!(1),
        "{}",
        stats["postgres"]
    );
    drop((standby_db, admin));
    app.stop().await;
}
