//! Hostile input: content round-trips byte-exact, and a refused request changes nothing.

use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{spawn_app, users, TestApp};

#[tokio::test]
async fn hostile_content_round_trips_byte_exact() {
    let app = spawn_app().await;
    let [a] = users();
    let cid = app.group(&[a]).await;
    let exactly_16_kib = "é".repeat(8 * 1024);
    assert_eq!(exactly_16_kib.len(), 16 * 1024);
    let samples = [
        "'; DROP TABLE messages; --",
        "\" OR 1=1 --",
        "$1 $$ \\x00 %s %n {}",
        "emoji 👩‍👩‍👧‍👦 🏳️‍🌈 and a lone ZWJ \u{200d}",
        "right-to-left \u{202e}txet\u{202c} and \u{200f}marks\u{200e}",
        "line\nbreaks\r\nand\ttabs",
        "<script>alert(1)</script>",
        " leading and trailing spaces ",
        exactly_16_kib.as_str(),
    ];

    for content in samples {
        let posted = app.say(cid, a, content).await;
        assert_eq!(posted["content"], content);
        let read = app
            .get(&format!("/v1/messages/{}", posted["id"]))
            .await
            .expect(200);
        assert_eq!(
            read["content"].as_str().unwrap().as_bytes(),
            content.as_bytes()
        );
    }
    let page = app
        .get(&format!("/v1/channels/{cid}/messages?limit=200"))
        .await
        .expect(200);
    let mut contents: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    contents.reverse();
    assert_eq!(contents, samples);
    let stored: String = app
        .pg()
        .await
        .query_one("SELECT content FROM messages WHERE seq = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, samples[0], "stored as sent");
}

/// Everything a request could change, read straight from Postgres.
async fn snapshot(app: &TestApp) -> Value {
    let pg = app.pg().await;
    let rows = pg
        .query(
            "SELECT json_build_object(
               'channels', (SELECT json_agg(c ORDER BY id) FROM channels c),
               'members', (SELECT json_agg(m ORDER BY channel_id, user_id) FROM channel_members m),
               'messages', (SELECT json_agg(m ORDER BY id) FROM messages m))::text",
            &[],
        )
        .await
        .unwrap();
    serde_json::from_str(rows[0].get::<_, &str>(0)).unwrap()
}

#[tokio::test]
async fn a_refused_request_changes_nothing() {
    let app = spawn_app().await;
    let [a, b, outsider] = users();
    let cid = app.group(&[a, b]).await;
    let other = app.group(&[a]).await;
    let m = app.say(cid, b, "hello").await["id"].as_i64().unwrap();
    let foreign = app.say(other, a, "x").await["id"].as_i64().unwrap();
    let gone = app.say(cid, a, "gone").await["id"].as_i64().unwrap();
    app.delete(&format!("/v1/messages/{gone}"))
        .await
        .expect(204);
    app.post(
        &format!("/v1/channels/{cid}/read"),
        json!({"user_id": a, "message_id": m}),
    )
    .await
    .expect(200);
    let before = snapshot(&app).await;
    let messages = format!("/v1/channels/{cid}/messages");

    let refused = vec![
        app.post("/v1/channels", json!({"type": "direct", "members": [a]}))
            .await,
        app.post(
            "/v1/channels",
            json!({"type": "group", "members": [a, "x"]}),
        )
        .await,
        app.post("/v1/channels", json!({"type": "group", "id": cid}))
            .await,
        app.post(&messages, json!({"sender_id": outsider, "content": "x"}))
            .await,
        app.post(
            &messages,
            json!({"sender_id": a, "content": "x", "reply_to_id": foreign}),
        )
        .await,
        app.post(
            &messages,
            json!({"sender_id": a, "content": "x", "client_msg_id": ""}),
        )
        .await,
        app.post(&messages, json!({"sender_id": a, "content": "\u{0}"}))
            .await,
        app.patch(&format!("/v1/messages/{gone}"), json!({"content": "back"}))
            .await,
        app.patch(&format!("/v1/messages/{m}"), json!({"content": ""}))
            .await,
        app.put(
            &format!("/v1/channels/{cid}/members/{outsider}"),
            Some(json!({"role": "r".repeat(21)})),
        )
        .await,
        app.put(
            &format!("/v1/channels/{cid}/members/{outsider}"),
            Some(json!({"rank": 1})),
        )
        .await,
        app.delete(&format!("/v1/channels/{cid}/members/{outsider}"))
            .await,
        app.post(
            &format!("/v1/channels/{cid}/read"),
            json!({"user_id": a, "message_id": foreign}),
        )
        .await,
        app.post(
            &format!("/v1/channels/{cid}/read"),
            json!({"user_id": outsider, "message_id": m}),
        )
        .await,
        app.post(
            &format!("/v1/channels/{}/messages", Uuid::new_v4()),
            json!({"sender_id": a, "content": "x"}),
        )
        .await,
        app.send_raw(Method::POST, &messages, vec![b'x'; 2 << 20])
            .await,
        app.send_raw(
            Method::PATCH,
            &format!("/v1/messages/{m}"),
            b"{\"content\": 1}".to_vec(),
        )
        .await,
    ];

    for answer in &refused {
        let status = answer.status.as_u16();
        assert!((400..500).contains(&status), "{status}: {}", answer.body);
        assert!(
            answer.body["error"].is_string() && answer.body["message"].is_string(),
            "{}",
            answer.body
        );
    }
    assert_eq!(snapshot(&app).await, before);
}

