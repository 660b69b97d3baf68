//! Channels and members: every row of API.md's "Channels and members" table.

use serde_json::json;
use uuid::Uuid;

use crate::helpers::{spawn_app, users};

#[tokio::test]
async fn a_group_channel_is_created_with_its_members_and_can_be_read_back() {
    let app = spawn_app().await;
    let [a, b] = users();

    let created = app
        .post(
            "/v1/channels",
            json!({"type": "group", "name": "ops", "members": [a, b]}),
        )
        .await
        .expect(201);

    assert_eq!(created["type"], "group");
    assert_eq!(created["name"], "ops");
    assert_eq!(created["last_seq"], 0);
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/v1/channels/{id}")).await.expect(200),
        created
    );
    let members = app
        .get(&format!("/v1/channels/{id}/members"))
        .await
        .expect(200);
    let mut expected = [a.to_string(), b.to_string()];
    expected.sort();
    assert_eq!(
        members,
        json!({"members": [
            {"user_id": expected[0], "role": "member"},
            {"user_id": expected[1], "role": "member"}]})
    );
}

#[tokio::test]
async fn a_channel_takes_a_given_id_once_and_refuses_it_twice() {
    let app = spawn_app().await;
    let id = Uuid::new_v4();

    let first = app
        .post("/v1/channels", json!({"type": "group", "id": id}))
        .await
        .expect(201);
    assert_eq!(first["id"], id.to_string());
    assert_eq!(first["name"], serde_json::Value::Null);

    app.post(
        "/v1/channels",
        json!({"type": "direct", "id": id, "members": users::<2>()}),
    )
    .await
    .expect_error(409, "conflict");
}

#[tokio::test]
async fn a_direct_channel_needs_exactly_two_distinct_members() {
    let app = spawn_app().await;
    let [a, b, c] = users();

    for members in [json!([]), json!([a]), json!([a, a]), json!([a, b, c])] {
        app.post(
            "/v1/channels",
            json!({"type": "direct", "members": members}),
        )
        .await
        .expect_error(400, "bad_request");
    }
    app.post("/v1/channels", json!({"type": "direct"}))
        .await
        .expect_error(400, "bad_request");
    let direct = app
        .post("/v1/channels", json!({"type": "direct", "members": [a, b]}))
        .await
        .expect(201);
    assert_eq!(direct["type"], "direct");
}

#[tokio::test]
async fn bad_channel_bodies_are_refused_with_400() {
    let app = spawn_app().await;
    let bad = [
        json!({"type": "broadcast"}),
        json!({"name": "no type"}),
        json!({"type": "group", "name": "x".repeat(101)}),
        json!({"type": "group", "members": ["not-a-uuid"]}),
        json!({"type": "group", "id": "not-a-uuid"}),
        json!({"type": "group", "colour": "blue"}),
        json!({"type": 7}),
    ];
    for body in bad {
        let err = app
            .post("/v1/channels", body.clone())
            .await
            .expect_error(400, "bad_request");
        assert!(!err["message"].as_str().unwrap().is_empty(), "{body}");
    }
    // Exactly 100 characters (not bytes) is allowed.
    app.post(
        "/v1/channels",
        json!({"type": "group", "name": "ü".repeat(100)}),
    )
    .await
    .expect(201);
}

#[tokio::test]
async fn an_unknown_channel_is_404_on_every_channel_route() {
    let app = spawn_app().await;
    let (cid, uid) = (Uuid::new_v4(), Uuid::new_v4());

    app.get(&format!("/v1/channels/{cid}"))
        .await
        .expect_error(404, "not_found");
    app.get(&format!("/v1/channels/{cid}/members"))
        .await
        .expect_error(404, "not_found");
    app.get(&format!("/v1/channels/{cid}/members/{uid}"))
        .await
        .expect_error(404, "not_found");
    app.put(&format!("/v1/channels/{cid}/members/{uid}"), None)
        .await
        .expect_error(404, "not_found");
    app.delete(&format!("/v1/channels/{cid}/members/{uid}"))
        .await
        .expect_error(404, "not_found");
}

#[tokio::test]
async fn malformed_ids_in_paths_are_400() {
    let app = spawn_app().await;
    app.get("/v1/channels/not-a-uuid")
        .await
        .expect_error(400, "bad_request");
    let cid = app.group(&[]).await;
    app.get(&format!("/v1/channels/{cid}/members/nope"))
        .await
        .expect_error(400, "bad_request");
}

#[tokio::test]
async fn a_member_is_added_changed_kept_and_removed() {
    let app = spawn_app().await;
    let cid = app.group(&[]).await;
    let uid = Uuid::new_v4();
    let path = format!("/v1/channels/{cid}/members/{uid}");

    app.get(&path).await.expect_error(404, "not_found");
    let added = app.put(&path, None).await.expect(200);
    assert_eq!(added["user_id"], uid.to_string());
    assert_eq!(added["role"], "member");
    assert_eq!(added["last_read_message_id"], serde_json::Value::Null);
    assert!(added["joined_at"].is_string());

    let changed = app
        .put(&path, Some(json!({"role": "admin"})))
        .await
        .expect(200);
    assert_eq!(changed["role"], "admin");
    assert_eq!(changed["joined_at"], added["joined_at"]);
    // A bare PUT leaves an existing member's role as it is.
    assert_eq!(
        app.put(&path, Some(json!({}))).await.expect(200)["role"],
        "admin"
    );
    assert_eq!(app.get(&path).await.expect(200)["role"], "admin");

    app.put(&path, Some(json!({"role": "r".repeat(21)})))
        .await
        .expect_error(400, "bad_request");
    app.put(&path, Some(json!({"role": "admin", "x": 1})))
        .await
        .expect_error(400, "bad_request");

    app.delete(&path).await.expect(204);
    app.get(&path).await.expect_error(404, "not_found");
    app.delete(&path).await.expect_error(404, "not_found");
    let members = app
        .get(&format!("/v1/channels/{cid}/members"))
        .await
        .expect(200);
    assert_eq!(members, json!({"members": []}));
}
