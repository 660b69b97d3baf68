//! Redis ACL users (#25): a user with a password works, and neither the password nor the
//! token shows in a log line, `/readyz`, `/v1/admin/cache` or `/metrics`; a user without
//! a command hotchan needs, or a wrong password, stops startup with a message naming
//! what Redis refused.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{drop_database, hotchan, test_settings, wait_for_serving, KillOnDrop};
use crate::servers::{refusal, wait_until, PrivateRedis};

const PASSWORD: &str = "acl-password-that-must-not-leak";
const TOKEN: &str = "token-that-must-not-leak";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_works_without_leaking_and_a_user_without_rights_is_refused() {
    let redis = PrivateRedis::start(&[
        "--user",
        "hot",
        "on",
        &format!(">{PASSWORD}"),
        "~*",
        "&*",
        "+@all",
        "--user",
        "mute",
        "on",
        ">mute-password",
        "~*",
        "&*",
        "+@all",
        "-publish",
    ])
    .await;
    let url =
        |user: &str, password: &str| format!("redis://{user}:{password}@127.0.0.1:{}", redis.port);

    // A user without PUBLISH, and a wrong password: refused, naming what Redis said.
    let mut mute = test_settings();
    mute.redis_url = url("mute", "mute-password");
    let message = refusal(mute).await;
    assert!(
        message.contains("PUBLISH") && message.contains("NOPERM"),
        "{message}"
    );
    let mut wrong = test_settings();
    wrong.redis_url = url("hot", "not-the-password");
    let message = refusal(wrong).await;
    assert!(message.contains("WRONGPASS"), "{message}");
    assert!(!message.contains("not-the-password"), "{message}");

    // The user with every right serves from Redis, through the real binary.
    let settings = test_settings();
    let db = settings.db.database_url.0.get_dbname().unwrap().to_owned();
    let mut child = hotchan()
        .arg("serve")
        .env(
            "HOTCHAN_DATABASE_URL",
            format!("{}/{db}", crate::helpers::pg_server()),
        )
        .env("HOTCHAN_REDIS_URL", url("hot", PASSWORD))
        .env("HOTCHAN_REDIS_PREFIX", &settings.redis_prefix)
        .env("HOTCHAN_CACHE", "redis")
        .env("HOTCHAN_TOKEN", TOKEN)
        .env("HOTCHAN_LISTEN", "127.0.0.1:0")
        .env("HOTCHAN_LOG_FORMAT", "json")
        .env("HOTCHAN_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let log = Arc::new(Mutex::new(String::new()));
    let addr = wait_for_serving(&mut lines, &mut log.lock().unwrap());
    let reader = {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                log.lock().unwrap().push_str(&line);
            }
        })
    };
    let server = KillOnDrop(child);
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut request = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let answer = request.send().await.unwrap();
            let status = answer.status().as_u16();
            (status, answer.text().await.unwrap())
        }
    };
    let user = uuid::Uuid::new_v4();
    let (status, channel) = call(
        reqwest::Method::POST,
        "/v1/channels",
        Some(json!({"type": "group", "members": [user]})),
    )
    .await;
    assert_eq!(status, 201, "{channel}");
    let channel: Value = serde_json::from_str(&channel).unwrap();
    let page = format!("/v1/channels/{}/messages", channel["id"].as_str().unwrap());
    call(
        reqwest::Method::POST,
        &page,
        Some(json!({"sender_id": user, "content": "hello"})),
    )
    .await;
    wait_until(
        Duration::from_secs(10),
        "a read served by Redis",
        || async {
            call(reqwest::Method::GET, &page, None).await;
            let (_, cache) = call(reqwest::Method::GET, "/v1/admin/cache", None).await;
            let cache: Value = serde_json::from_str(&cache).unwrap();
            cache["redis"]["hits"].as_u64().unwrap() > 0
        },
    )
    .await;
    let mut shown = String::new();
    for path in ["/readyz", "/v1/admin/cache", "/metrics"] {
        let (status, body) = call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        shown.push_str(&body);
    }
    drop(server);
    reader.join().unwrap();
    drop_database(&db).await;
    let log = log.lock().unwrap().clone();
    assert!(log.contains("serving"), "{log}");
    for secret in [PASSWORD, TOKEN] {
        assert!(!log.contains(secret), "the log shows a secret: {log}");
        assert!(!shown.contains(secret), "an answer shows a secret: {shown}");
    }
}
