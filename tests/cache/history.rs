//! Deep history: pages past a cursor served from runs in L1 and Redis, exactly as Postgres
//! serves them, and the consistency promises 2–4 for them: a write shows at once on its
//! instance, within a second on another, a fill never installs a run older than a write
//! (the stale-set race), and a Redis cut leaves nothing stale behind.

use std::sync::Arc;
use std::time::Duration;

use hotchan::cache::Hooks;
use hotchan::config::{CacheMode, Settings};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::TestApp;
use crate::helpers::{page_ids, spawn_with_hooks, spawn_with_settings, test_settings, users};
use crate::support::{cache_stats, eventually, hold_first_call, l1_serving, Link, Proxy};

const MESSAGES: i64 = 700;
const LIMIT: usize = 50;

fn settings(mode: CacheMode) -> Settings {
    let mut s = test_settings();
    s.cache = mode;
    s.hot_window = 50;
    s.fill_after_misses = 1;
    s
}

/// A channel of [`MESSAGES`] messages, every 23rd deleted.
async fn channel(app: &TestApp) -> (Uuid, Uuid) {
    let [u] = users();
    let cid = app.group(&[u]).await;
    app.bulk_messages(cid, u, MESSAGES).await;
    let ids: Vec<i64> = app
        .pg()
        .await
        .query(
            "SELECT id FROM messages WHERE channel_id = $1 ORDER BY id",
            &[&cid],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for id in ids.iter().step_by(23) {
        app.delete(&format!("/v1/messages/{id}")).await.expect(204);
    }
    (cid, u)
}

/// Live ids of the channel, newest first, from Postgres itself.
async fn truth(app: &TestApp, cid: Uuid) -> Vec<i64> {
    app.pg()
        .await
        .query(
            "SELECT id FROM messages WHERE channel_id = $1 AND deleted_at IS NULL ORDER BY id DESC",
            &[&cid],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Pages `before` from the newest to the oldest, checking each against `expected`; the
/// Postgres reads the walk cost.
async fn walk_down(app: &TestApp, cid: Uuid, expected: &[i64]) -> u64 {
    let reads = || async { cache_stats(app).await["postgres_reads"].as_u64().unwrap() };
    let start = reads().await;
    let mut seen = Vec::new();
    let mut path = format!("/v1/channels/{cid}/messages?limit={LIMIT}");
    loop {
        let page = app.get(&path).await.expect(200);
        seen.extend(page_ids(&page));
        assert_eq!(
            seen[..],
            expected[..seen.len()],
            "a page differs from Postgres"
        );
        match page["next_cursor"].as_i64() {
            Some(c) if page["has_more"] == true => {
                path = format!("/v1/channels/{cid}/messages?limit={LIMIT}&before={c}")
            }
            _ => break,
        }
    }
    assert_eq!(seen, expected, "the walk saw every live message once");
    reads().await - start
}

/// Pages `after` from before the oldest to the newest, as [`walk_down`].
async fn walk_up(app: &TestApp, cid: Uuid, expected_oldest_first: &[i64]) -> u64 {
    let reads = || async { cache_stats(app).await["postgres_reads"].as_u64().unwrap() };
    let start = reads().await;
    let mut seen = Vec::new();
    let mut cursor = 0;
    loop {
        let path = format!("/v1/channels/{cid}/messages?limit={LIMIT}&after={cursor}");
        let page = app.get(&path).await.expect(200);
        seen.extend(page_ids(&page));
        assert_eq!(seen[..], expected_oldest_first[..seen.len()]);
        match page["next_cursor"].as_i64() {
            Some(c) if page["has_more"] == true => cursor = c,
            _ => break,
        }
    }
    assert_eq!(seen, expected_oldest_first);
    reads().await - start
}

/// Walks until a whole walk costs Postgres at most `reads` queries.
async fn until_walk_cached(app: &TestApp, cid: Uuid, reads: u64) {
    let expected = truth(app, cid).await;
    eventually(
        Duration::from_secs(20),
        "a walk served by the tiers",
        || async { walk_down(app, cid, &expected).await <= reads },
    )
    .await;
}

#[tokio::test]
async fn deep_pages_both_ways_come_from_history_exactly_as_postgres_gives_them() {
    for mode in [CacheMode::Full, CacheMode::Redis] {
        let app = spawn_with_settings(settings(mode)).await;
        if mode == CacheMode::Full {
            l1_serving(&app).await;
        }
        let (cid, _) = channel(&app).await;
        let expected = truth(&app, cid).await;
        let first = walk_down(&app, cid, &expected).await;
        assert!(first > 5, "{mode:?}: a cold walk reads Postgres ({first})");
        // Once runs are filled, only the latest page may need Postgres (it is the
        // window's: filled on its own second miss).
        until_walk_cached(&app, cid, 1).await;
        let stats = cache_stats(&app).await;
        assert!(stats["history"]["fills"].as_u64().unwrap() >= 3, "{stats}");
        let hits = match mode {
            CacheMode::Full => stats["history"]["l1_hits"].as_u64().unwrap(),
            _ => stats["history"]["redis_hits"].as_u64().unwrap(),
        };
        assert!(hits > 10, "{mode:?}: {stats}");

        let mut oldest_first = expected.clone();
        oldest_first.reverse();
        walk_up(&app, cid, &oldest_first).await;
        // The newest page needs Postgres (or the window): what lies above a run is not
        // known to it, and a post may land there any time.
        eventually(
            Duration::from_secs(20),
            "an after walk from the tiers",
            || async { walk_up(&app, cid, &oldest_first).await <= 1 },
        )
        .await;
    }
}

#[tokio::test]
async fn an_edit_or_delete_inside_a_cached_run_shows_at_once() {
    for mode in [CacheMode::Full, CacheMode::Redis] {
        let app = spawn_with_settings(settings(mode)).await;
        if mode == CacheMode::Full {
            l1_serving(&app).await;
        }
        let (cid, _) = channel(&app).await;
        until_walk_cached(&app, cid, 1).await;
        let expected = truth(&app, cid).await;
        let (edited, deleted) = (expected[400], expected[500]);
        app.patch(
            &format!("/v1/messages/{edited}"),
            json!({"content": "edited deep down"}),
        )
        .await
        .expect(200);
        app.delete(&format!("/v1/messages/{deleted}"))
            .await
            .expect(204);
        // The very next walk of this instance shows both (promise 2).
        let now = truth(&app, cid).await;
        walk_down(&app, cid, &now).await;
        let page = app
            .get(&format!(
                "/v1/channels/{cid}/messages?limit=3&before={}",
                edited + 1
            ))
            .await
            .expect(200);
        assert_eq!(
            page["messages"][0]["content"], "edited deep down",
            "{mode:?}"
        );
        until_walk_cached(&app, cid, 1).await;
    }
}

#[tokio::test]
async fn a_run_fill_held_after_its_postgres_read_is_refused_once_a_delete_committed() {
    let (hook, reached_rx, resume_tx) = hold_first_call();
    let hooks = Hooks {
        after_history_read: Some(hook),
        ..Hooks::default()
    };
    let app = Arc::new(spawn_with_hooks(settings(CacheMode::Full), hooks).await);
    l1_serving(&app).await;
    let (cid, _) = channel(&app).await;
    let expected = truth(&app, cid).await;
    // A deep page misses and queues a run from its cursor; its fill stops after reading.
    let cursor = expected[300];
    let deep = format!("/v1/channels/{cid}/messages?limit={LIMIT}&before={cursor}");
    app.get(&deep).await.expect(200);
    tokio::time::timeout(Duration::from_secs(10), reached_rx)
        .await
        .expect("the run's fill read Postgres")
        .unwrap();
    let victim = expected[310];
    app.delete(&format!("/v1/messages/{victim}"))
        .await
        .expect(204);
    resume_tx.send(()).unwrap();
    eventually(Duration::from_secs(5), "the held fill refused", || async {
        cache_stats(&app).await["fills_refused"] == 1
    })
    .await;
    assert_eq!(cache_stats(&app).await["history"]["fills"], 0);
    // Whatever is filled later holds the delete.
    let now = truth(&app, cid).await;
    until_walk_cached(&app, cid, 1).await;
    for _ in 0..3 {
        let page = app.get(&deep).await.expect(200);
        assert!(!page_ids(&page).contains(&victim), "{page}");
        walk_down(&app, cid, &now).await;
    }
}

#[tokio::test]
async fn a_delete_on_one_instance_leaves_the_others_runs_within_a_second() {
    let settings = settings(CacheMode::Full);
    let a = spawn_with_settings(settings.clone()).await;
    let b = spawn_with_settings(settings).await;
    l1_serving(&a).await;
    l1_serving(&b).await;
    let (cid, _) = channel(&a).await;
    until_walk_cached(&a, cid, 1).await;
    let expected = truth(&a, cid).await;
    let victim = expected[450];
    let deep = format!(
        "/v1/channels/{cid}/messages?limit={LIMIT}&before={}",
        victim + 1
    );
    let held = |p: &Value| page_ids(p).first() == Some(&victim);
    assert!(held(&a.get(&deep).await.expect(200)));
    let hits = cache_stats(&a).await["history"]["l1_hits"].clone();
    assert!(held(&a.get(&deep).await.expect(200)));
    assert_ne!(
        cache_stats(&a).await["history"]["l1_hits"],
        hits,
        "held in a's L1"
    );

    b.delete(&format!("/v1/messages/{victim}"))
        .await
        .expect(204);
    let took = eventually(
        Duration::from_secs(1),
        "gone on the other instance",
        || async { !page_ids(&a.get(&deep).await.expect(200)).contains(&victim) },
    )
    .await;
    assert!(took < Duration::from_secs(1));
    walk_down(&a, cid, &truth(&a, cid).await).await;
}

#[tokio::test]
async fn a_delete_while_redis_is_cut_is_never_hidden_by_a_run_afterwards() {
    let Some(proxy) = Proxy::to_shared_redis().await else {
        return;
    };
    let mut s = settings(CacheMode::Full);
    s.redis_url = proxy.url();
    let app = spawn_with_settings(s).await;
    l1_serving(&app).await;
    let (cid, _) = channel(&app).await;
    until_walk_cached(&app, cid, 1).await;
    let expected = truth(&app, cid).await;
    let victim = expected[350];
    let deep = format!(
        "/v1/channels/{cid}/messages?limit={LIMIT}&before={}",
        victim + 1
    );

    proxy.set(Link::Refuse);
    app.delete(&format!("/v1/messages/{victim}"))
        .await
        .expect(204);
    let during = app.get(&deep).await.expect(200);
    assert!(
        !page_ids(&during).contains(&victim),
        "the writer shows its delete"
    );

    proxy.set(Link::Pass);
    let now = truth(&app, cid).await;
    eventually(
        Duration::from_secs(20),
        "healed and served by the tiers",
        || async {
            let page = app.get(&deep).await.expect(200);
            assert!(
                !page_ids(&page).contains(&victim),
                "stale after the cut: {page}"
            );
            let s = cache_stats(&app).await;
            s["redis"]["breaker"] == "closed"
                && s["redis"]["dirty_channels"] == 0
                && walk_down(&app, cid, &now).await <= 1
        },
    )
    .await;
}
