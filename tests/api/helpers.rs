//! The spawn-app helper: every test gets its own database, Redis key prefix and port.

use std::collections::BTreeMap;
use std::time::Duration;

use hotchan::app::Application;
use hotchan::config::{CacheMode, ListenAddr, Settings};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use uuid::Uuid;

/// The Postgres server tests create their databases on (no database in the URL).
pub fn pg_server() -> String {
    std::env::var("HOTCHAN_TEST_PG").unwrap_or_else(|_| "postgres://127.0.0.1:5432".into())
}

pub fn redis_url() -> String {
    std::env::var("HOTCHAN_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Name prefix of test databases; `scripts/test` drops leftovers of earlier runs.
pub const TEST_DB_PREFIX: &str = "hctest_";

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub db_name: String,
    pub db_url: String,
    pub settings: Settings,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// The cache mode the contract tests run in: `HOTCHAN_TEST_CACHE` (full, redis or off),
/// default full. `scripts/test` runs the contract suite in all three.
pub fn test_cache_mode() -> CacheMode {
    match std::env::var("HOTCHAN_TEST_CACHE").as_deref() {
        Ok("off") => CacheMode::Off,
        Ok("redis") => CacheMode::Redis,
        Ok("full") | Err(_) => CacheMode::Full,
        Ok(other) => panic!("HOTCHAN_TEST_CACHE must be full, redis or off, not {other}"),
    }
}

/// Settings for a new test: its own database name and Redis prefix, port 0. The layout of
/// `messages` is the default's unless `HOTCHAN_TEST_PARTITIONS` says otherwise.
pub fn test_settings() -> Settings {
    let db_name = format!("{TEST_DB_PREFIX}{}", Uuid::new_v4().simple());
    let mut settings =
        Settings::with_defaults(&format!("{}/{db_name}", pg_server()), "127.0.0.1:0")
            .expect("default settings parse");
    settings.redis_url = redis_url();
    settings.redis_prefix = format!("hct_{}", Uuid::new_v4().simple());
    settings.cache = test_cache_mode();
    if let Ok(partitions) = std::env::var("HOTCHAN_TEST_PARTITIONS") {
        settings.db.message_partitions = partitions
            .parse()
            .expect("HOTCHAN_TEST_PARTITIONS is a partition count (0: a plain table)");
    }
    settings
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = test_settings();
    configure(&mut settings);
    spawn_with_settings(settings).await
}

pub async fn spawn_with_settings(settings: Settings) -> TestApp {
    spawn_with_hooks(settings, hotchan::cache::Hooks::default()).await
}

pub async fn spawn_with_hooks(settings: Settings, hooks: hotchan::cache::Hooks) -> TestApp {
    let db_name = settings
        .db
        .database_url
        .0
        .get_dbname()
        .expect("test settings name a database")
        .to_owned();
    let app = Application::build_with_hooks(settings.clone(), hooks)
        .await
        .expect("the test app builds");
    let base = match app.local_addr() {
        ListenAddr::Tcp(addr) => format!("http://{addr}"),
        ListenAddr::Unix(path) => format!("unix:{}", path.display()),
    };
    let (stop, stopped) = oneshot::channel();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    TestApp {
        base,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        db_url: format!("{}/{db_name}", pg_server()),
        db_name,
        settings,
        stop: Some(stop),
        server: Some(server),
    }
}

/// A response: status and JSON body (`Value::Null` when the body is empty).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    /// Asserts the status and, for errors, the contract's error body with this code.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        if status >= 400 {
            let code = self.body["error"].as_str().unwrap_or_default();
            assert!(!code.is_empty(), "error body without a code: {}", self.body);
            assert!(
                self.body["message"].is_string(),
                "error body without a message: {}",
                self.body
            );
        }
        self.body
    }

    /// Asserts an error with this status and error code.
    #[track_caller]
    pub fn expect_error(self, status: u16, code: &str) -> Value {
        let body = self.expect(status);
        assert_eq!(body["error"], code, "{body}");
        body
    }
}

