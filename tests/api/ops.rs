//! Health, readiness, metrics, admin routes, auth, body limits, Unix sockets, shutdown,
//! migrations, and Postgres going away.

use hotchan::config::{CacheMode, Secret};
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::helpers::{spawn_app, spawn_app_with, test_settings, users};

#[tokio::test]
async fn health_and_readiness_report_both_stores() {
    let app = spawn_app().await;
    assert_eq!(
        app.get("/healthz").await.expect(200),
        json!({"status": "ok"})
    );
    assert_eq!(
        app.get("/readyz").await.expect(200),
        json!({"postgres": "up", "redis": "up"})
    );
}

#[tokio::test]
async fn readiness_says_redis_is_down_and_still_answers_200() {
    // Port 1 on loopback refuses connections.
    let app = spawn_app_with(|s| s.redis_url = "redis://127.0.0.1:1".into()).await;
    let ready = app.get("/readyz").await.expect(200);
    assert_eq!(
        (&ready["postgres"], &ready["redis"]),
        (&json!("up"), &json!("down"))
    );
    // The reason is what the connection attempt met, not a bare "down".
    let reason = ready["redis_error"].as_str().expect("a redis_error string");
    assert!(reason.contains("refused"), "{reason}");
    // Reads and writes do not need Redis.
    let [a] = users();
    let cid = app.group(&[a]).await;
    app.say(cid, a, "still works").await;
}

#[tokio::test]
async fn without_postgres_readiness_is_503_and_writes_answer_503() {
    let app = spawn_app().await;
    let [a] = users();
    let cid = app.group(&[a]).await;
    // Cut this test's database off: no new connections, existing ones terminated.
    let admin = app.admin_pg().await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {db} ALLOW_CONNECTIONS false;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = '{db}';",
            db = app.db_name
        ))
        .await
        .unwrap();

    let ready = app.get("/readyz").await;
    assert_eq!(ready.status.as_u16(), 503);
    assert_eq!(
        (&ready.body["postgres"], &ready.body["redis"]),
        (&json!("down"), &json!("up"))
    );
    // The server's own message, not only "db error": a new connection is refused, or a
    // pooled one meets its termination.
    let reason = ready.body["postgres_error"]
        .as_str()
        .expect("a postgres_error string");
    assert!(
        reason.contains("is not currently accepting connections")
            || reason.contains("terminating connection due to administrator command"),
        "{reason}"
    );
    assert!(ready.body.get("redis_error").is_none(), "{}", ready.body);
    app.post(
        &format!("/v1/channels/{cid}/messages"),
        json!({"sender_id": a, "content": "x"}),
    )
    .await
    .expect_error(503, "unavailable");
    app.post("/v1/channels", json!({"type": "group"}))
        .await
        .expect_error(503, "unavailable");
}

