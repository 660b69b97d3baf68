//! API.md promise 9: a request the instance cannot start in time gets 503 `overloaded`
//! with `Retry-After`, fast, and Postgres reads never take the connections writes need.

use std::time::{Duration, Instant};

use hotchan::config::CacheMode;
use serde_json::json;

use crate::helpers::{spawn_app_with, users};

/// Takes an exclusive lock on `messages` in a transaction of its own; every statement
/// that touches the table waits until the returned client is dropped.
async fn lock_messages(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute("BEGIN; LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_queue_a_request_is_refused_at_once_with_retry_after() {
    let app = spawn_app_with(|s| {
        s.cache = CacheMode::Off;
        s.max_in_flight = 1;
        s.max_queued = 0;
    })
    .await;
    let [u] = users();
    let channel = app.group(&[u]).await;
    let lock = lock_messages(&app.db_url).await;
    // One post runs (it waits on the lock) and holds the only slot.
    let page = format!("/v1/channels/{channel}/messages");
    let held = {
        let (app_base, client, page) = (app.base.clone(), app.client.clone(), page.clone());
        tokio::spawn(async move {
            client
                .post(format!("{app_base}{page}"))
                .json(&json!({"sender_id": u, "content": "held"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    // Once it holds the slot (`/metrics` is never held), a read is refused.
    let started = Instant::now();
    while !app
        .metrics_text()
        .await
        .contains("hotchan_admission_in_flight 1\n")
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the post never ran"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused = app
        .client
        .get(format!("{}{page}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    let sent = Instant::now();
    let retry_after = refused.headers().get("retry-after").cloned();
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "overloaded", "{body}");
    assert_eq!(retry_after.unwrap(), "1");
    // Refused at once, not after a wait; and health checks are never refused.
    let again = app.get(&page).await;
    assert_eq!(again.status, 503);
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "{:?}",
        sent.elapsed()
    );
    app.get("/healthz").await.expect(200);
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("hotchan_requests_refused_total{reason=\"queue_full\"}"),
        "{metrics}"
    );
    drop(lock);
    assert_eq!(held.await.unwrap(), 201);
    app.get(&page).await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_waiting_on_postgres_never_take_the_connections_writes_need() {
    // A pool of 4: reads may hold 3 of them.
    let app = spawn_app_with(|s| {
        s.cache = CacheMode::Off;
        s.db.pg_pool_size = 4;
        s.db.pg_pool_wait_ms = 200;
    })
    .await;
    let [u, v] = users();
    let channel = app.group(&[u]).await;
    let page = format!("/v1/channels/{channel}/messages");
    let lock = lock_messages(&app.db_url).await;
    // Reads pile up on the lock: three hold the reads' share, the rest are refused.
    let reads: Vec<_> = (0..6)
        .map(|_| {
            let (base, client, page) = (app.base.clone(), app.client.clone(), page.clone());
            tokio::spawn(async move {
                let answer = client.get(format!("{base}{page}")).send().await.unwrap();
                let status = answer.status().as_u16();
                (status, answer.text().await.unwrap())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A write to another table still finds a connection, at once.
    let started = Instant::now();
    app.put(&format!("/v1/channels/{channel}/members/{v}"), None)
        .await
        .expect(200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    drop(lock);
    let mut refused = 0;
    for read in reads {
        let (status, body) = read.await.unwrap();
        match status {
            200 => {}
            503 => {
                assert!(body.contains("\"overloaded\""), "{body}");
                refused += 1;
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(refused, 3, "three reads fit the reads' share of the pool");
}
