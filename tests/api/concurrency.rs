//! Races: concurrent posters with an `after` pager, concurrent idempotent posts, and
//! seqs under concurrent posts, edits and deletes.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::json;

use crate::helpers::{spawn_app, users};

const POSTERS: usize = 8;
const POSTS_EACH: usize = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_posters_and_an_after_pager_see_every_message_exactly_once() {
    let app = Arc::new(spawn_app().await);
    let senders: Vec<_> = (0..POSTERS).map(|_| uuid::Uuid::new_v4()).collect();
    let cid = app.group(&senders).await;
    let done = Arc::new(AtomicBool::new(false));

    let pager = tokio::spawn({
        let (app, done) = (app.clone(), done.clone());
        async move {
            let mut seen = Vec::new();
            let mut cursor = 0;
            loop {
                // Read the flag before the page: a page read after the last post committed
                // that comes back short has seen everything.
                let finished = done.load(Ordering::SeqCst);
                let page = app
                    .get(&format!(
                        "/v1/channels/{cid}/messages?after={cursor}&limit=7"
                    ))
                    .await
                    .expect(200);
                for m in page["messages"].as_array().unwrap() {
                    seen.push(m["id"].as_i64().unwrap());
                }
                if let Some(&last) = seen.last() {
                    cursor = last;
                }
                if finished && page["has_more"] == false {
                    return seen;
                }
            }
        }
    });
    let posters = senders.iter().map(|&sender| {
        let app = app.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..POSTS_EACH {
                ids.push(
                    app.say(cid, sender, &format!("{sender} {i}")).await["id"]
                        .as_i64()
                        .unwrap(),
                );
            }
            ids
        })
    });
    let mut posted = BTreeSet::new();
    for ids in futures::future::join_all(posters).await {
        posted.extend(ids.unwrap());
    }
    done.store(true, Ordering::SeqCst);
    let seen = pager.await.unwrap();

    assert_eq!(posted.len(), POSTERS * POSTS_EACH);
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "ascending, no repeats"
    );
    assert_eq!(
        seen.into_iter().collect::<BTreeSet<_>>(),
        posted,
        "every message exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_posts_with_one_client_msg_id_make_one_row() {
    let app = spawn_app().await;
    let [a] = users();
    let cid = app.group(&[a]).await;
    let path = format!("/v1/channels/{cid}/messages");

    let attempts = (0..16).map(|i| {
        let (app, path) = (&app, &path);
        async move {
            app.post(
                path,
                json!({"sender_id": a, "content": format!("try {i}"), "client_msg_id": "once"}),
            )
            .await
        }
    });
    let answers = futures::future::join_all(attempts).await;

    let created = answers.iter().filter(|a| a.status.as_u16() == 201).count();
    let replayed = answers.iter().filter(|a| a.status.as_u16() == 200).count();
    assert_eq!((created, replayed), (1, 15));
    let ids: BTreeSet<_> = answers
        .iter()
        .map(|a| a.body["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "every answer carries the one original");
    let rows: i64 = app
        .pg()
        .await
        .query_one(
            "SELECT count(*) FROM messages WHERE client_msg_id = 'once'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_changes_take_distinct_consecutive_seqs() {
    let app = spawn_app().await;
    let [a] = users();
    let cid = app.group(&[a]).await;
    let mut targets = Vec::new();
    for i in 0..10 {
        targets.push(
            app.say(cid, a, &format!("t{i}")).await["id"]
                .as_i64()
                .unwrap(),
        );
    }

    let posts = (0..20).map(|i| {
        let app = &app;
        async move {
            app.say(cid, a, &format!("p{i}")).await["seq"]
                .as_i64()
                .unwrap()
        }
    });
    let edits = targets[..5].iter().map(|id| {
        let app = &app;
        async move {
            app.patch(&format!("/v1/messages/{id}"), json!({"content": "edited"}))
                .await
                .expect(200)["seq"]
                .as_i64()
                .unwrap()
        }
    });
    let deletes = targets[5..].iter().map(|id| {
        let app = &app;
        async move {
            app.delete(&format!("/v1/messages/{id}")).await.expect(204);
            app.get(&format!("/v1/messages/{id}")).await.expect(200)["seq"]
                .as_i64()
                .unwrap()
        }
    });
    let (p, e, d) = tokio::join!(
        futures::future::join_all(posts),
        futures::future::join_all(edits),
        futures::future::join_all(deletes)
    );

    let seqs: BTreeSet<i64> = p.into_iter().chain(e).chain(d).collect();
    assert_eq!(
        seqs,
        (11..=40).collect(),
        "30 changes after 10 posts: seqs 11..=40, none shared"
    );
    let channel = app.get(&format!("/v1/channels/{cid}")).await.expect(200);
    assert_eq!(channel["last_seq"], 40);
    let by_seq: HashMap<i64, i64> = app
        .pg()
        .await
        .query(
            "SELECT seq, id FROM messages WHERE channel_id = $1",
            &[&cid],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        by_seq.len(),
        30,
        "each message holds the seq of its last change"
    );
}