/// Bodies that are not JSON objects, sent to every body-taking route; each route also gets
/// the array that filled its fields by position before bodies had to be objects.
const NOT_OBJECTS: [&str; 6] = ["[]", "\"admin\"", "42", "-1.5", "true", "null"];

#[tokio::test]
async fn a_body_that_is_not_a_json_object_is_refused_on_every_route_and_changes_nothing() {
    let app = spawn_app().await;
    let [a, b] = users();
    let cid = app.group(&[a, b]).await;
    let m = app.say(cid, a, "hello").await["id"].as_i64().unwrap();
    // Fill the tiers, so that a flush or a write-through would show in Redis.
    for path in [
        format!("/v1/channels/{cid}/messages"),
        format!("/v1/channels/{cid}/members"),
        format!("/v1/channels/{cid}/unread?user_id={b}"),
    ] {
        app.get(&path).await.expect(200);
    }
    let before = (snapshot(&app).await, app.redis_snapshot().await);
    if app.settings.cache != hotchan::config::CacheMode::Off {
        assert!(!before.1.is_empty(), "the channel is cached in Redis");
    }

    let routes = [
        (
            Method::POST,
            "/v1/channels".to_owned(),
            r#"["group"]"#.to_owned(),
        ),
        (
            Method::PUT,
            format!("/v1/channels/{cid}/members/{b}"),
            r#"["admin"]"#.to_owned(),
        ),
        (
            Method::POST,
            format!("/v1/channels/{cid}/messages"),
            format!(r#"["{a}","hi"]"#),
        ),
        (
            Method::PATCH,
            format!("/v1/messages/{m}"),
            r#"["edited"]"#.to_owned(),
        ),
        (
            Method::POST,
            format!("/v1/channels/{cid}/read"),
            format!(r#"["{b}",{m}]"#),
        ),
        (
            Method::POST,
            "/v1/sync".to_owned(),
            format!(r#"[{{"{cid}":0}}]"#),
        ),
        (
            Method::POST,
            "/v1/admin/cache/flush".to_owned(),
            "[]".to_owned(),
        ),
    ];
    for (method, path, positional) in routes {
        for body in NOT_OBJECTS.iter().copied().chain([positional.as_str()]) {
            let answer = app
                .send_raw(method.clone(), &path, body.as_bytes().to_vec())
                .await;
            let refusal = answer.expect_error(400, "bad_request");
            let message = refusal["message"].as_str().unwrap();
            assert!(
                message.contains("must be a JSON object"),
                "{method} {path} {body}: {message}"
            );
        }
        let after = (snapshot(&app).await, app.redis_snapshot().await);
        assert_eq!(after.0, before.0, "{method} {path} changed Postgres");
        assert_eq!(after.1, before.1, "{method} {path} changed Redis");
    }
}

#[tokio::test]
async fn string_fields_follow_the_nul_and_length_rules() {
    let app = spawn_app().await;
    let [a, b] = users();
    let cid = app.group(&[a, b]).await;
    let m = app.say(cid, a, "hello").await["id"].as_i64().unwrap();
    let before = snapshot(&app).await;
    let messages = format!("/v1/channels/{cid}/messages");
    let refused = [
        app.post("/v1/channels", json!({"type": "group", "name": ""}))
            .await,
        app.post("/v1/channels", json!({"type": "group", "name": "a\u{0}b"}))
            .await,
        app.post(
            "/v1/channels",
            json!({"type": "group", "name": "n".repeat(101)}),
        )
        .await,
        app.put(
            &format!("/v1/channels/{cid}/members/{b}"),
            Some(json!({"role": ""})),
        )
        .await,
        app.put(
            &format!("/v1/channels/{cid}/members/{b}"),
            Some(json!({"role": "ad\u{0}min"})),
        )
        .await,
        app.post(
            &messages,
            json!({"sender_id": a, "content": "x", "client_msg_id": "k\u{0}"}),
        )
        .await,
        app.post(
            &messages,
            json!({"sender_id": a, "content": "x", "client_msg_id": "k".repeat(65)}),
        )
        .await,
        app.patch(&format!("/v1/messages/{m}"), json!({"content": "a\u{0}"}))
            .await,
        app.post("/v1/sync", json!({"channels": {format!("{cid}\u{0}"): 0}}))
            .await,
        app.post("/v1/sync", json!({"channels": {"": 0}})).await,
    ];
    for answer in refused {
        answer.expect_error(400, "bad_request");
    }
    assert_eq!(snapshot(&app).await, before);
    // The bounds themselves are accepted.
    app.post("/v1/channels", json!({"type": "group", "name": "n"}))
        .await
        .expect(201);
    app.post(
        "/v1/channels",
        json!({"type": "group", "name": "ü".repeat(100)}),
    )
    .await
    .expect(201);
    app.post("/v1/channels", json!({"type": "group", "name": null}))
        .await
        .expect(201);
}
