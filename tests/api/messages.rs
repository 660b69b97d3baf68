//! Posting, reading, editing and deleting messages: every row of the "Messages" table
//! except paging (see `paging.rs`).

use serde_json::json;
use uuid::Uuid;

use crate::helpers::{spawn_app, spawn_app_with, users};

#[tokio::test]
async fn a_post_answers_201_and_takes_the_channels_next_seq() {
    let app = spawn_app().await;
    let [a, b] = users();
    let cid = app.group(&[a, b]).await;

    let first = app.say(cid, a, "hi").await;
    let second = app.say(cid, b, "hello").await;

    assert_eq!(first["content"], "hi");
    assert_eq!(first["channel_id"], cid.to_string());
    assert_eq!(first["sender_id"], a.to_string());
    assert_eq!(first["seq"], 1);
    assert_eq!(second["seq"], 2);
    assert!(second["id"].as_i64() > first["id"].as_i64());
    for field in ["reply_to_id", "updated_at", "deleted_at"] {
        assert_eq!(first[field], serde_json::Value::Null, "{field}");
    }
    let created_at = first["created_at"].as_str().unwrap();
    assert_eq!(
        created_at.len(),
        "2026-11-24T10:00:00.123456Z".len(),
        "{created_at}"
    );
    let channel = app.get(&format!("/v1/channels/{cid}")).await.expect(200);
    assert_eq!(channel["last_seq"], 2);
}

#[tokio::test]
async fn a_post_is_refused_with_the_contracts_errors() {
    let app = spawn_app().await;
    let [a, outsider] = users();
    let cid = app.group(&[a]).await;
    let other = app.group(&[a]).await;
    let foreign = app.say(other, a, "elsewhere").await["id"].as_i64().unwrap();
    let path = format!("/v1/channels/{cid}/messages");

    app.post(
        &format!("/v1/channels/{}/messages", Uuid::new_v4()),
        json!({"sender_id": a, "content": "x"}),
    )
    .await
    .expect_error(404, "not_found");
    app.post(&path, json!({"sender_id": outsider, "content": "x"}))
        .await
        .expect_error(403, "forbidden");
    let bad_bodies = [
        json!({"sender_id": a, "content": ""}),
        json!({"sender_id": a, "content": "x".repeat(16 * 1024 + 1)}),
        json!({"sender_id": a, "content": "nul\u{0}byte"}),
        json!({"sender_id": a, "content": "x", "reply_to_id": foreign}),
        json!({"sender_id": a, "content": "x", "reply_to_id": 999_999_999}),
        json!({"sender_id": a, "content": "x", "client_msg_id": "c".repeat(65)}),
        json!({"sender_id": "nope", "content": "x"}),
        json!({"content": "x"}),
        json!({"sender_id": a}),
        json!({"sender_id": a, "content": "x", "priority": "high"}),
    ];
    for body in bad_bodies {
        app.post(&path, body).await.expect_error(400, "bad_request");
    }
    let page = app.get(&format!("{path}?limit=200")).await.expect(200);
    assert_eq!(page["messages"], json!([]), "no refused post was stored");
}

#[tokio::test]
async fn a_reply_may_point_at_a_live_or_deleted_message_of_the_channel() {
    let app = spawn_app().await;
    let [a] = users();
    let cid = app.group(&[a]).await;
    let parent = app.say(cid, a, "parent").await["id"].as_i64().unwrap();
    app.delete(&format!("/v1/messages/{parent}"))
        .await
        .expect(204);

    let reply = app
        .post(
            &format!("/v1/channels/{cid}/messages"),
            json!({"sender_id": a, "content": "re", "reply_to_id": parent}),
        )
        .await
        .expect(201);

    assert_eq!(reply["reply_to_id"], parent);
}

#[tokio::test]
async fn a_repeated_client_msg_id_answers_200_with_the_original() {
    let app = spawn_app().await;
    let [a] = users();
    let cid = app.group(&[a]).await;
    let other = app.group(&[a]).await;
    let path = format!("/v1/channels/{cid}/messages");

    let original = app
        .post(
            &path,
            json!({"sender_id": a, "content": "once", "client_msg_id": "k1"}),
        )
        .await
        .expect(201);
    let again = app
        .post(
            &path,
            json!({"sender_id": a, "content": "twice?", "client_msg_id": "k1"}),
        )
        .await
        .expect(200);
    let elsewhere = app
        .post(
            &format!("/v1/channels/{other}/messages"),
            json!({"sender_id": a, "content": "x", "client_msg_id": "k1"}),
        )
        .await
        .expect(201);

    assert_eq!(again, original);
    assert_ne!(elsewhere["id"], original["id"]);
    let channel = app.get(&format!("/v1/channels/{cid}")).await.expect(200);
    assert_eq!(channel["last_seq"], 1, "the duplicate took no seq");
}

#[tokio::test]
async fn a_message_is_read_edited_and_soft_deleted() {
    let app = spawn_app().await;
    let [a] = users();
    let cid = app.group(&[a]).await;
    let posted = app.say(cid, a, "draft").await;
    let path = format!("/v1/messages/{}", posted["id"]);

    assert_eq!(app.get(&path).await.expect(200), posted);

    let edited = app
        .patch(&path, json!({"content": "final"}))
        .await
        .expect(200);
    assert_eq!(edited["content"], "final");
    assert!(edited["updated_at"].is_string());
    assert_eq!(edited["seq"], 2);
    assert_eq!(edited["created_at"], posted["created_at"]);
    app.patch(&path, json!({"content": ""}))
        .await
        .expect_error(400, "bad_request");
    app.patch(&path, json!({"content": "x", "extra": 1}))
        .await
        .expect_error(400, "bad_request");

    app.delete(&path).await.expect(204);
    let tombstone = app.get(&path).await.expect(200);
    assert_eq!(tombstone["content"], serde_json::Value::Null);
    assert!(tombstone["deleted_at"].is_string());
    assert_eq!(tombstone["seq"], 3);

    app.patch(&path, json!({"content": "zombie"}))
        .await
        .expect_error(409, "conflict");
    app.delete(&path).await.expect(204);
    assert_eq!(
        app.get(&path).await.expect(200)["seq"],
        3,
        "a second delete changes nothing"
    );
    let channel = app.get(&format!("/v1/channels/{cid}")).await.expect(200);
    assert_eq!(channel["last_seq"], 3);
}

#[tokio::test]
async fn unknown_and_malformed_message_ids() {
    let app = spawn_app().await;
    app.get("/v1/messages/987654321")
        .await
        .expect_error(404, "not_found");
    app.patch("/v1/messages/987654321", json!({"content": "x"}))
        .await
        .expect_error(404, "not_found");
    app.delete("/v1/messages/987654321")
        .await
        .expect_error(404, "not_found");
    app.get("/v1/messages/abc")
        .await
        .expect_error(400, "bad_request");
}

#[tokio::test]
async fn the_content_limit_is_a_setting() {
    let app = spawn_app_with(|s| s.max_content_bytes = 10).await;
    let [a] = users();
    let cid = app.group(&[a]).await;
    let path = format!("/v1/channels/{cid}/messages");

    app.post(&path, json!({"sender_id": a, "content": "0123456789"}))
        .await
        .expect(201);
    app.post(&path, json!({"sender_id": a, "content": "0123456789a"}))
        .await
        .expect_error(400, "bad_request");
}
