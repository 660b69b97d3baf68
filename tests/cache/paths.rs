//! What each kind of read costs: which tiers it touches, and the path it is timed under.
//! The rule behind them: a read the cache cannot help must not pay for it.

use hotchan::config::CacheMode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, users};
use crate::support::{cache_stats, l1_serving, until_cached};

/// Redis lookups (hits + misses) and Postgres reads so far.
fn costs(stats: &Value) -> (u64, u64) {
    let n = |v: &Value| v.as_u64().unwrap();
    (
        n(&stats["redis"]["hits"]) + n(&stats["redis"]["misses"]),
        n(&stats["postgres_reads"]),
    )
}

#[tokio::test]
async fn a_page_past_a_cursor_never_fetches_a_window() {
    for mode in [CacheMode::Redis, CacheMode::Full] {
        let app = spawn_app_with(|s| {
            s.cache = mode;
            s.hot_window = 20;
            // The two cursor pages below are deep history's first two misses, which
            // queue no fill: the count below is of the pages' own Postgres reads.
            s.fill_after_misses = 3;
        })
        .await;
        let [a] = users();
        let cid = app.group(&[a]).await;
        app.bulk_messages(cid, a, 100).await;
        let latest = until_cached(&app, &format!("/v1/channels/{cid}/messages?limit=5")).await;
        let newest = latest["messages"][0]["id"].as_i64().unwrap();

        let before = costs(&cache_stats(&app).await);
        // Far below the 20-message window, then just inside it.
        let deep = format!("/v1/channels/{cid}/messages?limit=5&before={}", newest - 80);
        let near = format!("/v1/channels/{cid}/messages?limit=5&before={}", newest - 2);
        let deep_page = app.get(&deep).await.expect(200);
        let near_page = app.get(&near).await.expect(200);
        let after = costs(&cache_stats(&app).await);

        assert_eq!(deep_page["messages"].as_array().unwrap().len(), 5);
        assert_eq!(near_page["messages"][0]["id"], newest - 3);
        assert_eq!(
            after.0, before.0,
            "{mode:?}: no Redis read for a cursor page"
        );
        let postgres = after.1 - before.1;
        match mode {
            // Without L1 nothing holds the window in process: both go to Postgres.
            CacheMode::Redis => assert_eq!(postgres, 2),
            // The deep page goes to Postgres; the near one is answered by L1 when L1
            // serves (a loaded machine may bypass it for a moment).
            _ => assert!((1..=2).contains(&postgres), "{postgres}"),
        }
    }
}

/// A sync is a hot read (clients reconnect to the channels they were in): with L1 it
/// reads through the tiers as a latest page does. Both tiers missing, each channel's
/// window and member set is filled once and the fills answer it, with no sync query
/// beside them; then L1 answers it with no Postgres read at all. Without L1 a sync is one
/// Postgres query and never reads Redis (it would decode whole windows).
#[tokio::test]
async fn a_sync_reads_through_the_tiers_with_l1_and_is_one_query_without() {
    for mode in [CacheMode::Redis, CacheMode::Full] {
        let app = spawn_app_with(|s| {
            s.cache = mode;
            s.fill_after_misses = 1;
        })
        .await;
        if mode == CacheMode::Full {
            l1_serving(&app).await;
        }
        let [a, b] = users();
        let (one, two) = (app.group(&[a, b]).await, app.group(&[a, b]).await);
        for cid in [one, two] {
            app.say(cid, b, "hello").await;
        }
        let sync = json!({"channels": {one.to_string(): 0, two.to_string(): 0}, "user_id": a});

        let before = costs(&cache_stats(&app).await);
        let cold = app.post("/v1/sync", sync.clone()).await.expect(200);
        let after = costs(&cache_stats(&app).await);
        let answer = &cold["channels"][one.to_string()];
        assert_eq!(answer["unread_count"], 1, "{cold}");
        assert_eq!(answer["changes"][0]["content"], "hello", "{cold}");
        if mode == CacheMode::Redis {
            assert_eq!(
                (after.0 - before.0, after.1 - before.1),
                (0, 1),
                "one query"
            );
            let again = app.post("/v1/sync", sync.clone()).await.expect(200);
            assert_eq!(again, cold);
            assert_eq!(costs(&cache_stats(&app).await).0, after.0, "never Redis");
            continue;
        }
        assert_eq!(
            (after.0 - before.0, after.1 - before.1),
            (4, 4),
            "a Redis miss and a fill for each window and member set, no more"
        );

        let mut from_l1 = false;
        for _ in 0..20 {
            let before = costs(&cache_stats(&app).await);
            let warm = app.post("/v1/sync", sync.clone()).await.expect(200);
            let after = costs(&cache_stats(&app).await);
            assert_eq!(warm, cold, "the same answer from every path");
            if after.1 == before.1 {
                // L1 holds all four, unless it bypassed a moment (then Redis did).
                let redis = after.0 - before.0;
                assert!(redis == 0 || redis == 4, "{redis}");
                from_l1 = true;
                break;
            }
        }
        assert!(from_l1, "a warm sync still read Postgres");
    }
}