#[tokio::test]
async fn metrics_count_requests_per_route_and_show_the_pool() {
    // A fill after the second miss: the one miss here then queues no fill, whose first
    // step (a look in Redis) would hide what the read itself asked for.
    let app = spawn_app_with(|s| s.fill_after_misses = 2).await;
    app.get(&format!("/v1/channels/{}", Uuid::new_v4()))
        .await
        .expect(404);
    app.get("/healthz").await.expect(200);

    let text = app.metrics_text().await;

    assert!(
        text.contains(
            r#"hotchan_http_requests_total{route="/v1/channels/{cid}",method="GET",status="404"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"hotchan_http_request_duration_seconds_bucket{route="/healthz",method="GET",le="0.005"}"#), "{text}");
    assert!(
        text.contains(r#"hotchan_postgres_pool_connections{state="max"} 16"#),
        "{text}"
    );
    // A miss in the tiers is answered by Postgres's own query; fills run apart. A key this
    // instance never saw in Redis is not asked for there: the read costs what `off` costs.
    let path = match app.settings.cache {
        CacheMode::Off => "postgres",
        CacheMode::Redis | CacheMode::Full => "fill",
    };
    assert!(
        text.contains(&format!(
            r#"hotchan_read_duration_seconds_bucket{{path="{path}""#
        )),
        "{text}"
    );
    assert!(
        text.contains(r#"hotchan_postgres_call_duration_seconds_bucket{operation="load_channel""#),
        "{text}"
    );
    assert!(
        !text.contains(r#"hotchan_redis_call_duration_seconds_bucket{operation="read_window""#),
        "{text}"
    );
}

#[tokio::test]
async fn with_a_token_every_v1_route_needs_it_and_operations_stay_open() {
    let app = spawn_app_with(|s| s.token = Some(Secret("s3cret-token".into()))).await;
    let cid = Uuid::new_v4();
    let url = format!("{}/v1/channels/{cid}", app.base);

    let missing = app.client.get(&url).send().await.unwrap();
    assert_eq!(missing.status().as_u16(), 401);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");
    let wrong = app
        .client
        .get(&url)
        .bearer_auth("s3cret-tokeN")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let short = app
        .client
        .get(&url)
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(short.status().as_u16(), 401);
    let posted = app
        .client
        .post(format!("{}/v1/channels", app.base))
        .json(&json!({"type": "group"}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status().as_u16(), 401);

    app.get(&format!("/v1/channels/{cid}"))
        .await
        .expect_error(404, "not_found");
    for open in ["/healthz", "/readyz", "/metrics"] {
        let response = app
            .client
            .get(format!("{}{open}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{open}");
    }
}

#[tokio::test]
async fn bodies_over_one_mib_are_413() {
    let app = spawn_app().await;
    let [a] = users();
    let cid = app.group(&[a]).await;
    let huge = format!(
        r#"{{"sender_id":"{a}","content":"{}"}}"#,
        "x".repeat(1 << 20)
    );

    app.send_raw(
        Method::POST,
        &format!("/v1/channels/{cid}/messages"),
        huge.into_bytes(),
    )
    .await
    .expect_error(413, "payload_too_large");
    app.send_raw(Method::POST, "/v1/channels", b"{not json".to_vec())
        .await
        .expect_error(400, "bad_request");
}

#[tokio::test]
async fn unknown_routes_and_methods_get_the_error_body() {
    let app = spawn_app().await;
    app.get("/v1/nothing-here")
        .await
        .expect_error(404, "not_found");
    app.request(Method::PUT, "/healthz", None).await.expect(405);
}

#[tokio::test]
async fn the_cache_admin_routes_answer_and_validate() {
    let app = spawn_app().await;
    let stats = app.get("/v1/admin/cache").await.expect(200);
    assert_eq!(stats["mode"], app.settings.cache.as_str());
    assert_eq!(
        stats["l1"]["enabled"],
        app.settings.cache == CacheMode::Full
    );
    app.post("/v1/admin/cache/flush", json!({}))
        .await
        .expect(204);
    app.post(
        "/v1/admin/cache/flush",
        json!({"channel_id": Uuid::new_v4()}),
    )
    .await
    .expect(204);
    app.post("/v1/admin/cache/flush", json!({"channel_id": "x"}))
        .await
        .expect_error(400, "bad_request");
}

#[tokio::test]
async fn every_table_and_queue_that_grows_with_traffic_shows_its_size_and_limit() {
    let app = spawn_app().await;
    let [a] = users();
    let cid = app.group(&[a]).await;
    let said = app.say(cid, a, "hi").await;
    app.get(&format!("/v1/messages/{}", said["id"]))
        .await
        .expect(200);
    let stats = app.get("/v1/admin/cache").await.expect(200);
    let bounds = stats["bounds"].as_object().expect("a bounds object");
    let metrics = app.metrics_text().await;
    for name in [
        "l1_loads_in_flight",
        "fills_queued",
        "dirty_channels",
        "message_channels",
        "invalidation_events",
        "cache_notices",
    ] {
        let (len, limit) = (
            bounds[name]["len"].as_u64().unwrap(),
            bounds[name]["limit"].as_u64().unwrap(),
        );
        assert!(limit > 0 && len <= limit, "{name}: {len} of {limit}");
        assert!(
            metrics.contains(&format!("hotchan_bounded_limit{{name=\"{name}\"}} {limit}")),
            "{name} in /metrics"
        );
    }
}

#[tokio::test]
async fn it_serves_on_a_unix_socket() {
    let path = std::env::temp_dir().join(format!("hotchan-{}.sock", Uuid::new_v4().simple()));
    let listen = format!("unix:{}", path.display());
    let mut app = spawn_app_with(|s| s.listen = listen.parse().unwrap()).await;

    let mut stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: hotchan\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();

    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(r#"{"status":"ok"}"#), "{answer}");
    app.stop().await;
    assert!(!path.exists(), "the socket file is removed on shutdown");
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish() {
    let mut app = spawn_app().await;
    let [a] = users();
    let cid = app.group(&[a]).await;
    // Hold the channel row lock, so the post below waits inside Postgres.
    let mut holder = app.pg().await;
    let lock = holder.transaction().await.unwrap();
    lock.execute("SELECT 1 FROM channels WHERE id = $1 FOR UPDATE", &[&cid])
        .await
        .unwrap();
    let post = {
        let (client, url) = (
            app.client.clone(),
            format!("{}/v1/channels/{cid}/messages", app.base),
        );
        tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({"sender_id": a, "content": "late"}))
                .send()
                .await
        })
    };
    let watcher = app.pg().await;
    loop {
        let waiting: i64 = watcher
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'", &[&app.db_name])
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        tokio::task::yield_now().await;
    }

    app.signal_stop();
    // Once the listener is closed the server is draining; the post is still held.
    let addr = app.base.trim_start_matches("http://").to_owned();
    while tokio::net::TcpStream::connect(&addr).await.is_ok() {
        tokio::task::yield_now().await;
    }
    assert!(!post.is_finished(), "the post waits on the lock");
    lock.commit().await.unwrap();
    app.stop().await;

    let answer = post
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(answer.status().as_u16(), 201);
}

#[tokio::test]
async fn migrations_from_several_instances_at_once_apply_once() {
    let settings = test_settings();
    let pg = settings.db.pg();
    hotchan::postgres::ensure_database(&pg).await.unwrap();

    let runs = (0..4).map(|_| hotchan::postgres::migrate(&pg));
    let applied: Vec<usize> = futures::future::try_join_all(runs).await.unwrap();

    assert_eq!(
        applied.iter().sum::<usize>(),
        hotchan::postgres::MIGRATIONS.len()
    );
    assert_eq!(hotchan::postgres::migrate(&pg).await.unwrap(), 0);
    // Clean up through a TestApp on the same database.
    drop(crate::helpers::spawn_with_settings(settings).await);
}

#[tokio::test]
async fn a_trace_file_records_every_channel_read() {
    let path = std::env::temp_dir().join(format!("hotchan-trace-{}.txt", Uuid::new_v4().simple()));
    let app = spawn_app_with(|s| s.trace_file = Some(path.clone())).await;
    let [a] = users();
    let cid = app.group(&[a]).await;
    let m = app.say(cid, a, "x").await["id"].as_i64().unwrap();

    app.get(&format!("/v1/channels/{cid}/messages?limit=20"))
        .await
        .expect(200);
    app.get(&format!("/v1/channels/{cid}/messages?before={m}"))
        .await
        .expect(200);
    app.get(&format!("/v1/channels/{cid}/unread?user_id={a}"))
        .await
        .expect(200);
    app.post("/v1/sync", json!({"channels": {cid.to_string(): 0}}))
        .await
        .expect(200);

    let expected = format!("{cid} 20\n{cid} {}\n{cid} 0\n{cid} 0\n", u32::MAX);
    let mut written = String::new();
    for _ in 0..500 {
        written = std::fs::read_to_string(&path).unwrap_or_default();
        if written.len() >= expected.len() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let _ = std::fs::remove_file(&path);
    assert_eq!(written, expected);
}
