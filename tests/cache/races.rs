//! Races ordered by hooks, and what each tier costs.

use std::sync::Arc;

use hotchan::cache::Hooks;
use hotchan::config::CacheMode;
use serde_json::json;

use crate::helpers::{spawn_app_with, spawn_with_hooks, test_settings, users};
use std::time::Duration;

use crate::support::{cache_stats, eventually, hold_first_call, l1_serving, until_cached};

#[tokio::test]
async fn a_fill_held_after_its_postgres_read_is_refused_once_an_edit_committed() {
    // The first (background) fill stops after its Postgres read until the test lets it go.
    let (hook, reached_rx, resume_tx) = hold_first_call();
    let hooks = Hooks {
        after_fill_read: Some(hook),
        ..Hooks::default()
    };
    let mut settings = test_settings();
    settings.cache = CacheMode::Full;
    settings.fill_after_misses = 1;
    let app = Arc::new(spawn_with_hooks(settings, hooks).await);
    let [a] = users();
    let cid = app.group(&[a]).await;
    let message = app.say(cid, a, "original").await;
    let page = format!("/v1/channels/{cid}/messages");

    let reader = tokio::spawn({
        let (app, page) = (app.clone(), page.clone());
        async move { app.get(&page).await.expect(200) }
    });
    reached_rx.await.unwrap();
    app.patch(
        &format!("/v1/messages/{}", message["id"]),
        json!({"content": "edited"}),
    )
    .await
    .expect(200);
    resume_tx.send(()).unwrap();
    reader.await.unwrap();

    // The fill runs in the background: wait for its verdict.
    eventually(Duration::from_secs(5), "the held fill refused", || async {
        cache_stats(&app).await["fills_refused"] == 1
    })
    .await;
    let stats = cache_stats(&app).await;
    assert_eq!(stats["fills"], 0, "{stats}");
    let after = app.get(&page).await.expect(200);
    assert_eq!(after["messages"][0]["content"], "edited");
    let again = app.get(&page).await.expect(200);
    assert_eq!(
        again["messages"][0]["content"], "edited",
        "and the tiers hold the edit"
    );
}

#[tokio::test]
async fn concurrent_misses_on_one_channel_share_one_fill_which_answers_them() {
    for mode in [CacheMode::Full, CacheMode::Redis] {
        let app = spawn_app_with(|s| {
            s.cache = mode;
            s.fill_after_misses = 1;
        })
        .await;
        let [a] = users();
        let cid = app.group(&[a]).await;
        app.bulk_messages(cid, a, 30).await;
        let before = cache_stats(&app).await;

        let path = format!("/v1/channels/{cid}/messages?limit=10");
        let reads = (0..20).map(|_| app.get(&path));
        let pages = futures::future::join_all(reads).await;

        assert!(pages.into_iter().all(|p| p.status.as_u16() == 200));
        let delta = |after: &serde_json::Value, k: &str| {
            after[k].as_u64().unwrap() - before[k].as_u64().unwrap()
        };
        eventually(Duration::from_secs(5), "the fill installed", || async {
            delta(&cache_stats(&app).await, "fills") == 1
        })
        .await;
        let after = cache_stats(&app).await;
        // The misses shared one load, whose fill answered them all (a read that came
        // later found the window in a tier): one Postgres read, nothing filled twice.
        assert_eq!(delta(&after, "postgres_reads"), 1, "{mode:?}: {after}");
        assert_eq!(delta(&after, "fills_refused"), 0, "{mode:?}: {after}");
        let reads_before = after["postgres_reads"].as_u64().unwrap();
        app.get(&path).await.expect(200);
        let again = cache_stats(&app).await;
        assert_eq!(
            again["postgres_reads"].as_u64().unwrap(),
            reads_before,
            "{mode:?}: the filled window answers: {again}"
        );
    }
}

#[tokio::test]
async fn an_l1_hit_touches_neither_redis_nor_postgres() {
    let app = spawn_app_with(|s| s.cache = CacheMode::Full).await;
    let [a] = users();
    let cid = app.group(&[a]).await;
    app.say(cid, a, "hi").await;
    l1_serving(&app).await;
    let page = format!("/v1/channels/{cid}/messages");
    app.get(&page).await.expect(200);
    let count = |s: &serde_json::Value| {
        let n = |v: &serde_json::Value| v.as_u64().unwrap();
        (
            n(&s["l1"]["hits"]),
            n(&s["redis"]["hits"]) + n(&s["redis"]["misses"]),
            n(&s["postgres_reads"]),
        )
    };

    let mut l1_hits = 0;
    for _ in 0..10 {
        let before = count(&cache_stats(&app).await);
        app.get(&page).await.expect(200);
        let after = count(&cache_stats(&app).await);
        // A loaded machine may bypass L1 for a moment; every L1 hit must be network-free.
        if after.0 == before.0 + 1 {
            l1_hits += 1;
            assert_eq!(
                (after.1, after.2),
                (before.1, before.2),
                "an L1 hit went to Redis or Postgres"
            );
        }
    }
    assert!(l1_hits >= 5, "only {l1_hits} of 10 reads came from L1");
}

/// Without L1 a latest page is kept in Redis beside the window and served whole; every
/// write retires it: the very next read shows a post, an edit and a delete.
#[tokio::test]
async fn in_redis_mode_a_kept_page_never_outlives_a_write() {
    let app = spawn_app_with(|s| s.cache = CacheMode::Redis).await;
    let [a] = users();
    let cid = app.group(&[a]).await;
    app.say(cid, a, "first").await;
    let page = format!("/v1/channels/{cid}/messages?limit=5");
    let body = until_cached(&app, &page).await;
    // Twice from Redis: made from the window and kept, then the kept page.
    assert_eq!(app.get(&page).await.expect(200), body);
    assert_eq!(app.get(&page).await.expect(200), body);

    let posted = app.say(cid, a, "second").await;
    let read = app.get(&page).await.expect(200);
    assert_eq!(read["messages"][0]["content"], "second", "{read}");
    assert_eq!(app.get(&page).await.expect(200), read, "kept again");

    let id = posted["id"].as_i64().unwrap();
    app.patch(&format!("/v1/messages/{id}"), json!({"content": "edited"}))
        .await
        .expect(200);
    let read = app.get(&page).await.expect(200);
    assert_eq!(read["messages"][0]["content"], "edited", "{read}");
    app.get(&page).await.expect(200);

    app.delete(&format!("/v1/messages/{id}")).await.expect(204);
    let read = app.get(&page).await.expect(200);
    assert_eq!(read["messages"][0]["content"], "first", "{read}");
    assert_eq!(read["messages"].as_array().unwrap().len(), 1, "{read}");
    let stats = cache_stats(&app).await;
    assert_eq!(stats["l1"]["hits"], 0, "{stats}");
}

#[tokio::test]
async fn in_redis_mode_a_hit_is_one_redis_read_and_no_postgres() {
    let app = spawn_app_with(|s| s.cache = CacheMode::Redis).await;
    let [a] = users();
    let cid = app.group(&[a]).await;
    app.say(cid, a, "hi").await;
    let page = format!("/v1/channels/{cid}/messages");
    until_cached(&app, &page).await;
    let before = cache_stats(&app).await;

    for _ in 0..10 {
        app.get(&page).await.expect(200);
    }

    let after = cache_stats(&app).await;
    assert_eq!(
        after["redis"]["hits"].as_u64().unwrap() - before["redis"]["hits"].as_u64().unwrap(),
        10
    );
    assert_eq!(after["postgres_reads"], before["postgres_reads"]);
    assert_eq!(after["l1"]["hits"], 0);
}
