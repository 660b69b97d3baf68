//! Feed writes that Redis misses: they count against the breaker like any other Redis
//! call, and they dirty only what they touched (the recipients' feeds), never every
//! channel and feed in Redis.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use hotchan::cache::breaker::SLOW_GRACE;
use hotchan::config::CacheMode;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{spawn_with_hooks, test_settings, users, TestApp};
use crate::support::{cache_stats, eventually, until_cached, Link, Proxy};

async fn publish(app: &TestApp, users: &[Uuid]) {
    let body = json!({"actor_id": Uuid::new_v4(), "verb": "v", "object_type": "o",
                      "object_id": "x", "user_ids": users});
    app.post("/v1/events", body).await.expect(201);
}

/// Whether Redis holds a key of this test's whose name contains `part`.
async fn redis_has(app: &TestApp, part: &str) -> bool {
    app.redis_snapshot().await.keys().any(|k| k.contains(part))
}

fn feed_key(user: Uuid) -> String {
    format!("{{u:{user}}}:feed")
}

/// An app in `full` mode whose Redis link goes through `proxy`, with `hooks`.
async fn app_behind(proxy: &Proxy, hooks: hotchan::cache::Hooks) -> TestApp {
    let mut settings = test_settings();
    settings.cache = CacheMode::Full;
    settings.redis_url = proxy.url();
    settings.breaker_failures = 1;
    settings.redis_probe_ms = 50;
    spawn_with_hooks(settings, hooks).await
}

#[tokio::test]
async fn a_feed_delivery_that_fails_in_redis_opens_the_breaker() {
    let Some(proxy) = Proxy::to_shared_redis().await else {
        return;
    };
    let proxy = Arc::new(proxy);
    // The link fails between the fence bumps (which succeed) and the appends. The hook
    // first waits out the breaker's grace for slowness (a timeout within 500 ms of a
    // success does not count, and the fence bumps just succeeded), so that the failed
    // appends count whether fred sees them time out or fail.
    let cut = proxy.clone();
    let hooks = hotchan::cache::Hooks {
        before_feed_deliver: Some(Arc::new(move |_user| {
            let cut = cut.clone();
            async move {
                tokio::time::sleep(SLOW_GRACE + Duration::from_millis(200)).await;
                cut.set(Link::Refuse);
            }
            .boxed()
        })),
        ..Default::default()
    };
    let app = app_behind(&proxy, hooks).await;
    let [reader] = users();
    publish(&app, &[reader]).await;
    until_cached(&app, &format!("/v1/users/{reader}/feed")).await;
    assert_eq!(cache_stats(&app).await["redis"]["breaker"], "closed");

    publish(&app, &[reader]).await;
    let stats = cache_stats(&app).await;
    assert_eq!(
        stats["redis"]["breaker"], "open",
        "the failed appends counted against the breaker: {stats}"
    );

    proxy.set(Link::Pass);
    eventually(Duration::from_secs(10), "the breaker closes", || async {
        cache_stats(&app).await["redis"]["breaker"] == "closed"
    })
    .await;
}

#[tokio::test]
async fn a_feed_delivery_that_misses_redis_drops_only_the_feeds_it_touched() {
    let Some(proxy) = Proxy::to_shared_redis().await else {
        return;
    };
    let app = app_behind(&proxy, Default::default()).await;
    let [member, touched, untouched] = users();
    let channel = app.group(&[member]).await;
    app.say(channel, member, "hello").await;
    until_cached(&app, &format!("/v1/channels/{channel}/messages")).await;
    for user in [touched, untouched] {
        publish(&app, &[user]).await;
        until_cached(&app, &format!("/v1/users/{user}/feed")).await;
    }
    let window_key = format!("{{{channel}}}:msgs");
    assert!(redis_has(&app, &window_key).await);
    assert!(redis_has(&app, &feed_key(touched)).await);
    assert!(redis_has(&app, &feed_key(untouched)).await);

    proxy.set(Link::Refuse);
    publish(&app, &[touched]).await;
    let stats = cache_stats(&app).await;
    assert_eq!(stats["redis"]["dirty_channels"], 1, "{stats}");
    proxy.set(Link::Pass);
    eventually(Duration::from_secs(10), "the repair is done", || async {
        let stats = cache_stats(&app).await;
        stats["redis"]["dirty_channels"] == 0 && stats["redis"]["breaker"] == "closed"
    })
    .await;

    assert!(
        !redis_has(&app, &feed_key(touched)).await,
        "the feed the delivery missed is dropped"
    );
    assert!(
        redis_has(&app, &feed_key(untouched)).await,
        "another user's feed stays"
    );
    assert!(
        redis_has(&app, &window_key).await,
        "a channel's window stays"
    );
    // And the dropped feed shows the delivery once it is read again.
    let feed = app
        .get(&format!("/v1/users/{touched}/feed"))
        .await
        .expect(200);
    assert_eq!(feed["events"].as_array().unwrap().len(), 2);
}
