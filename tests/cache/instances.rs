//! Two hotchan instances on one database and one Redis prefix: what one writes, the other
//! shows within 1 second (the contract's promise 3), although it held the old data in L1.

use std::time::Duration;

use hotchan::config::CacheMode;
use serde_json::{json, Value};

use crate::helpers::{spawn_with_settings, test_settings, users, TestApp};
use crate::support::{cache_stats, eventually, l1_serving, within_promise};

pub(crate) async fn two_instances() -> (TestApp, TestApp) {
    let mut settings = test_settings();
    settings.cache = CacheMode::Full;
    let a = spawn_with_settings(settings.clone()).await;
    let b = spawn_with_settings(settings).await;
    l1_serving(&a).await;
    l1_serving(&b).await;
    (a, b)
}

/// Reads `path` on `app` until a read comes from L1 (a loaded machine may briefly
/// bypass L1 when a heartbeat is late).
async fn warm(app: &TestApp, path: &str) {
    eventually(Duration::from_secs(10), "held in L1", || async {
        let before = cache_stats(app).await["l1"]["hits"].as_u64().unwrap();
        app.get(path).await.expect(200);
        cache_stats(app).await["l1"]["hits"].as_u64().unwrap() == before + 1
    })
    .await;
}

#[tokio::test]
async fn posts_edits_and_deletes_on_one_instance_show_on_the_other_within_a_second() {
    let (a, b) = two_instances().await;
    let [u] = users();
    let cid = a.group(&[u]).await;
    let first = a.say(cid, u, "first").await;
    let page = format!("/v1/channels/{cid}/messages");
    warm(&b, &page).await;

    let second = a.say(cid, u, "second").await;
    within_promise(&b, &page, "the post", |p| {
        p["messages"][0]["id"] == second["id"]
    })
    .await;

    a.patch(
        &format!("/v1/messages/{}", first["id"]),
        json!({"content": "first, edited"}),
    )
    .await
    .expect(200);
    within_promise(&b, &page, "the edit", |p| {
        p["messages"][1]["content"] == "first, edited"
    })
    .await;

    warm(&b, &format!("/v1/channels/{cid}")).await;
    a.delete(&format!("/v1/messages/{}", second["id"]))
        .await
        .expect(204);
    within_promise(&b, &page, "the delete", |p| {
        p["messages"].as_array().unwrap().len() == 1
    })
    .await;
    let tombstone = b
        .get(&format!("/v1/messages/{}", second["id"]))
        .await
        .expect(200);
    assert_eq!(tombstone["content"], Value::Null);
    let channel = b.get(&format!("/v1/channels/{cid}")).await.expect(200);
    assert_eq!(channel["last_seq"], 4);
}

#[tokio::test]
async fn membership_and_read_markers_on_one_instance_show_on_the_other_within_a_second() {
    let (a, b) = two_instances().await;
    let [u, v, w] = users();
    let cid = a.group(&[u, v]).await;
    let m = a.say(cid, v, "for u").await;
    let members = format!("/v1/channels/{cid}/members");
    let unread = format!("/v1/channels/{cid}/unread?user_id={u}");
    warm(&b, &members).await;
    assert_eq!(b.get(&unread).await.expect(200)["unread_count"], 1);

    a.put(
        &format!("/v1/channels/{cid}/members/{w}"),
        Some(json!({"role": "admin"})),
    )
    .await
    .expect(200);
    within_promise(&b, &members, "the new member", |p| {
        p["members"].as_array().unwrap().len() == 3
    })
    .await;

    a.post(
        &format!("/v1/channels/{cid}/read"),
        json!({"user_id": u, "message_id": m["id"]}),
    )
    .await
    .expect(200);
    within_promise(&b, &unread, "the read marker", |p| p["unread_count"] == 0).await;

    a.delete(&format!("/v1/channels/{cid}/members/{w}"))
        .await
        .expect(204);
    within_promise(&b, &members, "the removal", |p| {
        p["members"].as_array().unwrap().len() == 2
    })
    .await;
}

#[tokio::test]
async fn an_admin_flush_on_one_instance_drops_the_channel_on_the_other() {
    let (a, b) = two_instances().await;
    let [u] = users();
    let cid = a.group(&[u]).await;
    a.say(cid, u, "before").await;
    let page = format!("/v1/channels/{cid}/messages");
    warm(&b, &page).await;
    // Changed behind hotchan's back, as an operator's repair would.
    a.pg()
        .await
        .execute(
            "UPDATE messages SET content = 'repaired' WHERE channel_id = $1",
            &[&cid],
        )
        .await
        .unwrap();

    a.post("/v1/admin/cache/flush", json!({"channel_id": cid}))
        .await
        .expect(204);

    within_promise(&b, &page, "the flushed channel", |p| {
        p["messages"][0]["content"] == "repaired"
    })
    .await;
    assert!(
        cache_stats(&b).await["invalidations_received"]
            .as_u64()
            .unwrap()
            >= 1
    );
}

#[tokio::test]
async fn a_recreated_database_never_sees_the_cache_of_the_one_before() {
    let mut settings = test_settings();
    settings.cache = CacheMode::Full;
    let cid = uuid::Uuid::new_v4();
    let [u] = users();
    let page = format!("/v1/channels/{cid}/messages");
    let mut before = spawn_with_settings(settings.clone()).await;
    before
        .post(
            "/v1/channels",
            json!({"type": "group", "id": cid, "members": [u]}),
        )
        .await
        .expect(201);
    before.say(cid, u, "from the old database").await;
    before.get(&page).await.expect(200); // now in Redis, under the same prefix setting
    before.stop().await;
    before
        .admin_pg()
        .await
        .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", before.db_name))
        .await
        .unwrap();

    let after = spawn_with_settings(settings).await;
    after
        .post(
            "/v1/channels",
            json!({"type": "group", "id": cid, "members": [u]}),
        )
        .await
        .expect(201);
    after.say(cid, u, "from the new database").await;

    let answer = after.get(&page).await.expect(200);
    assert_eq!(answer["messages"].as_array().unwrap().len(), 1, "{answer}");
    assert_eq!(answer["messages"][0]["content"], "from the new database");
}
