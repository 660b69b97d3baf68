//! An asymmetric partition: instance A is cut off from Redis (through a proxy), instance B
//! is not. What A writes, B still shows within 1 second (promise 3), although A can neither
//! run the channel's script nor publish: A announces the write through Postgres and B
//! drops what it holds. Once the partition heals, nothing stale remains on either.

use hotchan::config::CacheMode;
use serde_json::{json, Value};

use crate::helpers::{spawn_with_settings, test_settings, users, TestApp};
use crate::support::{cache_stats, cached, eventually, within_promise, Link, Proxy};

struct Partition {
    /// Reaches Redis only through `proxy`.
    a: TestApp,
    /// Reaches Redis directly.
    b: TestApp,
    /// `--cache off` on the same database: what Postgres says.
    truth: TestApp,
    proxy: Proxy,
}

async fn partition(mode: CacheMode) -> Option<Partition> {
    let proxy = Proxy::to_shared_redis().await?;
    let mut settings = test_settings();
    settings.cache = mode;
    let b = spawn_with_settings(settings.clone()).await;
    let mut behind = settings.clone();
    behind.redis_url = proxy.url();
    let a = spawn_with_settings(behind).await;
    let mut off = settings;
    off.cache = CacheMode::Off;
    let truth = spawn_with_settings(off).await;
    for app in [&a, &b] {
        eventually(
            std::time::Duration::from_secs(20),
            "notice listener up",
            || async { cache_stats(app).await["notices"]["listening"] == true },
        )
        .await;
    }
    Some(Partition { a, b, truth, proxy })
}

fn received(stats: &Value) -> u64 {
    stats["notices"]["received"].as_u64().unwrap()
}

/// Makes B serve `path` from its tiers, runs `write` on A, and checks that B shows it
/// (`check`) within the promise, through a notice it received.
async fn b_shows_within_a_second<W, Fut>(
    p: &Partition,
    path: &str,
    what: &str,
    write: W,
    check: impl Fn(&Value) -> bool,
) where
    W: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    cached(&p.b, path).await;
    assert!(
        !check(&p.b.get(path).await.expect(200)),
        "{what}: not shown yet"
    );
    let heard = received(&cache_stats(&p.b).await);
    write().await;
    within_promise(&p.b, path, what, check).await;
    assert!(
        received(&cache_stats(&p.b).await) > heard,
        "{what}: B was told through Postgres"
    );
}

/// Every kind of write on A, each seen by B within a second; then the partition heals.
async fn writes_of_a_cut_off_instance_show_on_the_other(mode: CacheMode) {
    let Some(p) = partition(mode).await else {
        return;
    };
    let (a, b) = (&p.a, &p.b);
    let [u, v, w] = users();
    let cid = a.group(&[u, v]).await;
    let first = a.say(cid, v, "first").await;
    let page = format!("/v1/channels/{cid}/messages");
    let members = format!("/v1/channels/{cid}/members");
    let unread = format!("/v1/channels/{cid}/unread?user_id={u}");
    cached(a, &page).await;

    p.proxy.set(Link::Blackhole);

    let mut second = Value::Null;
    b_shows_within_a_second(
        &p,
        &page,
        "a post",
        || async {
            second = a.say(cid, v, "second").await;
        },
        |page| page["messages"][0]["content"] == "second",
    )
    .await;
    let second_id = second["id"].as_i64().unwrap();

    b_shows_within_a_second(
        &p,
        &page,
        "an edit",
        || async {
            a.patch(
                &format!("/v1/messages/{}", first["id"]),
                json!({"content": "first, edited"}),
            )
            .await
            .expect(200);
        },
        |page| page["messages"][1]["content"] == "first, edited",
    )
    .await;

    b_shows_within_a_second(
        &p,
        &page,
        "a delete",
        || async {
            a.delete(&format!("/v1/messages/{second_id}"))
                .await
                .expect(204);
        },
        |page| page["messages"][0]["content"] == "first, edited",
    )
    .await;
    let tombstone = b
        .get(&format!("/v1/messages/{second_id}"))
        .await
        .expect(200);
    assert_eq!(tombstone["content"], Value::Null, "{tombstone}");

    b_shows_within_a_second(
        &p,
        &members,
        "a new member",
        || async {
            a.put(
                &format!("/v1/channels/{cid}/members/{w}"),
                Some(json!({"role": "admin"})),
            )
            .await
            .expect(200);
        },
        |list| list["members"].as_array().unwrap().len() == 3,
    )
    .await;

    let member_w = format!("/v1/channels/{cid}/members/{w}");
    b_shows_within_a_second(
        &p,
        &member_w,
        "a role change",
        || async {
            a.put(&member_w, Some(json!({"role": "owner"})))
                .await
                .expect(200);
        },
        |member| member["role"] == "owner",
    )
    .await;

    b_shows_within_a_second(
        &p,
        &unread,
        "a read marker",
        || async {
            a.post(
                &format!("/v1/channels/{cid}/read"),
                json!({"user_id": u, "message_id": first["id"]}),
            )
            .await
            .expect(200);
        },
        |count| count["unread_count"] == 0,
    )
    .await;

    b_shows_within_a_second(
        &p,
        &members,
        "a removed member",
        || async {
            a.delete(&member_w).await.expect(204);
        },
        |list| list["members"].as_array().unwrap().len() == 2,
    )
    .await;

    // Heal: A drops what it wrote from Redis and closes its breaker; then both instances
    // answer what Postgres says, from their tiers.
    p.proxy.set(Link::Pass);
    eventually(std::time::Duration::from_secs(20), "A repaired", || async {
        let s = cache_stats(a).await;
        s["redis"]["breaker"] == "closed" && s["redis"]["dirty_channels"] == 0
    })
    .await;
    let channel = format!("/v1/channels/{cid}");
    for path in [&page, &members, &unread, &channel] {
        let expected = p.truth.get(path).await;
        for app in [a, b] {
            cached(app, path).await;
            let answer = app.get(path).await;
            assert_eq!(answer.status, expected.status, "{path}");
            assert_eq!(answer.body, expected.body, "{path}");
        }
    }
}

