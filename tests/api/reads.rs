//! Read markers and unread counts.

use serde_json::json;
use uuid::Uuid;

use crate::helpers::{spawn_app, users};

#[tokio::test]
async fn the_read_marker_moves_forward_only_and_answers_the_value_in_force() {
    let app = spawn_app().await;
    let [a, b] = users();
    let cid = app.group(&[a, b]).await;
    let m1 = app.say(cid, b, "1").await["id"].as_i64().unwrap();
    let m2 = app.say(cid, b, "2").await["id"].as_i64().unwrap();
    let path = format!("/v1/channels/{cid}/read");

    let marked = app
        .post(&path, json!({"user_id": a, "message_id": m2}))
        .await
        .expect(200);
    assert_eq!(marked, json!({"last_read_message_id": m2}));
    let back = app
        .post(&path, json!({"user_id": a, "message_id": m1}))
        .await
        .expect(200);
    assert_eq!(back, json!({"last_read_message_id": m2}), "never backwards");
    let member = app
        .get(&format!("/v1/channels/{cid}/members/{a}"))
        .await
        .expect(200);
    assert_eq!(member["last_read_message_id"], m2);
}

#[tokio::test]
async fn marking_read_refuses_strangers_and_foreign_messages() {
    let app = spawn_app().await;
    let [a, outsider] = users();
    let cid = app.group(&[a]).await;
    let other = app.group(&[a]).await;
    let mine = app.say(cid, a, "x").await["id"].as_i64().unwrap();
    let foreign = app.say(other, a, "y").await["id"].as_i64().unwrap();
    let path = format!("/v1/channels/{cid}/read");

    app.post(
        &format!("/v1/channels/{}/read", Uuid::new_v4()),
        json!({"user_id": a, "message_id": mine}),
    )
    .await
    .expect_error(404, "not_found");
    app.post(&path, json!({"user_id": outsider, "message_id": mine}))
        .await
        .expect_error(403, "forbidden");
    app.post(&path, json!({"user_id": a, "message_id": foreign}))
        .await
        .expect_error(400, "bad_request");
    app.post(&path, json!({"user_id": a, "message_id": 999_999_999}))
        .await
        .expect_error(400, "bad_request");
    app.post(&path, json!({"user_id": a}))
        .await
        .expect_error(400, "bad_request");
    app.post(&path, json!({"user_id": "x", "message_id": mine}))
        .await
        .expect_error(400, "bad_request");

    app.delete(&format!("/v1/messages/{mine}"))
        .await
        .expect(204);
    let marked = app
        .post(&path, json!({"user_id": a, "message_id": mine}))
        .await
        .expect(200);
    assert_eq!(
        marked["last_read_message_id"], mine,
        "a deleted message still counts"
    );
}

#[tokio::test]
async fn concurrent_marks_from_two_devices_keep_the_highest() {
    let app = spawn_app().await;
    let [a, b] = users();
    let cid = app.group(&[a, b]).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            app.say(cid, b, &i.to_string()).await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    let path = format!("/v1/channels/{cid}/read");

    // Every mark, highest and lowest interleaved, at once.
    let marks = ids.iter().rev().chain(ids.iter()).map(|&id| {
        let (app, path) = (&app, &path);
        async move {
            app.post(path, json!({"user_id": a, "message_id": id}))
                .await
                .expect(200)
        }
    });
    let answers = futures::future::join_all(marks).await;

    let highest = *ids.last().unwrap();
    let member = app
        .get(&format!("/v1/channels/{cid}/members/{a}"))
        .await
        .expect(200);
    assert_eq!(member["last_read_message_id"], highest);
    assert!(answers
        .iter()
        .all(|a| a["last_read_message_id"].as_i64().unwrap() <= highest));
}

#[tokio::test]
async fn unread_counts_live_messages_of_others_after_the_marker() {
    let app = spawn_app().await;
    let [a, b] = users();
    let cid = app.group(&[a, b]).await;
    let first = app.say(cid, b, "1").await["id"].as_i64().unwrap();
    app.say(cid, b, "2").await;
    let gone = app.say(cid, b, "3").await["id"].as_i64().unwrap();
    app.say(cid, a, "my own").await;
    app.delete(&format!("/v1/messages/{gone}"))
        .await
        .expect(204);
    let unread = format!("/v1/channels/{cid}/unread?user_id={a}");

    assert_eq!(
        app.get(&unread).await.expect(200),
        json!({"unread_count": 2})
    );
    app.post(
        &format!("/v1/channels/{cid}/read"),
        json!({"user_id": a, "message_id": first}),
    )
    .await
    .expect(200);
    assert_eq!(
        app.get(&unread).await.expect(200),
        json!({"unread_count": 1})
    );
}

#[tokio::test]
async fn channel_unread_errors() {
    let app = spawn_app().await;
    let [a, outsider] = users();
    let cid = app.group(&[a]).await;

    app.get(&format!(
        "/v1/channels/{}/unread?user_id={a}",
        Uuid::new_v4()
    ))
    .await
    .expect_error(404, "not_found");
    app.get(&format!("/v1/channels/{cid}/unread?user_id={outsider}"))
        .await
        .expect_error(403, "forbidden");
    app.get(&format!("/v1/channels/{cid}/unread"))
        .await
        .expect_error(400, "bad_request");
    app.get(&format!("/v1/channels/{cid}/unread?user_id=nope"))
        .await
        .expect_error(400, "bad_request");
}

#[tokio::test]
async fn a_users_unread_lists_channels_above_zero_sorted_by_id() {
    let app = spawn_app().await;
    let [a, b] = users();
    let mut channels = Vec::new();
    for _ in 0..3 {
        channels.push(app.group(&[a, b]).await);
    }
    app.say(channels[0], b, "x").await;
    app.say(channels[2], b, "y").await;
    app.say(channels[2], b, "z").await;
    app.say(channels[1], a, "only mine").await;

    let answer = app.get(&format!("/v1/users/{a}/unread")).await.expect(200);

    let mut expected = vec![
        json!({"channel_id": channels[0], "unread_count": 1}),
        json!({"channel_id": channels[2], "unread_count": 2}),
    ];
    expected.sort_by_key(|c| c["channel_id"].as_str().unwrap().to_owned());
    assert_eq!(answer, json!({"channels": expected}));
    assert_eq!(
        app.get(&format!("/v1/users/{}/unread", Uuid::new_v4()))
            .await
            .expect(200),
        json!({"channels": []})
    );
    app.get("/v1/users/nope/unread")
        .await
        .expect_error(400, "bad_request");
}
