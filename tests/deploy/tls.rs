//! TLS with a CA made in the test: a TLS Redis and a Postgres with `ssl=on`. The right CA
//! works; a wrong CA, or a plaintext server behind a TLS setting, stops startup with a
//! message that names the setting.

use hotchan::config::{CacheMode, Settings};

use crate::helpers::{redis_url, spawn_with_settings, test_settings, users};
use crate::postgres_servers::Postgres;
use crate::servers::{free_port, refusal, Certs, PrivateRedis, Scratch};
use std::time::Duration;

use crate::support::{cache_stats, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_redis_works_with_the_right_ca_and_refuses_a_wrong_ca_or_plaintext() {
    let certs = Certs::make().await;
    let dir = Scratch::new("redis-tls");
    let port = free_port();
    let (p, cert, key, ca) = (
        port.to_string(),
        certs.cert.display().to_string(),
        certs.key.display().to_string(),
        certs.ca.display().to_string(),
    );
    let _tls = PrivateRedis::start_with(
        port,
        Some(&dir.0),
        &[
            "--port",
            "0",
            "--tls-port",
            &p,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
        ],
    )
    .await;

    let mut settings = test_settings();
    settings.cache = CacheMode::Full;
    settings.redis_url = format!("rediss://127.0.0.1:{port}");
    settings.redis_ca_file = Some(certs.ca.clone());
    let app = spawn_with_settings(settings.clone()).await;
    let ready = app.get("/readyz").await.expect(200);
    assert_eq!(ready["redis"], "up", "{ready}");
    let [u] = users();
    let cid = app.group(&[u]).await;
    app.say(cid, u, "over TLS").await;
    let page = format!("/v1/channels/{cid}/messages");
    // Reads until one is answered by the tiers: the window went to Redis over TLS and
    // came back.
    eventually(
        Duration::from_secs(10),
        "a read served by the tiers",
        || async {
            app.get(&page).await.expect(200);
            let stats = cache_stats(&app).await;
            stats["fills"].as_u64().unwrap() >= 1
                && stats["redis"]["hits"].as_u64().unwrap() + stats["l1"]["hits"].as_u64().unwrap()
                    >= 1
        },
    )
    .await;
    assert_eq!(cache_stats(&app).await["redis"]["breaker"], "closed");

    // A CA that did not sign the server's certificate.
    let mut wrong = settings.clone();
    wrong.redis_ca_file = Some(certs.wrong_ca.clone());
    let message = refusal(wrong).await;
    assert!(message.contains("--redis-ca-file"), "{message}");

    // A plaintext server behind a TLS URL.
    let mut plaintext = settings.clone();
    let shared = redis_url();
    let plain_port = shared.rsplit(':').next().unwrap();
    plaintext.redis_url = format!("rediss://127.0.0.1:{plain_port}");
    if shared.starts_with("redis://") {
        let message = refusal(plaintext).await;
        assert!(message.contains("TLS handshake"), "{message}");
    }

    // A CA file with a plaintext URL is refused too: the user asked for TLS.
    let mut mixed = settings;
    mixed.redis_url = format!("redis://127.0.0.1:{port}");
    let message = refusal(mixed).await;
    assert!(message.contains("--redis-ca-file"), "{message}");
}

fn pg_settings(url: &str) -> Settings {
    let mut settings = test_settings();
    let with = Settings::with_defaults(url, "127.0.0.1:0").expect("the URL parses");
    settings.db = with.db;
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_postgres_verifies_the_server_and_refuses_a_wrong_ca_or_plaintext() {
    let certs = Certs::make().await;
    let pg = Postgres::start_with_tls(&certs).await;
    let ca = certs.ca.display().to_string();

    let app = spawn_with_settings(pg_settings(
        &pg.url(&format!("sslmode=verify-full&sslrootcert={ca}")),
    ))
    .await;
    let [u] = users();
    let cid = app.group(&[u]).await;
    app.say(cid, u, "over TLS").await;
    app.get(&format!("/v1/channels/{cid}/messages"))
        .await
        .expect(200);
    // Every connection of hotchan's is encrypted.
    let (plain, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            pg.port
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let row = plain
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name LIKE 'hotchan%'",
            &[],
        )
        .await
        .unwrap();
    let (tls, clear): (i64, i64) = (row.get(0), row.get(1));
    assert!(
        tls >= 1 && clear == 0,
        "{tls} TLS connections, {clear} plaintext"
    );

    // A wrong CA stops startup, naming the setting and the reason.
    let wrong = certs.wrong_ca.display().to_string();
    let message = refusal(pg_settings(
        &pg.url(&format!("sslmode=verify-ca&sslrootcert={wrong}")),
    ))
    .await;
    assert!(message.contains("sslrootcert"), "{message}");
    assert!(message.contains("certificate"), "{message}");

    // A server without TLS behind sslmode=require: refused, never plaintext.
    plain
        .simple_query("ALTER SYSTEM SET ssl = off")
        .await
        .unwrap();
    plain.simple_query("SELECT pg_reload_conf()").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let message = refusal(pg_settings(&pg.url("sslmode=require"))).await;
    assert!(message.contains("TLS"), "{message}");
}
