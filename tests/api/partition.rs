//! `messages` hash-partitioned by channel: a new database's layout, and the conversion of
//! a plain table holding messages, replies, tombstones and idempotency keys, checked answer
//! by answer; interrupted, repeated and wrong conversions change nothing.

use std::ops::ControlFlow;

use hotchan::config::CacheMode;
use hotchan::postgres::partition::{
    layout, partition_messages, Converted, Layout, PartitionError, When,
};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{spawn_app_with, users, TestApp};

#[tokio::test]
async fn a_new_database_gets_the_configured_layout() {
    for (partitions, expected) in [(4, Layout::Partitioned(4)), (0, Layout::Plain)] {
        let app = spawn_app_with(|s| s.db.message_partitions = partitions).await;
        assert_eq!(layout(&app.settings.db.pg()).await.unwrap(), expected);
    }
}

/// A plain table with a bit of everything; returns the channels and their members.
async fn arrange(app: &TestApp) -> Vec<(Uuid, Vec<Uuid>)> {
    let mut channels = Vec::new();
    for n in 0..3 {
        let [a, b] = users();
        let cid = app.group(&[a, b]).await;
        let mut ids = Vec::new();
        for i in 0..12 {
            let sender = if i % 3 == 0 { a } else { b };
            ids.push(app.say(cid, sender, &format!("c{n} m{i}")).await["id"].clone());
        }
        let messages = format!("/v1/channels/{cid}/messages");
        app.post(
            &messages,
            json!({"sender_id": a, "content": "a reply", "reply_to_id": ids[2]}),
        )
        .await
        .expect(201);
        app.post(
            &messages,
            json!({"sender_id": b, "content": "once", "client_msg_id": "k-1"}),
        )
        .await
        .expect(201);
        app.patch(
            &format!("/v1/messages/{}", ids[4]),
            json!({"content": "edited"}),
        )
        .await
        .expect(200);
        for gone in [&ids[5], &ids[11]] {
            app.delete(&format!("/v1/messages/{gone}"))
                .await
                .expect(204);
        }
        app.post(
            &format!("/v1/channels/{cid}/read"),
            json!({"user_id": a, "message_id": ids[6]}),
        )
        .await
        .expect(200);
        channels.push((cid, vec![a, b]));
    }
    channels
}

/// Every answer the channels give: pages in both directions, each message, unread counts,
/// sync with a user.
async fn answers(app: &TestApp, channels: &[(Uuid, Vec<Uuid>)]) -> Vec<Value> {
    let mut all = Vec::new();
    for (cid, members) in channels {
        let page = app
            .get(&format!("/v1/channels/{cid}/messages?limit=200"))
            .await
            .expect(200);
        let ids: Vec<i64> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_i64().unwrap())
            .collect();
        all.push(page);
        for query in [
            format!("limit=5&before={}", ids[3]),
            format!("limit=5&after={}", ids[ids.len() - 1] - 1),
            "limit=3".to_owned(),
        ] {
            all.push(
                app.get(&format!("/v1/channels/{cid}/messages?{query}"))
                    .await
                    .expect(200),
            );
        }
        let (first, last) = (ids[ids.len() - 1], ids[0]);
        for id in first..=last + 2 {
            let answer = app.get(&format!("/v1/messages/{id}")).await;
            all.push(json!([answer.status.as_u16(), answer.body]));
        }
        for user in members {
            for path in [
                format!("/v1/channels/{cid}/unread?user_id={user}"),
                format!("/v1/users/{user}/unread"),
                format!("/v1/channels/{cid}/members/{user}"),
            ] {
                all.push(app.get(&path).await.expect(200));
            }
            let sync = json!({"channels": {cid.to_string(): 3}, "user_id": user});
            all.push(app.post("/v1/sync", sync).await.expect(200));
        }
    }
    all
}

/// A test app on a plain `messages` table, answering from Postgres.
async fn plain_app() -> TestApp {
    spawn_app_with(|s| {
        s.db.message_partitions = 0;
        s.cache = CacheMode::Off;
    })
    .await
}

fn keep_going(_: hotchan::postgres::partition::Step) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

#[tokio::test]
async fn converting_a_plain_table_keeps_every_answer_and_writes_go_on() {
    let app = plain_app().await;
    let channels = arrange(&app).await;
    let before = answers(&app, &channels).await;

    let converted = partition_messages(&app.settings.db.pg(), 4, When::Always, 7, &mut keep_going)
        .await
        .unwrap();

    assert_eq!(converted, Converted::Rows(3 * 14));
    assert_eq!(
        layout(&app.settings.db.pg()).await.unwrap(),
        Layout::Partitioned(4)
    );
    assert_eq!(answers(&app, &channels).await, before);
    // The same instance goes on writing: ids continue, keys hold.
    let (cid, members) = &channels[0];
    let messages = format!("/v1/channels/{cid}/messages");
    let last = before[0]["messages"][0]["id"].as_i64().unwrap();
    let new = app.say(*cid, members[0], "after").await;
    assert!(new["id"].as_i64().unwrap() > last);
    app.post(
        &messages,
        json!({"sender_id": members[0], "content": "re", "reply_to_id": new["id"]}),
    )
    .await
    .expect(201);
    let foreign = before
        .iter()
        .find(|a| a["messages"][0]["channel_id"] == channels[1].0.to_string())
        .unwrap()["messages"][0]["id"]
        .clone();
    app.post(
        &messages,
        json!({"sender_id": members[0], "content": "re", "reply_to_id": foreign}),
    )
    .await
    .expect_error(400, "bad_request");
    let replay = app
        .post(
            &messages,
            json!({"sender_id": members[1], "content": "twice", "client_msg_id": "k-1"}),
        )
        .await
        .expect(200);
    assert_eq!(replay["content"], "once");
    app.patch(
        &format!("/v1/messages/{}", new["id"]),
        json!({"content": "e"}),
    )
    .await
    .expect(200);
    app.delete(&format!("/v1/messages/{}", new["id"]))
        .await
        .expect(204);
}

#[tokio::test]
async fn an_interrupted_repeated_or_wrong_conversion_changes_nothing() {
    let app = plain_app().await;
    let channels = arrange(&app).await;
    let before = answers(&app, &channels).await;
    let db = &app.settings.db.pg();

    let mut batches = 0;
    let mut stop_after_two = |_| {
        batches += 1;
        if batches > 2 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let interrupted = partition_messages(db, 4, When::Always, 5, &mut stop_after_two).await;
    assert!(matches!(interrupted, Err(PartitionError::Interrupted)));
    assert_eq!(layout(db).await.unwrap(), Layout::Plain);
    assert_eq!(answers(&app, &channels).await, before);

    for wrong in [0, 5000] {
        let refused = partition_messages(db, wrong, When::Always, 5, &mut keep_going).await;
        assert!(matches!(refused, Err(PartitionError::BadCount(n)) if n == wrong));
    }
    assert_eq!(layout(db).await.unwrap(), Layout::Plain);

    partition_messages(db, 3, When::Always, 5, &mut keep_going)
        .await
        .unwrap();
    let again = partition_messages(db, 8, When::Always, 5, &mut keep_going).await;
    let Err(error) = again else {
        panic!("a second conversion must be refused");
    };
    assert!(matches!(error, PartitionError::AlreadyPartitioned(3)));
    assert!(error
        .to_string()
        .contains("already hash-partitioned into 3"));
    assert_eq!(layout(db).await.unwrap(), Layout::Partitioned(3));
    assert_eq!(answers(&app, &channels).await, before);
}
