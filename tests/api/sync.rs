//! Reconnection sync.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{spawn_app, spawn_app_with, users};

fn seqs(changes: &Value) -> Vec<i64> {
    changes
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn sync_returns_every_change_after_the_clients_seq_with_edits_and_tombstones() {
    let app = spawn_app().await;
    let [a, b] = users();
    let cid = app.group(&[a, b]).await;
    let m1 = app.say(cid, b, "one").await; // seq 1
    let m2 = app.say(cid, b, "two").await; // seq 2
    app.say(cid, a, "three").await; // seq 3
    app.patch(
        &format!("/v1/messages/{}", m1["id"]),
        json!({"content": "one!"}),
    )
    .await
    .expect(200); // 4
    app.delete(&format!("/v1/messages/{}", m2["id"]))
        .await
        .expect(204); // 5
    let unknown = Uuid::new_v4();

    let answer = app
        .post(
            "/v1/sync",
            json!({"channels": {cid.to_string(): 1, unknown.to_string(): 0}, "user_id": a}),
        )
        .await
        .expect(200);

    let channel = &answer["channels"][cid.to_string()];
    assert_eq!(seqs(&channel["changes"]), vec![3, 4, 5]);
    assert_eq!(channel["changes"][1]["content"], "one!");
    assert_eq!(channel["changes"][2]["content"], Value::Null);
    assert!(channel["changes"][2]["deleted_at"].is_string());
    assert_eq!(channel["last_seq"], 5);
    assert_eq!(channel["missed"], 4);
    assert_eq!(channel["reset"], false);
    assert_eq!(
        channel["unread_count"], 1,
        "one!: live, from b, after no marker"
    );
    assert_eq!(answer["unknown"], json!([unknown]));
    assert!(answer["channels"].get(unknown.to_string()).is_none());
}

#[tokio::test]
async fn sync_without_a_member_user_has_no_unread_count() {
    let app = spawn_app().await;
    let [a, outsider] = users();
    let cid = app.group(&[a]).await;
    app.say(cid, a, "x").await;

    for body in [
        json!({"channels": {cid.to_string(): 0}}),
        json!({"channels": {cid.to_string(): 0}, "user_id": outsider}),
    ] {
        let answer = app.post("/v1/sync", body).await.expect(200);
        let channel = &answer["channels"][cid.to_string()];
        assert!(channel.get("unread_count").is_none(), "{channel}");
        assert_eq!(seqs(&channel["changes"]), vec![1]);
    }
    let current = app
        .post("/v1/sync", json!({"channels": {cid.to_string(): 1}}))
        .await
        .expect(200);
    let channel = &current["channels"][cid.to_string()];
    assert_eq!(
        (channel["changes"].clone(), channel["missed"].clone()),
        (json!([]), json!(0))
    );
}

#[tokio::test]
async fn more_than_200_changes_reset_to_the_newest_50_live_messages_oldest_first() {
    let app = spawn_app().await;
    let [a] = users();
    let cid = app.group(&[a]).await;
    app.bulk_messages(cid, a, 200).await;
    let newest = app.say(cid, a, "201st").await;

    let at_threshold = app
        .post("/v1/sync", json!({"channels": {cid.to_string(): 1}}))
        .await
        .expect(200);
    let channel = &at_threshold["channels"][cid.to_string()];
    assert_eq!(
        (
            channel["reset"].clone(),
            channel["changes"].as_array().unwrap().len()
        ),
        (json!(false), 200)
    );

    let reset = app
        .post("/v1/sync", json!({"channels": {cid.to_string(): 0}}))
        .await
        .expect(200);
    let channel = &reset["channels"][cid.to_string()];
    assert_eq!(channel["reset"], true);
    assert_eq!(channel["missed"], 201);
    assert_eq!(channel["last_seq"], 201);
    let changes = channel["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 50);
    assert_eq!(changes.last().unwrap()["id"], newest["id"]);
    assert!(
        changes
            .windows(2)
            .all(|w| w[0]["id"].as_i64() < w[1]["id"].as_i64()),
        "oldest first"
    );
}

#[tokio::test]
async fn the_reset_threshold_and_size_are_settings() {
    let app = spawn_app_with(|s| {
        s.sync_reset_threshold = 3;
        s.sync_reset_messages = 2;
    })
    .await;
    let [a] = users();
    let cid = app.group(&[a]).await;
    for i in 0..4 {
        app.say(cid, a, &i.to_string()).await;
    }
    let gone = app.say(cid, a, "gone").await;
    app.delete(&format!("/v1/messages/{}", gone["id"]))
        .await
        .expect(204);

    let answer = app
        .post("/v1/sync", json!({"channels": {cid.to_string(): 0}}))
        .await
        .expect(200);

    let channel = &answer["channels"][cid.to_string()];
    assert_eq!(channel["reset"], true);
    let contents: Vec<&str> = channel["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        vec!["2", "3"],
        "the newest live messages, oldest first"
    );
}

#[tokio::test]
async fn a_client_ahead_of_the_server_is_reset() {
    let app = spawn_app().await;
    let [a] = users();
    let cid = app.group(&[a]).await;
    app.say(cid, a, "x").await;

    let answer = app
        .post("/v1/sync", json!({"channels": {cid.to_string(): 99}}))
        .await
        .expect(200);

    let channel = &answer["channels"][cid.to_string()];
    assert_eq!(channel["reset"], true);
    assert_eq!(channel["missed"], 0);
    assert_eq!(seqs(&channel["changes"]), vec![1]);
}

#[tokio::test]
async fn bad_sync_bodies_are_400() {
    let app = spawn_app().await;
    let many: serde_json::Map<String, Value> = (0..501)
        .map(|_| (Uuid::new_v4().to_string(), json!(0)))
        .collect();
    let bad = [
        json!({"channels": many}),
        json!({"channels": {"not-a-uuid": 0}}),
        json!({"channels": {Uuid::new_v4().to_string(): -1}}),
        json!({"channels": {Uuid::new_v4().to_string(): "7"}}),
        json!({"channels": {}, "user_id": "nope"}),
        json!({"channels": {}, "since": 1}),
        json!({}),
    ];
    for body in bad {
        app.post("/v1/sync", body)
            .await
            .expect_error(400, "bad_request");
    }
    let ok: serde_json::Map<String, Value> = (0..500)
        .map(|_| (Uuid::new_v4().to_string(), json!(0)))
        .collect();
    let answer = app
        .post("/v1/sync", json!({"channels": ok}))
        .await
        .expect(200);
    assert_eq!(answer["unknown"].as_array().unwrap().len(), 500);
}