impl TestApp {
    pub async fn request(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.settings.token {
            request = request.bearer_auth(&token.0);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the request is answered");
        read_answer(response).await
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        let response = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        response.text().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.request(Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.request(Method::POST, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: Option<Value>) -> Answer {
        self.request(Method::PUT, path, body).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> Answer {
        self.request(Method::PATCH, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> Answer {
        self.request(Method::DELETE, path, None).await
    }

    /// Sends raw bytes as a body, for malformed and oversized requests.
    pub async fn send_raw(&self, method: Method, path: &str, body: Vec<u8>) -> Answer {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = &self.settings.token {
            request = request.bearer_auth(&token.0);
        }
        read_answer(request.send().await.expect("the request is answered")).await
    }

    /// Creates a group channel with these members; returns its id.
    pub async fn group(&self, members: &[Uuid]) -> Uuid {
        let body = self
            .post(
                "/v1/channels",
                json!({"type": "group", "name": "g", "members": members}),
            )
            .await
            .expect(201);
        body["id"].as_str().unwrap().parse().unwrap()
    }

    /// Posts a message; returns the message.
    pub async fn say(&self, channel: Uuid, sender: Uuid, content: &str) -> Value {
        self.post(
            &format!("/v1/channels/{channel}/messages"),
            json!({"sender_id": sender, "content": content}),
        )
        .await
        .expect(201)
    }

    /// Arranges `n` messages quickly through SQL, the channel's first n changes (seqs 1..=n,
    /// as the write path would number them). Only for channels with no message yet.
    pub async fn bulk_messages(&self, channel: Uuid, sender: Uuid, n: i64) {
        self.pg()
            .await
            .execute(
                "WITH posted AS (
                   INSERT INTO messages (channel_id, sender_id, content, seq)
                   SELECT $1, $2, 'm' || s, s FROM generate_series(1, $3::bigint) s)
                 UPDATE channels SET last_seq = $3 WHERE id = $1",
                &[&channel, &sender, &n],
            )
            .await
            .expect("bulk messages are inserted");
        // Written behind hotchan's back: drop what the tiers hold of the channel.
        self.post("/v1/admin/cache/flush", json!({"channel_id": channel}))
            .await
            .expect(204);
    }

    /// A direct connection to this test's database, for arranging and asserting.
    pub async fn pg(&self) -> tokio_postgres::Client {
        connect(&self.db_url).await
    }

    /// Every Redis key under this test's prefix with its serialized value (`DUMP`), to
    /// show that a request changed nothing in Redis.
    pub async fn redis_snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        use fred::prelude::{Builder, ClientLike, Config, KeysInterface};
        use futures::TryStreamExt;
        let client = Builder::from_config(Config::from_url(&redis_url()).unwrap())
            .build()
            .unwrap();
        client.init().await.expect("Redis accepts connections");
        let pattern = format!("{}*", self.settings.redis_prefix);
        let keys: Vec<fred::types::Key> = if client.is_clustered() {
            client
                .scan_cluster_buffered(pattern, Some(500), None)
                .try_collect()
                .await
        } else {
            client
                .scan_buffered(pattern, Some(500), None)
                .try_collect()
                .await
        }
        .expect("SCAN answers");
        let mut snapshot = BTreeMap::new();
        for key in keys {
            let dump: fred::types::Value = client.dump(&key).await.expect("DUMP answers");
            let name = key.as_str_lossy().into_owned();
            snapshot.insert(name, dump.as_bytes().unwrap_or_default().to_vec());
        }
        let _ = client.quit().await;
        snapshot
    }

    /// A connection to the server's `postgres` database, for statements about this
    /// test's database itself (only ever this test's own database).
    pub async fn admin_pg(&self) -> tokio_postgres::Client {
        connect(&format!("{}/postgres", pg_server())).await
    }

    /// Asks the server to shut down gracefully, without waiting.
    pub fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops the server gracefully and waits for it to finish.
    pub async fn stop(&mut self) {
        self.signal_stop();
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("the server task ends")
                .expect("the server stops cleanly");
        }
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("Postgres accepts connections");
    tokio::spawn(connection);
    client
}

async fn read_answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let bytes = response.bytes().await.expect("the body is read");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!(
                "a JSON body, got {status}: {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    Answer { status, body }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Drop the database from a thread of its own: Drop cannot await.
        let name = self.db_name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(drop_database(&name));
        })
        .join();
    }
}

/// Drops a test database on the test server, if it exists (errors are ignored: this is
/// cleanup).
pub async fn drop_database(name: &str) {
    let admin = format!("{}/postgres", pg_server());
    if let Ok((client, conn)) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await {
        tokio::spawn(conn);
        let _ = client
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await;
    }
}

/// The message ids of a page, in page order.
pub fn page_ids(page: &Value) -> Vec<i64> {
    page["messages"]
        .as_array()
        .expect("a page has messages")
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect()
}

/// Fresh user ids.
pub fn users<const N: usize>() -> [Uuid; N] {
    std::array::from_fn(|_| Uuid::new_v4())
}

/// Every file under `dir` (recursively) whose name ends in `.{ext}`.
pub fn files_under(dir: &std::path::Path, ext: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == ext) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The `hotchan` binary, with no `HOTCHAN_` setting inherited from the test's environment.
pub fn hotchan() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_hotchan"));
    for (key, _) in std::env::vars() {
        if key.starts_with("HOTCHAN_") {
            command.env_remove(key);
        }
    }
    command
}

/// Reads a `hotchan serve` JSON log (`HOTCHAN_LOG_FORMAT=json`) until it serves; the
/// address it listens on.
pub fn wait_for_serving(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    log: &mut String,
) -> String {
    loop {
        let line = lines
            .next()
            .expect("the server logs until it serves")
            .unwrap();
        log.push_str(&line);
        let entry: serde_json::Value = serde_json::from_str(&line).expect("JSON log lines");
        if entry["fields"]["message"] == "serving" {
            break entry["fields"]["listen"].as_str().unwrap().to_owned();
        }
    }
}

/// A server process that is killed when the test ends, however it ends.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
