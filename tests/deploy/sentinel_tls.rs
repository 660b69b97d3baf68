//! `rediss-sentinel://` (#25): a TLS-only primary and a TLS-only sentinel, with
//! certificates made in the test. With the right CA hotchan finds the primary through
//! the sentinel and serves from Redis, both links over TLS; with a CA that signed nothing
//! here, startup is refused naming the setting.

use std::time::Duration;

use hotchan::config::CacheMode;

use crate::helpers::{spawn_with_settings, test_settings, users};
use crate::servers::{free_port, refusal, Certs, PrivateRedis, Scratch};
use crate::support::{cache_stats, eventually};

const SERVICE: &str = "hc";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_sentinel_leads_to_a_tls_primary_and_a_wrong_ca_is_refused() {
    let certs = Certs::make().await;
    let (pdir, sdir) = (Scratch::new("primary-tls"), Scratch::new("sentinel-tls"));
    let (p, s) = (free_port(), free_port());
    let tls: Vec<String> = [
        "--tls-cert-file",
        &certs.cert.display().to_string(),
        "--tls-key-file",
        &certs.key.display().to_string(),
        "--tls-ca-cert-file",
        &certs.ca.display().to_string(),
        "--tls-auth-clients",
        "no",
    ]
    .map(String::from)
    .to_vec();
    let with_tls = |mut args: Vec<String>| {
        args.extend(tls.iter().cloned());
        args
    };
    let primary_args = with_tls(
        ["--port", "0", "--tls-port", &p.to_string()]
            .map(String::from)
            .to_vec(),
    );
    let primary_args: Vec<&str> = primary_args.iter().map(String::as_str).collect();
    let _primary = PrivateRedis::start_with(p, Some(&pdir.0), &primary_args).await;
    let conf = sdir.path("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "sentinel monitor {SERVICE} 127.0.0.1 {p} 1\n\
             sentinel down-after-milliseconds {SERVICE} 1000\n"
        ),
    )
    .unwrap();
    // The sentinel reaches the primary over TLS too (`tls-replication`).
    let sentinel_args = with_tls(
        [
            conf.display().to_string(),
            "--sentinel".into(),
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            s.to_string(),
            "--tls-replication".into(),
            "yes".into(),
        ]
        .to_vec(),
    );
    let sentinel_args: Vec<&str> = sentinel_args.iter().map(String::as_str).collect();
    let _sentinel = PrivateRedis::start_with(s, Some(&sdir.0), &sentinel_args).await;

    let mut settings = test_settings();
    // No L1: every read asks Redis.
    settings.cache = CacheMode::Redis;
    settings.redis_url = format!("rediss-sentinel://127.0.0.1:{s}?sentinelServiceName={SERVICE}");
    settings.redis_ca_file = Some(certs.ca.clone());
    // No replica here: `auto` would wait for one behind Sentinel, and every write would
    // count as one Redis missed.
    settings.redis_wait_replicas = hotchan::config::WaitReplicas(Some(0));

    let mut wrong = settings.clone();
    wrong.redis_ca_file = Some(certs.wrong_ca.clone());
    let message = refusal(wrong).await;
    assert!(message.contains("--redis-ca-file"), "{message}");

    let app = spawn_with_settings(settings).await;
    let [u] = users();
    let cid = app.group(&[u]).await;
    app.say(cid, u, "through a TLS sentinel").await;
    let page = format!("/v1/channels/{cid}/messages");
    eventually(
        Duration::from_secs(20),
        "a read served by Redis",
        || async {
            let before = cache_stats(&app).await["redis"]["hits"].as_u64().unwrap();
            app.get(&page).await.expect(200);
            cache_stats(&app).await["redis"]["hits"].as_u64().unwrap() > before
        },
    )
    .await;
    let ready = app.get("/readyz").await.expect(200);
    assert_eq!(ready["redis"], "up", "{ready}");
}
