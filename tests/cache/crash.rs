//! API.md promise 7: an instance killed between a write's commit and its cache step
//! leaves nothing stale behind. Instance A is the real binary with a crash point armed
//! (`--crash-at`, which aborts the process at that step of its first write); B, in
//! process, shares its database and Redis prefix and holds the old data in L1 and Redis.
//! For every write kind and both crash points, B serves the write within 3 s of A's
//! death; a restarted A serves it as soon as it serves at all.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use hotchan::config::CacheMode;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{
    hotchan, spawn_with_settings, test_settings, users, wait_for_serving, KillOnDrop, TestApp,
};
use crate::support::{cache_stats, eventually, l1_serving};

/// Promise 7, for the surviving instances.
const SURVIVORS: Duration = Duration::from_secs(3);
/// Promise 7, for a restarted instance.
const RESTARTED: Duration = Duration::from_secs(1);

/// `hotchan serve` on `app`'s database and Redis prefix, with `crash_at` armed; its base URL.
fn start_binary(app: &TestApp, crash_at: Option<&str>) -> (KillOnDrop, String) {
    let mut command = hotchan();
    command
        .arg("serve")
        .env("HOTCHAN_DATABASE_URL", &app.db_url)
        .env("HOTCHAN_REDIS_URL", &app.settings.redis_url)
        .env("HOTCHAN_REDIS_PREFIX", &app.settings.redis_prefix)
        .env("HOTCHAN_CACHE", "full")
        .env("HOTCHAN_LISTEN", "127.0.0.1:0")
        .env("HOTCHAN_LOG_FORMAT", "json")
        .env("HOTCHAN_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(point) = crash_at {
        command.env("HOTCHAN_CRASH_AT", point);
    }
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = wait_for_serving(&mut lines, &mut String::new());
    // Keep reading, so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (KillOnDrop(child), format!("http://{addr}"))
}

/// Every write kind of promise 7.
#[derive(Debug, Clone, Copy)]
enum Write {
    Post,
    Edit,
    Delete,
    MemberAdd,
    MemberRemove,
    MarkRead,
    FeedPublish,
    FeedDelete,
}

const WRITES: [Write; 8] = [
    Write::Post,
    Write::Edit,
    Write::Delete,
    Write::MemberAdd,
    Write::MemberRemove,
    Write::MarkRead,
    Write::FeedPublish,
    Write::FeedDelete,
];

/// A channel of alice and bob with three messages of alice's and an event of alice's in
/// bob's feed, made through `app`.
struct Scene {
    channel: Uuid,
    alice: Uuid,
    bob: Uuid,
    carol: Uuid,
    messages: Vec<i64>,
    event: i64,
}

impl Scene {
    async fn make(app: &TestApp) -> Scene {
        let [alice, bob, carol] = users();
        let channel = app.group(&[alice, bob]).await;
        let mut messages = Vec::new();
        for n in 0..3 {
            let m = app.say(channel, alice, &format!("m{n}")).await;
            messages.push(m["id"].as_i64().unwrap());
        }
        let event = app
            .post("/v1/events", event_body(alice, channel))
            .await
            .expect(201);
        Scene {
            channel,
            alice,
            bob,
            carol,
            messages,
            event: event["event"]["id"].as_i64().unwrap(),
        }
    }

    /// The read that shows `write`.
    fn read(&self, write: Write) -> String {
        let (c, bob) = (self.channel, self.bob);
        match write {
            Write::Post | Write::Edit | Write::Delete => format!("/v1/channels/{c}/messages"),
            Write::MemberAdd | Write::MemberRemove => format!("/v1/channels/{c}/members"),
            Write::MarkRead => format!("/v1/channels/{c}/unread?user_id={bob}"),
            Write::FeedPublish | Write::FeedDelete => format!("/v1/users/{bob}/feed"),
        }
    }

    /// The request that makes `write`.
    fn request(&self, write: Write) -> (Method, String, Option<Value>) {
        let (c, [m0, _, m2]) = (self.channel, [0, 1, 2].map(|i| self.messages[i]));
        match write {
            Write::Post => (
                Method::POST,
                format!("/v1/channels/{c}/messages"),
                Some(json!({"sender_id": self.alice, "content": "after the crash"})),
            ),
            Write::Edit => (
                Method::PATCH,
                format!("/v1/messages/{m0}"),
                Some(json!({"content": "edited before the crash"})),
            ),
            Write::Delete => (Method::DELETE, format!("/v1/messages/{m0}"), None),
            Write::MemberAdd => (
                Method::PUT,
                format!("/v1/channels/{c}/members/{}", self.carol),
                None,
            ),
            Write::MemberRemove => (
                Method::DELETE,
                format!("/v1/channels/{c}/members/{}", self.bob),
                None,
            ),
            Write::MarkRead => (
                Method::POST,
                format!("/v1/channels/{c}/read"),
                Some(json!({"user_id": self.bob, "message_id": m2})),
            ),
            Write::FeedPublish => (
                Method::POST,
                "/v1/events".to_owned(),
                Some(event_body(self.alice, c)),
            ),
            Write::FeedDelete => (Method::DELETE, format!("/v1/events/{}", self.event), None),
        }
    }