#[tokio::test]
async fn with_l1_a_writer_cut_off_from_redis_still_invalidates_the_other_instance() {
    writes_of_a_cut_off_instance_show_on_the_other(CacheMode::Full).await;
}

#[tokio::test]
async fn without_l1_a_writer_cut_off_from_redis_still_invalidates_the_other_instance() {
    writes_of_a_cut_off_instance_show_on_the_other(CacheMode::Redis).await;
}

/// How long a listener that lost its connection takes to reconnect and catch up.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(3);

#[tokio::test]
async fn a_listener_that_lost_its_connection_catches_up_on_what_it_missed() {
    let Some(p) = partition(CacheMode::Full).await else {
        return;
    };
    let [u] = users();
    let cid = p.a.group(&[u]).await;
    let first = p.a.say(cid, u, "first").await;
    let page = format!("/v1/channels/{cid}/messages");
    cached(&p.b, &page).await;
    p.proxy.set(Link::Blackhole);

    // Cut every notice listener's connection: B's too, so it misses the live notice.
    let killed =
        p.b.pg()
            .await
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = $1",
                &[&hotchan::postgres::LISTENER_APPLICATION_NAME],
            )
            .await
            .unwrap();
    assert!(killed.len() >= 2, "both instances listen");
    eventually(CATCH_UP, "B noticed its listener is gone", || async {
        cache_stats(&p.b).await["notices"]["listening"] == false
    })
    .await;
    p.a.patch(
        &format!("/v1/messages/{}", first["id"]),
        json!({"content": "edited while B was not listening"}),
    )
    .await
    .expect(200);

    eventually(CATCH_UP, "B caught up", || async {
        p.b.get(&page).await.expect(200)["messages"][0]["content"]
            == "edited while B was not listening"
    })
    .await;
    assert_eq!(cache_stats(&p.b).await["notices"]["listening"], true);
}

#[tokio::test]
async fn an_instance_that_starts_after_a_write_redis_missed_does_not_serve_the_old_entry() {
    let Some(proxy) = Proxy::to_shared_redis().await else {
        return;
    };
    let mut settings = test_settings();
    settings.cache = CacheMode::Redis;
    let mut behind = settings.clone();
    behind.redis_url = proxy.url();
    let a = spawn_with_settings(behind).await;
    let [u] = users();
    let cid = a.group(&[u]).await;
    let first = a.say(cid, u, "first").await;
    let page = format!("/v1/channels/{cid}/messages");
    cached(&a, &page).await; // the window is in Redis
    proxy.set(Link::Blackhole);
    a.patch(
        &format!("/v1/messages/{}", first["id"]),
        json!({"content": "edited while nobody else ran"}),
    )
    .await
    .expect(200);

    // B starts now, with Redis still holding the window from before the edit.
    let b = spawn_with_settings(settings).await;
    eventually(CATCH_UP, "B listening", || async {
        cache_stats(&b).await["notices"]["listening"] == true
    })
    .await;
    let answer = b.get(&page).await.expect(200);
    assert_eq!(
        answer["messages"][0]["content"], "edited while nobody else ran",
        "{answer}"
    );
    assert!(received(&cache_stats(&b).await) >= 1);
}
