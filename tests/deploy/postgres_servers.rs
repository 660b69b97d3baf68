//! Private Postgres servers for the deployment tests: one with `ssl=on`, a primary with
//! streaming standbys (`pg_basebackup -R`), and one with `pg_stat_statements`. Each is a
//! cluster of its own (initdb, trust auth) in a folder of its own, on a free port, run as
//! `postgres` when this process is root (Postgres refuses to run as root), and stopped
//! and removed when dropped. Every wait is bounded.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use crate::servers::{free_port, Certs, Scratch};

pub struct Postgres {
    pub port: u16,
    data: PathBuf,
    bin: PathBuf,
    dir: Scratch,
}

fn pg_bindir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .expect("Postgres server binaries under /usr/lib/postgresql")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop().expect("a Postgres version with pg_ctl")
}

fn is_root() -> bool {
    std::env::var("USER").as_deref() == Ok("root")
        || std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
            .unwrap_or(false)
}

async fn as_postgres(bin: &Path, program: &str, args: &[&str]) {
    let program = bin.join(program);
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&program);
        c
    } else {
        Command::new(&program)
    };
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        command.args(args).current_dir("/").output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{program:?} {args:?} within 60 s"))
    .expect("Postgres tools run");
    assert!(
        out.status.success(),
        "{program:?} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A folder the `postgres` user may write in.
fn scratch(what: &str) -> Scratch {
    let dir = Scratch::new(what);
    if is_root() {
        let out = std::process::Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir.0)
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    dir
}

fn append(path: &Path, text: &str) {
    let mut all = std::fs::read_to_string(path).unwrap_or_default();
    all.push('\n');
    all.push_str(text);
    all.push('\n');
    std::fs::write(path, all).unwrap();
}

impl Postgres {
    /// A new cluster with `conf` added to its `postgresql.conf`, started.
    pub async fn start(conf: &str) -> Postgres {
        let pg = Postgres::init().await;
        append(&pg.data.join("postgresql.conf"), conf);
        pg.run().await;
        pg
    }

    /// A new cluster, not started.
    async fn init() -> Postgres {
        let dir = scratch("pg");
        let data = dir.path("data");
        let bin = pg_bindir();
        let data_arg = data.display().to_string();
        as_postgres(
            &bin,
            "initdb",
            &[
                "-D",
                &data_arg,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )
        .await;
        Postgres {
            port: free_port(),
            data,
            bin,
            dir,
        }
    }

    /// Starts a Postgres with TLS on (`certs`' server certificate). TLS goes in the config
    /// file, not on the command line, so that a test can turn it off with ALTER SYSTEM
    /// and a reload.
    pub async fn start_with_tls(certs: &Certs) -> Postgres {
        let pg = Postgres::init().await;
        let (cert, key) = (pg.dir.path("server.pem"), pg.dir.path("server.key"));
        std::fs::copy(&certs.cert, &cert).unwrap();
        std::fs::copy(&certs.key, &key).unwrap();
        if is_root() {
            let out = std::process::Command::new("chown")
                .args(["postgres:postgres"])
                .args([&cert, &key])
                .output()
                .unwrap();
            assert!(out.status.success());
        }
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let conf = format!(
            "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'",
            cert.display(),
            key.display()
        );
        append(&pg.data.join("postgresql.conf"), &conf);
        pg.run().await;
        pg
    }

    /// A streaming standby of `primary` (`pg_basebackup -R`), named `name` as the
    /// primary's `synchronous_standby_names` sees it, started.
    pub async fn standby_of(primary: &Postgres, name: &str) -> Postgres {
        let dir = scratch("pg-standby");
        let data = dir.path("data");
        let data_arg = data.display().to_string();
        let port = primary.port.to_string();
        as_postgres(
            &primary.bin,
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                &data_arg,
                "-R",
                "-X",
                "stream",
                "--no-sync",
            ],
        )
        .await;
        append(
            &data.join("postgresql.auto.conf"),
            &format!(
                "primary_conninfo = 'host=127.0.0.1 port={port} user=postgres application_name={name}'\n\
                 synchronous_standby_names = ''"
            ),
        );
        let pg = Postgres {
            port: free_port(),
            data,
            bin: primary.bin.clone(),
            dir,
        };
        pg.run().await;
        pg
    }

    async fn run(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.0.display(),
        );
        let log = self.dir.path("pg.log").display().to_string();
        let data = self.data.display().to_string();
        as_postgres(
            &self.bin,
            "pg_ctl",
            &[
                "-D", &data, "-o", &options, "-l", &log, "-w", "-t", "30", "start",
            ],
        )
        .await;
    }

    /// Stops it at once, as a crash would (`-m immediate`).
    pub async fn kill(&self) {
        let data = self.data.display().to_string();
        as_postgres(
            &self.bin,
            "pg_ctl",
            &["-D", &data, "-m", "immediate", "-w", "stop"],
        )
        .await;
    }

    /// Promotes a standby to primary, waiting until it is.
    pub async fn promote(&self) {
        let data = self.data.display().to_string();
        as_postgres(
            &self.bin,
            "pg_ctl",
            &["-D", &data, "-w", "-t", "30", "promote"],
        )
        .await;
    }

    pub fn url(&self, query: &str) -> String {
        self.url_of("hotchan", query)
    }

    /// The URL of database `db` on this server.
    pub fn url_of(&self, db: &str, query: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}?{query}", self.port)
    }

    /// A connection to database `db` on this server; a standby may take a moment to
    /// replay the database's creation, so this tries for up to 10 s.
    pub async fn connect(&self, db: &str) -> tokio_postgres::Client {
        let url = format!("postgres://postgres@127.0.0.1:{}/{db}", self.port);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    return client;
                }
                Err(e) if std::time::Instant::now() > deadline => {
                    panic!("connect to {url}: {e:?}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let program = self.bin.join("pg_ctl");
        let data = self.data.display().to_string();
        let mut command = if is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            std::process::Command::new(&program)
        };
        let _ = command
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .current_dir("/")
            .output();
    }
}
