//! Hot feeds in the tiers: served without Postgres once cached, exact after write-through,
//! a feed that missed a delivery is dropped rather than shown with a gap, and a delete or
//! a new event on one instance shows on another within a second.

use hotchan::config::CacheMode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{spawn_app_with, TestApp};
use crate::support::{cached, until_cached, within_promise};

async fn publish(app: &TestApp, actor: Uuid, users: &[Uuid]) -> i64 {
    let body = json!({"actor_id": actor, "verb": "v", "object_type": "o", "object_id": "x",
                      "user_ids": users});
    app.post("/v1/events", body).await.expect(201)["event"]["id"]
        .as_i64()
        .unwrap()
}

fn ids(page: &Value) -> Vec<i64> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect()
}

/// The user's feed as Postgres has it, newest first.
async fn in_postgres(app: &TestApp, user: Uuid) -> Vec<i64> {
    app.pg()
        .await
        .query(
            "SELECT f.event_id FROM feed_items f JOIN events e
               ON e.id = f.event_id AND e.created_at = f.created_at
             WHERE f.user_id = $1 AND e.deleted_at IS NULL ORDER BY f.event_id DESC",
            &[&user],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn a_cached_feed_gains_new_events_by_write_through_and_stays_exact() {
    for mode in [CacheMode::Full, CacheMode::Redis] {
        let app = spawn_app_with(|s| s.cache = mode).await;
        let (actor, reader) = (Uuid::new_v4(), Uuid::new_v4());
        for _ in 0..3 {
            publish(&app, actor, &[reader]).await;
        }
        let feed = format!("/v1/users/{reader}/feed");
        let page = until_cached(&app, &feed).await;
        assert_eq!(ids(&page), in_postgres(&app, reader).await);

        let newest = publish(&app, actor, &[reader, Uuid::new_v4()]).await;
        // Answered by the tiers alone, and showing the new event at once.
        cached(&app, &feed).await;
        let page = app.get(&feed).await.expect(200);
        assert_eq!(ids(&page)[0], newest, "{mode:?}");
        assert_eq!(ids(&page), in_postgres(&app, reader).await, "{mode:?}");
        let after = app
            .get(&format!("{feed}?after={}", ids(&page)[2]))
            .await
            .expect(200);
        assert_eq!(ids(&after), [ids(&page)[1], newest], "{mode:?}");

        // The unseen count comes from the hot feed too, and follows the marker.
        let unseen = format!("/v1/users/{reader}/feed/unseen");
        cached(&app, &unseen).await;
        assert_eq!(app.get(&unseen).await.expect(200)["unseen_count"], 4);
        app.post(
            &format!("/v1/users/{reader}/feed/seen"),
            json!({"event_id": ids(&page)[1]}),
        )
        .await
        .expect(200);
        let answer = app.get(&unseen).await.expect(200);
        assert_eq!(
            answer,
            json!({"unseen_count": 1, "last_seen_event_id": ids(&page)[1]}),
            "{mode:?}"
        );

        // A delete takes the event out of the cached feed at once.
        app.delete(&format!("/v1/events/{newest}"))
            .await
            .expect(204);
        let page = app.get(&feed).await.expect(200);
        assert!(!ids(&page).contains(&newest), "{mode:?}");
        assert_eq!(ids(&page), in_postgres(&app, reader).await, "{mode:?}");
    }
}

#[tokio::test]
async fn a_cached_feed_that_missed_a_delivery_is_dropped_not_shown_with_a_gap() {
    let app = spawn_app_with(|s| s.cache = CacheMode::Full).await;
    let (actor, reader, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let first = publish(&app, actor, &[reader]).await;
    let feed = format!("/v1/users/{reader}/feed");
    until_cached(&app, &feed).await;

    // A delivery whose write-through never reached Redis (another instance died right
    // after its commit): the reader's feed gains `lost` in Postgres only.
    let lost = publish(&app, actor, &[other]).await;
    app.pg()
        .await
        .execute(
            "INSERT INTO feed_items (user_id, event_id, created_at)
             SELECT $1, id, created_at FROM events WHERE id = $2",
            &[&reader, &lost],
        )
        .await
        .unwrap();
    // The next delivery's write-through finds the cached feed's newest id is not the one
    // below it in Postgres, and drops the feed instead of appending over the gap.
    let third = publish(&app, actor, &[reader]).await;
    let page = app.get(&feed).await.expect(200);
    assert_eq!(ids(&page), [third, lost, first]);
    let page = until_cached(&app, &feed).await;
    assert_eq!(ids(&page), [third, lost, first]);
}

#[tokio::test]
async fn pages_past_a_trimmed_hot_feed_are_exact() {
    let app = spawn_app_with(|s| {
        s.cache = CacheMode::Full;
        s.feeds.feed_hot_items = 3;
    })
    .await;
    let (actor, reader) = (Uuid::new_v4(), Uuid::new_v4());
    let mut published = Vec::new();
    for _ in 0..6 {
        published.push(publish(&app, actor, &[reader]).await);
    }
    let feed = format!("/v1/users/{reader}/feed");
    until_cached(&app, &format!("{feed}?limit=2")).await;
    // Oldest first from the first event: the two after it lie below the 3 ids held.
    let after = app
        .get(&format!("{feed}?after={}&limit=2", published[0]))
        .await
        .expect(200);
    assert_eq!(ids(&after), [published[1], published[2]]);
    assert_eq!(after["has_more"], true);
    // Newest first from the newest: held; past the held ids: Postgres.
    let before = app
        .get(&format!("{feed}?before={}&limit=4", published[5]))
        .await
        .expect(200);
    assert_eq!(
        ids(&before),
        [published[4], published[3], published[2], published[1]]
    );
}

#[tokio::test]
async fn a_new_event_and_a_delete_on_one_instance_show_on_the_other_within_a_second() {
    let (a, b) = crate::instances::two_instances().await;
    let (actor, reader) = (Uuid::new_v4(), Uuid::new_v4());
    let kept = publish(&a, actor, &[reader]).await;
    let feed = format!("/v1/users/{reader}/feed");
    until_cached(&b, &feed).await;
    // Held in B's L1 from here on.
    cached(&b, &feed).await;

    let gone = publish(&a, actor, &[reader]).await;
    within_promise(&b, &feed, "the new event", |p| ids(p) == [gone, kept]).await;
    cached(&b, &feed).await;
    a.delete(&format!("/v1/events/{gone}")).await.expect(204);
    within_promise(&b, &feed, "the delete", |p| ids(p) == [kept]).await;
    let tombstone = b.get(&format!("/v1/events/{gone}")).await.expect(200);
    assert_eq!(tombstone["data"], Value::Null);
}