    /// Whether `answer` (of [`Scene::read`]) shows `write`.
    fn shows(&self, write: Write, answer: &Value) -> bool {
        let ids = |list: &str, field: &str| -> Vec<Value> {
            answer[list]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x[field].clone())
                .collect()
        };
        let m0 = json!(self.messages[0]);
        match write {
            Write::Post => answer["messages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["content"] == "after the crash"),
            Write::Edit => answer["messages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["id"] == m0 && m["content"] == "edited before the crash"),
            Write::Delete => !ids("messages", "id").contains(&m0),
            Write::MemberAdd => ids("members", "user_id").contains(&json!(self.carol)),
            Write::MemberRemove => !ids("members", "user_id").contains(&json!(self.bob)),
            Write::MarkRead => answer["unread_count"] == 0,
            Write::FeedPublish => ids("events", "id").len() == 2,
            Write::FeedDelete => !ids("events", "id").contains(&json!(self.event)),
        }
    }
}

fn event_body(actor: Uuid, channel: Uuid) -> Value {
    json!({"actor_id": actor, "verb": "posted", "object_type": "note",
           "object_id": Uuid::new_v4().to_string(), "channel_ids": [channel]})
}

/// Sends `write` to the binary at `base`, which dies on it; returns when it is dead.
async fn crash_on(mut a: KillOnDrop, base: &str, scene: &Scene, write: Write) -> Instant {
    let (method, path, body) = scene.request(write);
    let mut request = reqwest::Client::new().request(method, format!("{base}{path}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.timeout(Duration::from_secs(30)).send().await;
    assert!(
        answer.is_err(),
        "{write:?}: the crash point did not stop the instance: {answer:?}"
    );
    let status = tokio::task::spawn_blocking(move || a.0.wait().unwrap())
        .await
        .unwrap();
    assert!(!status.success(), "{write:?}: {status:?}");
    Instant::now()
}

/// Waits until every row of the outbox is gone (a write's row goes within 100 ms of its
/// cache step).
async fn no_rows(app: &TestApp) {
    eventually(Duration::from_secs(5), "no outbox row", || async {
        outbox_rows(app).await == 0
    })
    .await;
}

/// Reads `path` on `app` until a read is answered from L1 alone (L1 hits, no Postgres).
async fn warm(app: &TestApp, path: &str) {
    eventually(Duration::from_secs(10), "held in L1", || async {
        let before = cache_stats(app).await;
        app.get(path).await.expect(200);
        let after = cache_stats(app).await;
        after["l1"]["hits"].as_u64() > before["l1"]["hits"].as_u64()
            && after["l1"]["misses"] == before["l1"]["misses"]
            && after["postgres_reads"] == before["postgres_reads"]
    })
    .await;
}

async fn outbox_rows(app: &TestApp) -> i64 {
    app.pg()
        .await
        .query_one("SELECT count(*) FROM cache_outbox", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_cut_short_between_commit_and_cache_shows_on_a_survivor_within_3_s() {
    let mut settings = test_settings();
    settings.cache = CacheMode::Full;
    let b = spawn_with_settings(settings).await;
    l1_serving(&b).await;
    for point in ["after-commit", "after-redis"] {
        for write in WRITES {
            let scene = Scene::make(&b).await;
            let path = scene.read(write);
            // Once B's own rows are gone (else A would replay them when it starts).
            no_rows(&b).await;
            warm(&b, &path).await;
            assert!(!scene.shows(write, &b.get(&path).await.expect(200)));
            let replayed = cache_stats(&b).await["outbox_replayed"].as_u64().unwrap();

            let (a, base) = start_binary(&b, Some(point));
            crash_on(a, &base, &scene, write).await;
            let took = eventually(
                SURVIVORS,
                &format!("{point} {write:?} on the survivor"),
                || async { scene.shows(write, &b.get(&path).await.expect(200)) },
            )
            .await;
            // The survivor replayed the write's outbox row (nobody else could), and
            // the row is gone.
            eventually(SURVIVORS, "the row replayed and deleted", || async {
                outbox_rows(&b).await == 0
            })
            .await;
            let now = cache_stats(&b).await["outbox_replayed"].as_u64().unwrap();
            assert!(
                now > replayed,
                "{point} {write:?}: no outbox row was replayed"
            );
            eprintln!("{point} {write:?}: shown {took:?} after the crash");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_instance_serves_nothing_a_write_cut_short_replaced() {
    // B only makes the scene and is stopped: nobody survives A's crash.
    let mut settings = test_settings();
    settings.cache = CacheMode::Full;
    let mut b = spawn_with_settings(settings).await;
    let scenes = [
        (Write::Post, Scene::make(&b).await),
        (Write::Delete, Scene::make(&b).await),
    ];
    no_rows(&b).await;
    b.stop().await;
    for (write, scene) in &scenes {
        let (a, base) = start_binary(&b, Some("after-commit"));
        let path = scene.read(*write);
        let http = reqwest::Client::new();
        // Read twice: the first read fills Redis.
        for _ in 0..2 {
            let answer = http.get(format!("{base}{path}")).send().await.unwrap();
            assert!(!scene.shows(*write, &answer.json().await.unwrap()));
        }
        crash_on(a, &base, scene, *write).await;
        assert!(outbox_rows(&b).await >= 1, "the write left no outbox row");

        let (_a, base) = start_binary(&b, None);
        let started = Instant::now();
        let answer: Value = http
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            scene.shows(*write, &answer) && started.elapsed() < RESTARTED,
            "{write:?}: {answer}"
        );
    }
}
