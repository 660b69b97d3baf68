//! The activity feeds contract (`docs/api.md` "Activity feeds"), in whatever cache mode
//! the suite runs in.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

fn user() -> Uuid {
    Uuid::new_v4()
}

fn event_body(actor: Uuid) -> Value {
    json!({"actor_id": actor, "verb": "comment", "object_type": "task", "object_id": "Task-42"})
}

fn with(mut body: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// Publishes; returns the answer body (`{"event", "recipients"}`).
async fn publish(app: &TestApp, body: Value) -> Value {
    app.post("/v1/events", body).await.expect(201)
}

/// The ids of a feed page.
pub async fn ids(app: &TestApp, path: &str) -> (Vec<i64>, Value) {
    let page = app.get(path).await.expect(200);
    let ids = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    (ids, page)
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    app.pg().await.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn a_publish_reaches_members_and_named_users_once_but_not_the_actor() {
    let app = spawn_app().await;
    let (actor, b, c, d) = (user(), user(), user(), user());
    let channel = app.group(&[actor, b]).await;
    let answer = publish(
        &app,
        with(
            event_body(actor),
            json!({"channel_ids": [channel, channel], "user_ids": [c, b, c],
                   "target_type": "project", "target_id": "P-7",
                   "data": {"excerpt": "looks good", "n": [1, 2]}}),
        ),
    )
    .await;
    assert_eq!(answer["recipients"], 2, "{answer}");
    let event = &answer["event"];
    assert_eq!(event["channel_ids"], json!([channel]));
    assert_eq!(event["data"], json!({"excerpt": "looks good", "n": [1, 2]}));
    assert_eq!(
        (&event["verb"], &event["target_type"], &event["target_id"]),
        (&json!("comment"), &json!("project"), &json!("P-7"))
    );
    assert_eq!(event["deleted_at"], Value::Null);
    assert!(event["created_at"].as_str().unwrap().ends_with('Z'));
    let id = event["id"].as_i64().unwrap();
    for u in [b, c] {
        assert_eq!(ids(&app, &format!("/v1/users/{u}/feed")).await.0, [id]);
    }
    for u in [actor, d] {
        assert!(ids(&app, &format!("/v1/users/{u}/feed")).await.0.is_empty());
    }
    assert_eq!(
        app.get(&format!("/v1/events/{id}")).await.expect(200),
        *event
    );
    assert_eq!(
        ids(&app, &format!("/v1/channels/{channel}/events")).await.0,
        [id]
    );

    // The actor named in user_ids gets it; an empty audience is stored, with 0 recipients.
    let own = publish(&app, with(event_body(actor), json!({"user_ids": [actor]}))).await;
    assert_eq!(own["recipients"], 1);
    let lonely = publish(&app, event_body(d)).await;
    assert_eq!(lonely["recipients"], 0);
    assert_eq!(lonely["event"]["channel_ids"], json!([]));
    assert_eq!(lonely["event"]["data"], Value::Null);
    assert!(lonely["event"]["id"].as_i64().unwrap() > own["event"]["id"].as_i64().unwrap());
}

#[tokio::test]
async fn a_replayed_client_event_id_answers_the_original_and_delivers_nothing() {
    let app = spawn_app().await;
    let (actor, b, other) = (user(), user(), user());
    let body = with(
        event_body(actor),
        json!({"user_ids": [b], "client_event_id": "k-1"}),
    );
    let first = publish(&app, body).await;
    let replay = app
        .post(
            "/v1/events",
            with(
                event_body(actor),
                json!({"verb": "like", "user_ids": [other], "client_event_id": "k-1"}),
            ),
        )
        .await
        .expect(200);
    assert_eq!(replay, first);
    assert!(ids(&app, &format!("/v1/users/{other}/feed"))
        .await
        .0
        .is_empty());
    // Another actor's key is another key.
    let elsewhere = with(event_body(other), json!({"client_event_id": "k-1"}));
    assert_ne!(
        publish(&app, elsewhere).await["event"]["id"],
        first["event"]["id"]
    );
    // A replay after a delete answers the tombstone.
    let id = first["event"]["id"].as_i64().unwrap();
    app.delete(&format!("/v1/events/{id}")).await.expect(204);
    let again = app
        .post(
            "/v1/events",
            with(event_body(actor), json!({"client_event_id": "k-1"})),
        )
        .await
        .expect(200);
    assert_eq!(again["event"]["data"], Value::Null);
    assert!(again["event"]["deleted_at"].is_string());
    assert_eq!(again["recipients"], 1);
}

#[tokio::test]
async fn bad_event_bodies_and_ids_answer_400_and_leave_nothing_behind() {
    let app = spawn_app().await;
    let actor = user();
    let channel = app.group(&[actor, user()]).await;
    let base = event_body(actor);
    let too_many_channels: Vec<Uuid> = (0..101).map(|_| user()).collect();
    let too_many_users: Vec<Uuid> = (0..1001).map(|_| user()).collect();
    let bad = [
        json!({"verb": "comment", "object_type": "task", "object_id": "x"}),
        with(base.clone(), json!({"actor_id": "nope"})),
        with(base.clone(), json!({"verb": ""})),
        with(base.clone(), json!({"verb": "Comment"})),
        with(base.clone(), json!({"verb": "v".repeat(65)})),
        with(base.clone(), json!({"object_type": "a b"})),
        with(base.clone(), json!({"object_id": ""})),
        with(base.clone(), json!({"object_id": "x".repeat(129)})),
        with(base.clone(), json!({"object_id": "a\u{1}b"})),
        with(base.clone(), json!({"object_id": "a\u{0}b"})),
        with(base.clone(), json!({"target_type": "project"})),
        with(base.clone(), json!({"target_id": "P-7"})),
        with(
            base.clone(),
            json!({"target_type": "p", "target_id": "a\u{7f}"}),
        ),
        with(base.clone(), json!({"data": [1]})),
        with(base.clone(), json!({"data": "text"})),
        with(base.clone(), json!({"data": {"k": "a\u{0}"}})),
        with(base.clone(), json!({"data": {"k": "x".repeat(4096)}})),
        with(base.clone(), json!({"channel_ids": ["nope"]})),
        with(base.clone(), json!({"channel_ids": too_many_channels})),
        with(base.clone(), json!({"user_ids": too_many_users})),
        with(base.clone(), json!({"user_ids": [1]})),
        with(base.clone(), json!({"client_event_id": ""})),
        with(base.clone(), json!({"client_event_id": "k".repeat(65)})),
        with(base.clone(), json!({"surprise": true})),
        // Malformed and naming an unknown channel: the body is checked first.
        with(
            base.clone(),
            json!({"verb": "BAD", "channel_ids": [Uuid::new_v4()]}),
        ),
        json!([base.clone()]),
        json!("event"),
    ];
    for body in bad {
        app.post("/v1/events", body.clone())
            .await
            .expect_error(400, "bad_request");
    }
    // A valid body naming a missing channel (after an existing one) is 404.
    let missing = with(
        base.clone(),
        json!({"channel_ids": [channel, Uuid::new_v4()]}),
    );
    app.post("/v1/events", missing)
        .await
        .expect_error(404, "not_found");
    for path in ["/v1/events/x", "/v1/events/1.5"] {
        app.get(path).await.expect_error(400, "bad_request");
        app.delete(path).await.expect_error(400, "bad_request");
    }
    app.get("/v1/events/12345")
        .await
        .expect_error(404, "not_found");
    app.delete("/v1/events/12345")
        .await
        .expect_error(404, "not_found");
    app.get("/v1/users/nope/feed")
        .await
        .expect_error(400, "bad_request");
    app.get("/v1/channels/nope/events")
        .await
        .expect_error(400, "bad_request");
    app.get(&format!("/v1/channels/{}/events", Uuid::new_v4()))
        .await
        .expect_error(404, "not_found");
    for seen in [json!(0), json!(-3), json!(1.5), json!("7"), json!(null)] {
        app.post(
            &format!("/v1/users/{actor}/feed/seen"),
            json!({"event_id": seen}),
        )
        .await
        .expect_error(400, "bad_request");
    }
    app.post(&format!("/v1/users/{actor}/feed/seen"), json!({}))
        .await
        .expect_error(400, "bad_request");
    for table in [
        "events",
        "feed_items",
        "channel_events",
        "fanouts",
        "feed_seen",
    ] {
        assert_eq!(
            count(&app, &format!("SELECT count(*) FROM {table}")).await,
            0,
            "{table}"
        );
    }
    // The data limit counts compact JSON and is inclusive: {"k":"…"} is 8 bytes + the text.
    let at_limit = with(base, json!({"data": {"k": "x".repeat(4088)}}));
    publish(&app, at_limit).await;
}

#[tokio::test]
async fn feed_pages_follow_the_cursor_rules() {
    let app = spawn_app().await;
    let (actor, reader) = (user(), user());
    let mut published = Vec::new();
    for _ in 0..5 {
        let body = with(event_body(actor), json!({"user_ids": [reader]}));
        published.push(publish(&app, body).await["event"]["id"].as_i64().unwrap());
    }
    let feed = format!("/v1/users/{reader}/feed");
    let (latest, page) = ids(&app, &format!("{feed}?limit=2")).await;
    assert_eq!(latest, [published[4], published[3]]);
    assert_eq!(
        (page["has_more"].clone(), page["next_cursor"].clone()),
        (json!(true), json!(published[3]))
    );
    let (older, _) = ids(&app, &format!("{feed}?limit=2&before={}", published[3])).await;
    assert_eq!(older, [published[2], published[1]]);
    let (newer, page) = ids(&app, &format!("{feed}?after={}", published[1])).await;
    assert_eq!(newer, [published[2], published[3], published[4]]);
    assert_eq!(
        (page["has_more"].clone(), page["next_cursor"].clone()),
        (json!(false), Value::Null)
    );
    let (all, _) = ids(&app, &format!("{feed}?limit=200")).await;
    assert_eq!(all.len(), 5);
    for bad in [
        "?limit=0",
        "?limit=201",
        "?limit=x",
        "?before=1&after=2",
        "?after=x",
    ] {
        app.get(&format!("{feed}{bad}"))
            .await
            .expect_error(400, "bad_request");
    }
}

#[tokio::test]
async fn a_deleted_event_is_a_tombstone_in_no_page_or_count() {
    let app = spawn_app().await;
    let (actor, reader) = (user(), user());
    let channel = app.group(&[actor, reader]).await;
    let body = with(
        event_body(actor),
        json!({"channel_ids": [channel], "data": {"secret": 1}, "target_type": "p", "target_id": "P"}),
    );
    let kept = publish(&app, body.clone()).await["event"]["id"]
        .as_i64()
        .unwrap();
    let gone = publish(&app, body).await["event"].clone();
    let id = gone["id"].as_i64().unwrap();
    let unseen = format!("/v1/users/{reader}/feed/unseen");
    assert_eq!(app.get(&unseen).await.expect(200)["unseen_count"], 2);
    app.delete(&format!("/v1/events/{id}")).await.expect(204);
    app.delete(&format!("/v1/events/{id}")).await.expect(204);
    let tombstone = app.get(&format!("/v1/events/{id}")).await.expect(200);
    assert_eq!(tombstone["data"], Value::Null);
    assert!(tombstone["deleted_at"].is_string());
    for field in [
        "actor_id",
        "verb",
        "object_type",
        "object_id",
        "target_type",
        "target_id",
        "channel_ids",
        "created_at",
    ] {
        assert_eq!(tombstone[field], gone[field], "{field}");
    }
    assert_eq!(
        ids(&app, &format!("/v1/users/{reader}/feed")).await.0,
        [kept]
    );
    assert_eq!(
        ids(&app, &format!("/v1/users/{reader}/feed?after=0"))
            .await
            .0,
        [kept]
    );
    assert_eq!(
        ids(&app, &format!("/v1/channels/{channel}/events")).await.0,
        [kept]
    );
    assert_eq!(app.get(&unseen).await.expect(200)["unseen_count"], 1);
}

#[tokio::test]
async fn the_seen_marker_only_moves_forward_and_bounds_the_unseen_count() {
    let app = spawn_app().await;
    let (actor, reader) = (user(), user());
    let mut published = Vec::new();
    for _ in 0..3 {
        let body = with(event_body(actor), json!({"user_ids": [reader]}));
        published.push(publish(&app, body).await["event"]["id"].as_i64().unwrap());
    }
    let unseen = format!("/v1/users/{reader}/feed/unseen");
    assert_eq!(
        app.get(&unseen).await.expect(200),
        json!({"unseen_count": 3, "last_seen_event_id": null})
    );
    let seen = format!("/v1/users/{reader}/feed/seen");
    let marked = app
        .post(&seen, json!({"event_id": published[1]}))
        .await
        .expect(200);
    assert_eq!(marked, json!({"last_seen_event_id": published[1]}));
    let back = app
        .post(&seen, json!({"event_id": published[0]}))
        .await
        .expect(200);
    assert_eq!(back, json!({"last_seen_event_id": published[1]}));
    assert_eq!(
        app.get(&unseen).await.expect(200),
        json!({"unseen_count": 1, "last_seen_event_id": published[1]})
    );
    // Any positive integer is taken, even past every event.
    app.post(&seen, json!({"event_id": i64::MAX}))
        .await
        .expect(200);
    assert_eq!(app.get(&unseen).await.expect(200)["unseen_count"], 0);
}

#[tokio::test]
async fn joining_does_not_backfill_and_leaving_keeps_what_was_delivered() {
    let app = spawn_app().await;
    let (actor, stayer, joiner) = (user(), user(), user());
    let channel = app.group(&[actor, stayer]).await;
    let body = with(event_body(actor), json!({"channel_ids": [channel]}));
    let before = publish(&app, body.clone()).await["event"]["id"]
        .as_i64()
        .unwrap();
    app.put(&format!("/v1/channels/{channel}/members/{joiner}"), None)
        .await
        .expect(200);
    app.delete(&format!("/v1/channels/{channel}/members/{stayer}"))
        .await
        .expect(204);
    let after = publish(&app, body).await["event"]["id"].as_i64().unwrap();
    assert_eq!(
        ids(&app, &format!("/v1/users/{stayer}/feed")).await.0,
        [before]
    );
    assert_eq!(
        ids(&app, &format!("/v1/users/{joiner}/feed")).await.0,
        [after]
    );
    // The channel's own page has both.
    assert_eq!(
        ids(&app, &format!("/v1/channels/{channel}/events")).await.0,
        [after, before]
    );
}

/// Adds `n` members to a channel through SQL (the API adds one at a time).
pub async fn bulk_members(app: &TestApp, channel: Uuid, n: i64) {
    app.pg()
        .await
        .execute(
            "INSERT INTO channel_members (channel_id, user_id)
             SELECT $1, gen_random_uuid() FROM generate_series(1, $2::bigint)",
            &[&channel, &n],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_large_audience_is_delivered_in_the_background_exactly_once() {
    let app = spawn_app_with(|s| s.feeds.feed_fanout_batch = 400).await;
    let actor = user();
    let channel = app.group(&[actor, user()]).await;
    bulk_members(&app, channel, 2_499).await;
    let body = with(event_body(actor), json!({"channel_ids": [channel]}));
    let answer = publish(&app, body).await;
    assert_eq!(answer["recipients"], 2_500);
    let id = answer["event"]["id"].as_i64().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while count(&app, "SELECT count(*) FROM fanouts").await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the fan-out did not finish"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let delivered = count(
        &app,
        &format!("SELECT count(DISTINCT user_id) FROM feed_items WHERE event_id = {id}"),
    )
    .await;
    let rows = count(
        &app,
        &format!("SELECT count(*) FROM feed_items WHERE event_id = {id}"),
    )
    .await;
    assert_eq!((delivered, rows), (2_500, 2_500));
    let members = count(
        &app,
        &format!(
            "SELECT count(*) FROM channel_members m JOIN feed_items f
             ON f.user_id = m.user_id AND f.event_id = {id}
             WHERE m.channel_id = '{channel}' AND m.user_id <> '{actor}'"
        ),
    )
    .await;
    assert_eq!(members, 2_500);
    let admin = app.get("/v1/admin/cache").await.expect(200);
    assert_eq!(
        admin["feeds"],
        json!({"fanouts_pending": 0, "recipients_pending": 0})
    );
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("hotchan_feed_fanouts_pending 0"),
        "{metrics}"
    );
}
