//! The consistency auditor (`src/cache/audit.rs`): a wrong window planted straight into
//! Redis, behind every fence, is found by the 1 s check, reported with the channel and
//! the differing fields in `/v1/admin/cache` and `/metrics`, and healed: the channel is
//! dropped everywhere, so the next reads answer what Postgres holds.

use std::time::Duration;

use fred::prelude::{Builder, ClientLike, Config, KeysInterface};
use hotchan::config::CacheMode;

use crate::helpers::{redis_url, spawn_with_settings, test_settings, users};
use crate::support::{cache_stats, eventually, until_cached};

/// An instance in `full` mode that audits every write and fills on the first miss.
async fn audited_app() -> crate::helpers::TestApp {
    let mut settings = test_settings();
    settings.cache = CacheMode::Full;
    settings.fill_after_misses = 1;
    settings.audit_percent = 100.0;
    spawn_with_settings(settings).await
}

#[tokio::test]
async fn a_wrong_value_planted_in_redis_is_detected_reported_and_healed() {
    let app = audited_app().await;
    let [a] = users();
    let cid = app.group(&[a]).await;
    app.say(cid, a, "first").await;
    let page = format!("/v1/channels/{cid}/messages");
    until_cached(&app, &page).await;

    // Keep Redis's window as it is now: one message. (Keys end in `{cid}:msgs` and
    // `{cid}:meta`; the test prefix is extended by the layout of messages.)
    let suffixes = [format!("{{{cid}}}:msgs"), format!("{{{cid}}}:meta")];
    let key = |snapshot: &std::collections::BTreeMap<String, Vec<u8>>, suffix: &str| {
        snapshot.keys().find(|k| k.ends_with(suffix)).cloned()
    };
    eventually(
        Duration::from_secs(10),
        "the window filled into Redis",
        || async {
            app.get(&page).await.expect(200);
            key(&app.redis_snapshot().await, &suffixes[1]).is_some()
        },
    )
    .await;
    let before = app.redis_snapshot().await;
    let keys = suffixes.map(|s| key(&before, &s).expect("the window's keys"));
    let old: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| {
            before
                .get(k)
                .cloned()
                .unwrap_or_else(|| panic!("{k} in Redis"))
        })
        .collect();

    // A second message goes through the write path: Redis's window now holds both.
    let second = app.say(cid, a, "second").await;
    // Plant the old window with RESTORE: no script, no fence, no invalidation.
    let client = Builder::from_config(Config::from_url(&redis_url()).unwrap())
        .build()
        .unwrap();
    client.init().await.unwrap();
    for (key, dump) in keys.iter().zip(old) {
        let _: () = client
            .restore(
                key.as_str(),
                0,
                fred::types::Value::Bytes(dump.into()),
                true,
                false,
                None,
                None,
            )
            .await
            .unwrap();
    }

    // Detected within the 1 s check (plus its 200 ms second look).
    eventually(
        Duration::from_secs(5),
        "the auditor finds the planted window",
        || async {
            cache_stats(&app).await["audit"]["delays"][0]["inconsistent"]
                .as_u64()
                .unwrap()
                >= 1
        },
    )
    .await;
    let audit = cache_stats(&app).await["audit"].clone();
    assert_eq!(audit["delays"][0]["delay"], "1s");
    assert_eq!(audit["sample_percent"], 100.0);
    let last = &audit["last_inconsistency"];
    assert_eq!(last["channel"], cid.to_string());
    let differences = last["differences"].to_string();
    assert!(differences.contains("redis: last_seq"), "{differences}");
    assert!(
        differences.contains(&format!("redis: message {} is missing", second["id"])),
        "{differences}"
    );
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains(r#"hotchan_audit_checks_total{delay="1s",result="inconsistent"} "#),
        "{metrics}"
    );

    // Healed: the planted window is gone from Redis (dropped, or filled again from
    // Postgres), and reads answer both messages.
    let now = app.redis_snapshot().await;
    assert_ne!(
        now.get(&keys[1]),
        before.get(&keys[1]),
        "the planted meta is still there"
    );
    for _ in 0..3 {
        let body = app.get(&page).await.expect(200);
        let contents: Vec<&str> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap())
            .collect();
        assert_eq!(contents, ["second", "first"]);
    }
    let _ = client.quit().await;
}

#[tokio::test]
async fn a_sound_cache_audits_consistent() {
    let app = audited_app().await;
    let [a] = users();
    let cid = app.group(&[a]).await;
    let page = format!("/v1/channels/{cid}/messages");
    for i in 0..5 {
        app.say(cid, a, &format!("m{i}")).await;
        until_cached(&app, &page).await;
    }
    eventually(Duration::from_secs(5), "five 1 s checks", || async {
        let d = &cache_stats(&app).await["audit"]["delays"][0];
        d["consistent"].as_u64().unwrap() + d["skipped"].as_u64().unwrap() >= 5
    })
    .await;
    let d = cache_stats(&app).await["audit"]["delays"][0].clone();
    assert_eq!(d["inconsistent"], 0, "{d}");
    assert!(d["consistent"].as_u64().unwrap() >= 1, "{d}");
    assert_eq!(d["nines_at_least"], true, "{d}");
}