#[tokio::test]
async fn the_first_miss_of_a_channel_fills_nothing_and_reads_are_timed_by_path() {
    // The admission of fills is what this tests: a fill after the second miss.
    let app = spawn_app_with(|s| {
        s.cache = CacheMode::Redis;
        s.fill_after_misses = 2;
    })
    .await;
    let [a] = users();
    let cid = app.group(&[a]).await;
    app.say(cid, a, "hi").await;
    let page = format!("/v1/channels/{cid}/messages");

    app.get(&page).await.expect(200);
    // Give a wrongly queued fill time to land before checking that none did.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let first = cache_stats(&app).await;
    assert_eq!(first["fills"], 0, "{first}");
    assert_eq!(first["latency_by_path"]["fill"]["reads"], 1, "{first}");

    until_cached(&app, &page).await;
    let stats = cache_stats(&app).await;
    assert_eq!(stats["fills"], 1, "the second miss filled: {stats}");
    let paths = &stats["latency_by_path"];
    assert!(paths["redis"]["reads"].as_u64().unwrap() >= 1, "{paths}");
    assert!(paths["redis"]["p99_ms"].as_f64().unwrap() > 0.0, "{paths}");
    assert_eq!(paths["l1"]["reads"], 0, "no L1 in redis mode: {paths}");
}

#[tokio::test]
async fn a_key_never_seen_in_redis_costs_no_round_trip_until_a_fill_finds_it_there() {
    let mut settings = crate::helpers::test_settings();
    settings.cache = CacheMode::Redis;
    // A miss not admitted for a fill is what skips Redis; the second is admitted.
    settings.fill_after_misses = 2;
    let a = crate::helpers::spawn_with_settings(settings.clone()).await;
    let b = crate::helpers::spawn_with_settings(settings).await;
    let [u] = users();
    let cid = a.group(&[u]).await;
    a.say(cid, u, "hello").await;
    let page = format!("/v1/channels/{cid}/messages");
    until_cached(&a, &page).await; // a's fill put the window in Redis

    let n = |s: &Value, k: &str| s["redis"][k].as_u64().unwrap();
    let before = cache_stats(&b).await;
    b.get(&page).await.expect(200);
    let after = cache_stats(&b).await;
    assert_eq!(n(&after, "skipped"), n(&before, "skipped") + 1, "{after}");
    assert_eq!(
        (n(&after, "hits"), n(&after, "misses")),
        (n(&before, "hits"), n(&before, "misses")),
        "b never saw the window in Redis: it did not ask"
    );
    // The second miss is admitted for a fill: it reads Redis first, finds a's window and
    // marks it; from then on b reads Redis, and fills nothing itself.
    let body = until_cached(&b, &page).await;
    assert_eq!(body["messages"][0]["content"], "hello");
    assert_eq!(
        cache_stats(&b).await["fills"],
        before["fills"],
        "found, not filled"
    );
}

/// No run-time routing: with every Redis answer held back 20 ms, so that Postgres alone
/// looks faster on this machine, a latest page that Redis holds is still answered by
/// Redis, not sent to Postgres; every answer stays exact, a new post included.
#[tokio::test]
async fn a_slow_redis_still_answers_what_it_holds() {
    use crate::support::{Link, Proxy};
    use std::time::Duration;

    let Some(proxy) = Proxy::to_shared_redis().await else {
        return;
    };
    let app = spawn_app_with(|s| {
        s.cache = CacheMode::Redis;
        s.redis_url = proxy.url();
        s.fill_after_misses = 1;
    })
    .await;
    let [a] = users();
    let cid = app.group(&[a]).await;
    app.bulk_messages(cid, a, 30).await;
    let url = format!("/v1/channels/{cid}/messages?limit=10");
    let expected = until_cached(&app, &url).await;
    proxy.set(Link::Slow(Duration::from_millis(20)));

    let (redis_before, postgres_before) = costs(&cache_stats(&app).await);
    // One after another: concurrent reads of one key share one Redis read.
    for _ in 0..32 {
        assert_eq!(app.get(&url).await.expect(200), expected);
    }
    let (redis, postgres) = costs(&cache_stats(&app).await);
    assert_eq!(
        postgres - postgres_before,
        0,
        "cached reads went to Postgres"
    );
    assert_eq!(redis - redis_before, 32, "every read asked Redis");

    // A post lands in the cached window (write-through), and the next read shows it.
    let posted = app.say(cid, a, "after the slowdown").await;
    let page = app.get(&url).await.expect(200);
    assert_eq!(page["messages"][0]["id"], posted["id"], "{page}");
    assert_eq!(
        costs(&cache_stats(&app).await).1,
        postgres,
        "still no Postgres read"
    );
}
