//! Cursor pages: latest, `before`, `after`, `has_more`, `next_cursor`, and their errors.

use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{page_ids, spawn_app, users, TestApp};

/// A channel with `n` messages; returns the channel and the ids, oldest first.
async fn channel_with(app: &TestApp, n: usize) -> (Uuid, Vec<i64>) {
    let [a] = users();
    let cid = app.group(&[a]).await;
    let mut posted = Vec::new();
    for i in 0..n {
        posted.push(
            app.say(cid, a, &format!("m{i}")).await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    (cid, posted)
}

#[tokio::test]
async fn the_latest_page_is_newest_first_and_says_whether_more_exist() {
    let app = spawn_app().await;
    let (cid, posted) = channel_with(&app, 5).await;

    let page = app
        .get(&format!("/v1/channels/{cid}/messages?limit=2"))
        .await
        .expect(200);
    assert_eq!(page_ids(&page), vec![posted[4], posted[3]]);
    assert_eq!(page["has_more"], true);
    assert_eq!(page["next_cursor"], posted[3]);

    let all = app
        .get(&format!("/v1/channels/{cid}/messages"))
        .await
        .expect(200);
    assert_eq!(
        page_ids(&all),
        posted.iter().rev().copied().collect::<Vec<_>>()
    );
    assert_eq!(all["has_more"], false);
    assert_eq!(all["next_cursor"], Value::Null);
}

#[tokio::test]
async fn before_walks_back_and_after_walks_forward_over_every_live_message() {
    let app = spawn_app().await;
    let (cid, posted) = channel_with(&app, 7).await;
    app.delete(&format!("/v1/messages/{}", posted[2]))
        .await
        .expect(204);
    let live: Vec<i64> = posted
        .iter()
        .copied()
        .filter(|&id| id != posted[2])
        .collect();

    let mut backwards = Vec::new();
    let mut cursor = i64::MAX;
    loop {
        let page = app
            .get(&format!(
                "/v1/channels/{cid}/messages?limit=2&before={cursor}"
            ))
            .await
            .expect(200);
        backwards.extend(page_ids(&page));
        if page["has_more"] == false {
            assert_eq!(page["next_cursor"], Value::Null);
            break;
        }
        cursor = page["next_cursor"].as_i64().unwrap();
    }
    assert_eq!(backwards, live.iter().rev().copied().collect::<Vec<_>>());

    let mut forwards = Vec::new();
    let mut cursor = 0;
    loop {
        let page = app
            .get(&format!(
                "/v1/channels/{cid}/messages?limit=3&after={cursor}"
            ))
            .await
            .expect(200);
        forwards.extend(page_ids(&page));
        if page["has_more"] == false {
            break;
        }
        cursor = page["next_cursor"].as_i64().unwrap();
    }
    assert_eq!(forwards, live);
}

#[tokio::test]
async fn the_default_limit_is_50_and_200_is_the_most() {
    let app = spawn_app().await;
    let [a] = users();
    let cid = app.group(&[a]).await;
    app.bulk_messages(cid, a, 210).await;

    let page = app
        .get(&format!("/v1/channels/{cid}/messages"))
        .await
        .expect(200);
    assert_eq!(page_ids(&page).len(), 50);
    let page = app
        .get(&format!("/v1/channels/{cid}/messages?limit=200"))
        .await
        .expect(200);
    assert_eq!(page_ids(&page).len(), 200);
    assert_eq!(page["has_more"], true);
}

#[tokio::test]
async fn bad_page_queries_are_400_and_an_unknown_channel_is_404() {
    let app = spawn_app().await;
    let (cid, _) = channel_with(&app, 1).await;

    for query in [
        "limit=0",
        "limit=201",
        "limit=x",
        "limit=-3",
        "before=1&after=2",
        "before=x",
        "after=1.5",
    ] {
        app.get(&format!("/v1/channels/{cid}/messages?{query}"))
            .await
            .expect_error(400, "bad_request");
    }
    app.get(&format!("/v1/channels/{}/messages", Uuid::new_v4()))
        .await
        .expect_error(404, "not_found");
    let empty = app.group(&[]).await;
    let page = app
        .get(&format!("/v1/channels/{empty}/messages"))
        .await
        .expect(200);
    assert_eq!(
        page,
        serde_json::json!({"messages": [], "next_cursor": null, "has_more": false})
    );
}
