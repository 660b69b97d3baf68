//! The `hotchan` binary: settings errors, migrate, SIGTERM, and no secrets in logs.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{hotchan, pg_server, redis_url, wait_for_serving, TEST_DB_PREFIX};

#[test]
fn a_bad_setting_stops_startup_naming_it() {
    let flag = hotchan()
        .args(["serve", "--pg-pool-size", "0"])
        .output()
        .unwrap();
    assert!(!flag.status.success());
    assert!(String::from_utf8_lossy(&flag.stderr).contains("--pg-pool-size"));

    let env = hotchan()
        .arg("serve")
        .env("HOTCHAN_CACHE", "sometimes")
        .output()
        .unwrap();
    assert!(!env.status.success());
    assert!(String::from_utf8_lossy(&env.stderr).contains("--cache"));

    let url = hotchan()
        .arg("migrate")
        .env("HOTCHAN_DATABASE_URL", "mysql://x")
        .output()
        .unwrap();
    assert!(!url.status.success());
    assert!(String::from_utf8_lossy(&url.stderr).contains("--database-url"));
}

/// Drops the named database when the test ends, however it ends.
pub(crate) struct DropDatabase(pub String);

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                &format!("{}/postgres", pg_server()),
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0),
            ])
            .output();
    }
}

#[test]
fn serve_migrates_answers_and_exits_cleanly_on_sigterm_without_logging_secrets() {
    let db = format!("{TEST_DB_PREFIX}{}", uuid::Uuid::new_v4().simple());
    let _cleanup = DropDatabase(db.clone());
    let server = pg_server().replace("postgres://", "postgres://root:pg-password-1@");
    let mut child = hotchan()
        .arg("serve")
        .env("HOTCHAN_DATABASE_URL", format!("{server}/{db}"))
        .env("HOTCHAN_REDIS_URL", redis_url())
        .env("HOTCHAN_LISTEN", "127.0.0.1:0")
        .env("HOTCHAN_TOKEN", "token-that-must-not-leak")
        .env("HOTCHAN_LOG_FORMAT", "json")
        .env("HOTCHAN_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let addr = wait_for_serving(&mut lines, &mut log);

    let health = http::blocking_get(&format!("http://{addr}/healthz"));
    assert_eq!(health, 200);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "hotchan did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };

    assert!(exit.success(), "{exit:?}");
    for line in lines {
        log.push_str(&line.unwrap());
    }
    assert!(log.contains("stopped"), "{log}");
    assert!(
        !log.contains("token-that-must-not-leak") && !log.contains("pg-password-1"),
        "{log}"
    );
}

#[test]
fn migrate_converts_messages_into_partitions_once_and_refuses_a_bad_count() {
    let db = format!("{TEST_DB_PREFIX}{}", uuid::Uuid::new_v4().simple());
    let _cleanup = DropDatabase(db.clone());
    let url = format!("{}/{db}", pg_server());
    let migrate = |args: &[&str]| {
        hotchan()
            .arg("migrate")
            .args(args)
            .env("HOTCHAN_DATABASE_URL", &url)
            .env("HOTCHAN_MESSAGE_PARTITIONS", "0")
            .output()
            .unwrap()
    };
    let first = migrate(&[]);
    assert!(first.status.success(), "a plain table first");
    // Text logs into a pipe carry no colour codes (only a terminal gets them).
    // Logs go to stderr; stdout stays free of them.
    let log = String::from_utf8_lossy(&first.stderr);
    assert!(log.contains("applied migration"), "{log}");
    assert!(
        first.stdout.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&first.stdout)
    );
    assert!(
        !log.contains('\u{1b}'),
        "ANSI codes in a piped log: {log:?}"
    );
    let psql = |sql: &str| {
        let out = Command::new("psql")
            .args([url.as_str(), "-tAc", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    psql(
        "INSERT INTO channels (id, type, last_seq) VALUES ('c0000000-0000-4000-8000-0000000000aa', 'group', 3);
         INSERT INTO messages (channel_id, sender_id, content, seq)
         SELECT 'c0000000-0000-4000-8000-0000000000aa', gen_random_uuid(), 'm' || s, s
         FROM generate_series(1, 3) s",
    );

    let converted = migrate(&["--partition-messages", "4"]);
    let log = String::from_utf8_lossy(&converted.stdout).into_owned()
        + &String::from_utf8_lossy(&converted.stderr);
    assert!(converted.status.success(), "{log}");
    assert!(
        log.contains("copying messages") && log.contains("100%"),
        "progress: {log}"
    );
    assert!(log.contains("hash-partitioned"), "{log}");
    assert_eq!(
        psql("SELECT relkind FROM pg_class WHERE relname = 'messages'"),
        "p"
    );
    assert_eq!(psql("SELECT count(*) FROM messages"), "3");

    let again = migrate(&["--partition-messages", "4"]);
    assert!(!again.status.success());
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(said.contains("already hash-partitioned into 4"), "{said}");

    let zero = migrate(&["--partition-messages", "0"]);
    assert!(!zero.status.success());
    assert!(String::from_utf8_lossy(&zero.stderr).contains("--partition-messages"));
    assert_eq!(psql("SELECT count(*) FROM messages"), "3");
}

/// Reads JSON log lines until the "serving" line; returns the address it names.
/// A tiny HTTP GET without a client crate's blocking feature: status code only.
mod http {
    use std::io::{Read, Write};

    pub fn blocking_get(url: &str) -> u16 {
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_once('/').unwrap();
        let mut stream = std::net::TcpStream::connect(host).unwrap();
        write!(
            stream,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer[9..12].parse().unwrap()
    }
}
