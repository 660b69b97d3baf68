//! The whole router in process, with no network: a latest page that L1 answers (every
//! middleware, the handler, the service, the tiers) against a static route that returns
//! the same bytes from memory with no middleware. The difference is what a cache hit
//! costs in CPU beyond the HTTP stack's own work (#24: at most 2 µs). Each sample is the
//! whole process's CPU time (`CLOCK_PROCESS_CPUTIME_ID`), so work a hit hands to a
//! background task (the sizing advisor's batches, metrics' upkeep) counts too.
//!
//! Needs Postgres and Redis: `HOTCHAN_BENCH_PG` (a server URL without a database, default
//! postgres://127.0.0.1:5432) and `HOTCHAN_BENCH_REDIS_URL` (default
//! redis://127.0.0.1:6379). It creates a database of its own and drops it at the end.
//!
//! Run: `cargo bench --bench router`.

use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::http::{Request, StatusCode};
use criterion::{criterion_group, criterion_main, Criterion};
use hotchan::api::Router;
use hotchan::app::Application;
use hotchan::config::Settings;
use serde_json::{json, Value};
use tower::ServiceExt;
use uuid::Uuid;

async fn call(router: &Router, request: Request<Body>) -> (StatusCode, bytes::Bytes) {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    (
        status,
        to_bytes(response.into_body(), usize::MAX).await.unwrap(),
    )
}

async fn post(router: &Router, uri: &str, body: Value) -> Value {
    let request = Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let (status, body) = call(router, request).await;
    assert!(status.is_success(), "{uri}: {status} {body:?}");
    serde_json::from_slice(&body).unwrap()
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

/// The CPU time this process has used so far, on every thread: the runtime's workers
/// (the cache's background tasks) as well as this one.
fn process_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write to.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Runs `iters` requests of `uri` one after another on this thread; the process CPU
/// time they took.
async fn run(router: &Router, uri: &str, iters: u64) -> Duration {
    let started = process_cpu();
    for _ in 0..iters {
        let (status, body) = call(router, get(uri)).await;
        assert_eq!(status, StatusCode::OK);
        std::hint::black_box(body);
    }
    process_cpu() - started
}

fn router_hit(c: &mut Criterion) {
    let pg = std::env::var("HOTCHAN_BENCH_PG").unwrap_or("postgres://127.0.0.1:5432".into());
    let db_name = format!("hcbench_router_{}", Uuid::new_v4().simple());
    let mut settings = Settings::with_defaults(&format!("{pg}/{db_name}"), "127.0.0.1:0")
        .expect("default settings parse");
    if let Ok(url) = std::env::var("HOTCHAN_BENCH_REDIS_URL") {
        settings.redis_url = url;
    }
    settings.redis_prefix = format!("hcbench_{}", Uuid::new_v4().simple());
    // Background tasks (heartbeat, fills, upkeep) run on the workers; each measured loop
    // runs on the bench's own thread (`block_on`).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let app = rt
        .block_on(Application::build(settings))
        .expect("hotchan starts");
    let router = app.router();
    let service = app.service();
    let (page_uri, body) = rt.block_on(async {
        let sender = Uuid::new_v4();
        let channel = post(
            &router,
            "/v1/channels",
            json!({"type": "group", "name": "bench", "members": [sender]}),
        )
        .await;
        let cid = channel["id"].as_str().unwrap().to_owned();
        let uri = format!("/v1/channels/{cid}/messages");
        for i in 0..60 {
            let content =
                format!("message {i}: lorem ipsum dolor sit amet, consectetur adipiscing");
            post(
                &router,
                &uri,
                json!({"sender_id": sender, "content": content}),
            )
            .await;
        }
        // L1 serves once the instance hears its own heartbeat.
        for _ in 0..250 {
            if !service.cache().l1().is_bypassed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut body = bytes::Bytes::new();
        for _ in 0..100 {
            body = call(&router, get(&uri)).await.1;
        }
        let before = service.cache().stats().snapshot();
        for _ in 0..100 {
            body = call(&router, get(&uri)).await.1;
        }
        let after = service.cache().stats().snapshot().since(&before);
        assert!(
            after.l1_hits == 100,
            "the page is an L1 hit: {} hits of 100",
            after.l1_hits
        );
        (uri, body)
    });
    let ceiling = Router::new().route(
        "/page",
        axum::routing::get(move || {
            let body = body.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
            }
        }),
    );

    let mut group = c.benchmark_group("router");
    group.bench_function("static page", |b| {
        b.iter_custom(|iters| rt.block_on(run(&ceiling, "/page", iters)))
    });
    group.bench_function("latest page, L1 hit", |b| {
        b.iter_custom(|iters| rt.block_on(run(&router, &page_uri, iters)))
    });
    group.finish();

    rt.block_on(async {
        let redis = hotchan::redis::Redis::connect(app.redis_settings()).await;
        app.close().await;
        if let Ok(redis) = redis {
            let _ = redis.delete_prefix().await;
            redis.close().await;
        }
    });
    let admin = format!("{pg}/postgres");
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .expect("the Postgres server answers");
        tokio::spawn(conn);
        let _ = client
            .execute(
                &format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"),
                &[],
            )
            .await;
    });
}

criterion_group!(benches, router_hit);
criterion_main!(benches);
