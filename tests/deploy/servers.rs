//! Private servers for the deployment tests: redis-server processes (one server,
//! Sentinel, TLS; the cluster is in [`crate::redis_cluster`], Postgres in
//! [`crate::postgres_servers`]), and certificates made with openssl.
//! Each lives in a folder of its own under the temp dir, on free ports, and is killed
//! when dropped. Every wait is bounded.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::process::Command;

pub use crate::support::{free_port, PrivateRedis};

/// Builds an application that must refuse to start; returns its error, whole. Startup
/// migrates before it meets Redis, so the test database is dropped afterwards.
pub async fn refusal(settings: hotchan::config::Settings) -> String {
    let what = format!("{:?} {:?}", settings.redis_url, settings.redis_ca_file);
    let db = settings.db.database_url.0.get_dbname().map(str::to_owned);
    let error = hotchan::app::Application::build(settings)
        .await
        .err()
        .unwrap_or_else(|| panic!("startup is refused: {what}"));
    if let Some(db) = db {
        crate::helpers::drop_database(&db).await;
    }
    format!("{error:#}")
}

/// A folder of the test's own, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(what: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("hotchan-{what}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits (at most `limit`) until `check` holds; panics naming `what` otherwise.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `redis-cli -p port args…`, its output.
pub async fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .await
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CA and a server certificate for 127.0.0.1 and localhost, made with openssl.
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Another CA, which signed nothing here.
    pub wrong_ca: PathBuf,
    _dir: Scratch,
}

async fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .await
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Certs {
    pub async fn make() -> Certs {
        let dir = Scratch::new("certs");
        let d = &dir.0;
        for ca in ["ca", "wrong-ca"] {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=hotchan test {ca}"),
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.pem"),
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            )
            .await;
        }
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        )
        .await;
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "server.ext",
                "-out",
                "server.pem",
            ],
        )
        .await;
        Certs {
            ca: d.join("ca.pem"),
            cert: d.join("server.pem"),
            key: d.join("server.key"),
            wrong_ca: d.join("wrong-ca.pem"),
            _dir: dir,
        }
    }
}
