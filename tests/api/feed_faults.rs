//! Feeds under concurrency, retention and a crash: `after` pagers never skip, expired
//! events vanish on time and their partitions are dropped (never row deletes), and a
//! fan-out cut short by SIGKILL is finished exactly once by the next start.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use uuid::Uuid;

use crate::cli::DropDatabase;
use crate::feeds::{bulk_members, ids};
use crate::helpers::{hotchan, wait_for_serving, KillOnDrop};
use crate::helpers::{pg_server, redis_url, spawn_app_with, TEST_DB_PREFIX};

async fn wait_until<F, Fut>(what: &str, limit: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_pagers_see_every_event_once_while_publishers_and_a_fan_out_race() {
    // Small batches, so the background fan-outs run while the small publishes go on.
    let app = Arc::new(spawn_app_with(|s| s.feeds.feed_fanout_batch = 150).await);
    let readers: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let actor = Uuid::new_v4();
    let channel = app.group(&readers).await;
    bulk_members(&app, channel, 1_500).await;
    let publishing = Arc::new(AtomicBool::new(true));

    let mut publishers = Vec::new();
    for p in 0..4 {
        let (app, readers) = (app.clone(), readers.clone());
        publishers.push(tokio::spawn(async move {
            for i in 0..30 {
                // Every tenth event goes to the whole channel (a background fan-out);
                // the rest to two of the readers (delivered before the answer).
                let audience = if i % 10 == p {
                    json!({"channel_ids": [channel]})
                } else {
                    json!({"user_ids": [readers[i % 4], readers[(i + p) % 4]]})
                };
                let mut body = json!({"actor_id": actor, "verb": "v", "object_type": "o",
                                      "object_id": format!("{p}-{i}")});
                for (k, v) in audience.as_object().unwrap() {
                    body[k] = v.clone();
                }
                app.post("/v1/events", body).await.expect(201);
            }
        }));
    }
    let mut pagers = Vec::new();
    for &reader in &readers {
        let (app, publishing) = (app.clone(), publishing.clone());
        pagers.push(tokio::spawn(async move {
            let mut seen: Vec<i64> = Vec::new();
            let mut cursor = 0;
            let mut quiet_rounds = 0;
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                assert!(
                    Instant::now() < deadline,
                    "the pager of {reader} never caught up"
                );
                let path = format!("/v1/users/{reader}/feed?after={cursor}&limit=7");
                let (page, _) = ids(&app, &path).await;
                if let Some(&last) = page.last() {
                    cursor = last;
                }
                let empty = page.is_empty();
                seen.extend(page);
                // Stop after the publishers are done, the fan-outs have finished, and
                // two pages in a row came back empty.
                if empty && !publishing.load(Ordering::SeqCst) {
                    quiet_rounds += 1;
                    if quiet_rounds == 2 {
                        return seen;
                    }
                } else {
                    quiet_rounds = 0;
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }));
    }
    for p in publishers {
        p.await.unwrap();
    }
    let pg = app.pg().await;
    wait_until("the fan-outs finish", Duration::from_secs(60), || async {
        let row = pg
            .query_one("SELECT count(*) FROM fanouts", &[])
            .await
            .unwrap();
        row.get::<_, i64>(0) == 0
    })
    .await;
    publishing.store(false, Ordering::SeqCst);
    for (reader, pager) in readers.iter().zip(pagers) {
        let seen = pager.await.unwrap();
        let expected: Vec<i64> = pg
            .query(
                "SELECT event_id FROM feed_items WHERE user_id = $1 ORDER BY event_id",
                &[reader],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(expected.len() >= 30, "{reader} got only {}", expected.len());
        assert_eq!(
            seen, expected,
            "the pager of {reader} skipped or repeated events"
        );
    }
}

#[tokio::test]
async fn expired_events_vanish_on_time_and_whole_partitions_are_dropped() {
    let app = spawn_app_with(|s| {
        s.feeds.feed_retention = "6s".parse().unwrap();
        s.feeds.feed_partition = "2s".parse().unwrap();
    })
    .await;
    let pg = app.pg().await;
    // A row delete or truncate on a feed table would fail the cleanup: it must drop
    // partitions instead.
    pg.batch_execute(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN RAISE EXCEPTION 'feed rows must not be deleted'; END $$;
         CREATE TRIGGER no_delete BEFORE DELETE ON events FOR EACH ROW EXECUTE FUNCTION refuse();
         CREATE TRIGGER no_delete BEFORE DELETE ON feed_items FOR EACH ROW EXECUTE FUNCTION refuse();
         CREATE TRIGGER no_delete BEFORE DELETE ON channel_events FOR EACH ROW EXECUTE FUNCTION refuse();
         CREATE TRIGGER no_truncate BEFORE TRUNCATE ON events FOR EACH STATEMENT EXECUTE FUNCTION refuse();
         CREATE TRIGGER no_truncate BEFORE TRUNCATE ON feed_items FOR EACH STATEMENT EXECUTE FUNCTION refuse();",
    )
    .await
    .unwrap();
    let (actor, reader) = (Uuid::new_v4(), Uuid::new_v4());
    let channel = app.group(&[actor, reader]).await;
    let body = json!({"actor_id": actor, "verb": "v", "object_type": "o", "object_id": "x",
                      "channel_ids": [channel], "client_event_id": "once"});
    let event = app.post("/v1/events", body.clone()).await.expect(201)["event"].clone();
    let id = event["id"].as_i64().unwrap();
    let partition: String = pg
        .query_one(
            "SELECT tableoid::regclass::text FROM events WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    let created = chrono::DateTime::parse_from_rfc3339(event["created_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    assert_eq!(ids(&app, &format!("/v1/users/{reader}/feed")).await.0, [id]);

    // Shortly before the retention passes the event is still there; once it has passed,
    // it is in no answer, even if its partition still exists.
    let age = || {
        chrono::Utc::now()
            .signed_duration_since(created)
            .to_std()
            .unwrap()
    };
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(age())).await;
    app.get(&format!("/v1/events/{id}")).await.expect(200);
    tokio::time::sleep(Duration::from_millis(6_100).saturating_sub(age())).await;
    app.get(&format!("/v1/events/{id}"))
        .await
        .expect_error(404, "not_found");
    app.delete(&format!("/v1/events/{id}"))
        .await
        .expect_error(404, "not_found");
    assert!(ids(&app, &format!("/v1/users/{reader}/feed"))
        .await
        .0
        .is_empty());
    assert!(ids(&app, &format!("/v1/users/{reader}/feed?after=0"))
        .await
        .0
        .is_empty());
    assert!(ids(&app, &format!("/v1/channels/{channel}/events"))
        .await
        .0
        .is_empty());
    let unseen = app
        .get(&format!("/v1/users/{reader}/feed/unseen"))
        .await
        .expect(200);
    assert_eq!(unseen["unseen_count"], 0);
    // The expired original no longer answers a replay.
    let again = app.post("/v1/events", body).await.expect(201);
    assert_ne!(again["event"]["id"], id);

    // Its partitions go whole (by the serve task or by `hotchan feed-cleanup`) once their
    // whole span is past the retention, and no row was deleted on the way (the triggers
    // above would have failed the cleanup).
    let end: i64 = partition.rsplit('_').next().unwrap().parse().unwrap();
    let droppable = chrono::DateTime::from_timestamp(end + 6, 0).unwrap();
    let wait = droppable.signed_duration_since(chrono::Utc::now());
    tokio::time::sleep(wait.to_std().unwrap_or_default() + Duration::from_millis(100)).await;
    // Off the runtime's threads: the server's own upkeep runs on them and may hold the
    // upkeep lock the command waits for.
    let mut command = hotchan();
    command
        .args([
            "feed-cleanup",
            "--feed-retention",
            "6s",
            "--feed-partition",
            "2s",
        ])
        .env("HOTCHAN_DATABASE_URL", &app.db_url);
    let cleanup = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        cleanup.status.success(),
        "{}",
        String::from_utf8_lossy(&cleanup.stderr)
    );
    let suffix = partition.trim_start_matches("events");
    let left: i64 = pg
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname = ANY($1)",
            &[&vec![
                format!("events{suffix}"),
                format!("feed_items{suffix}"),
                format!("channel_events{suffix}"),
            ]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the expired partitions {partition}… still exist");
    let rows: i64 = pg
        .query_one("SELECT count(*) FROM events WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
    // The partitions ahead exist: the current one and the next two, for each table.
    let ahead: i64 = pg
        .query_one(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
             WHERE p.relname = 'events'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ahead >= 3, "{ahead} partitions of events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_cut_short_by_sigkill_is_finished_exactly_once_after_a_restart() {
    const AUDIENCE: i64 = 50_000;
    let db = format!("{TEST_DB_PREFIX}{}", Uuid::new_v4().simple());
    let _cleanup = DropDatabase(db.clone());
    let url = format!("{}/{db}", pg_server());
    let start = || {
        let mut child = hotchan()
            .arg("serve")
            .env("HOTCHAN_DATABASE_URL", &url)
            .env("HOTCHAN_REDIS_URL", redis_url())
            .env(
                "HOTCHAN_REDIS_PREFIX",
                format!("hct_{}", Uuid::new_v4().simple()),
            )
            .env("HOTCHAN_LISTEN", "127.0.0.1:0")
            .env("HOTCHAN_LOG_FORMAT", "json")
            .env("HOTCHAN_FEED_FANOUT_BATCH", "500")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = wait_for_serving(&mut lines, &mut String::new());
        // Keep reading, so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        (KillOnDrop(child), format!("http://{addr}"))
    };
    let (mut first, base) = start();
    let http = reqwest::Client::new();
    let actor = Uuid::new_v4();
    let post = |path: &str, body: serde_json::Value| {
        let request = http.post(format!("{base}{path}")).json(&body);
        async move {
            let answer = request.send().await.unwrap();
            answer.json::<serde_json::Value>().await.unwrap()
        }
    };
    let channel = post(
        "/v1/channels",
        json!({"type": "group", "members": [actor, Uuid::new_v4()]}),
    )
    .await;
    let channel: Uuid = channel["id"].as_str().unwrap().parse().unwrap();
    let (pg, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    pg.execute(
        "INSERT INTO channel_members (channel_id, user_id)
         SELECT $1, gen_random_uuid() FROM generate_series(1, $2::bigint)",
        &[&channel, &(AUDIENCE - 1)],
    )
    .await
    .unwrap();
    let body = json!({"actor_id": actor, "verb": "v", "object_type": "o", "object_id": "big",
                      "channel_ids": [channel]});
    let answer = post("/v1/events", body).await;
    assert_eq!(answer["recipients"], AUDIENCE);
    let id = answer["event"]["id"].as_i64().unwrap();
    let count = |sql: &'static str| {
        let pg = &pg;
        async move { pg.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    wait_until("a few batches are in", Duration::from_secs(30), || async {
        count("SELECT count(*) FROM feed_items").await >= 1_000
    })
    .await;
    first.0.kill().unwrap(); // SIGKILL
    first.0.wait().unwrap();
    let at_kill = count("SELECT count(*) FROM feed_items").await;
    assert!(at_kill < AUDIENCE, "the fan-out finished before the kill");
    assert_eq!(count("SELECT count(*) FROM fanouts").await, 1);

    let (mut second, _) = start();
    wait_until(
        "the restarted instance finishes the fan-out",
        Duration::from_secs(120),
        || async { count("SELECT count(*) FROM fanouts").await == 0 },
    )
    .await;
    let rows = count("SELECT count(*) FROM feed_items").await;
    let users = count("SELECT count(DISTINCT user_id) FROM feed_items").await;
    assert_eq!((rows, users), (AUDIENCE, AUDIENCE), "killed at {at_kill}");
    let members: i64 = pg
        .query_one(
            "SELECT count(*) FROM channel_members m
             JOIN feed_items f ON f.user_id = m.user_id AND f.event_id = $2
             WHERE m.channel_id = $1",
            &[&channel, &id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(members, AUDIENCE);
    second.0.kill().unwrap();
    second.0.wait().unwrap();
}
