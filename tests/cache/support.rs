//! Private Redis servers and a TCP proxy, for tests that restart Redis, set `maxmemory`
//! or cut the network: they never touch the shared server's global state.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A free TCP port on loopback (bound, then released), never the same one twice in this
/// process: tests that run at once each start servers on ports of their own, and a port
/// handed out but not yet bound must not go to a second server.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if GIVEN.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
}

/// A `redis-server` of the test's own, without persistence; stopped when dropped.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
    args: Vec<String>,
}

impl PrivateRedis {
    pub async fn start(extra: &[&str]) -> PrivateRedis {
        PrivateRedis::start_with(free_port(), None, extra).await
    }

    /// A server on `port`, its files in `dir`, with `extra` arguments. `extra` may start
    /// with a config file (a Sentinel's) and may set its own `--port` (a TLS-only server:
    /// `--port 0 --tls-port <port>`); `port` is where it is awaited.
    pub async fn start_with(
        port: u16,
        dir: Option<&std::path::Path>,
        extra: &[&str],
    ) -> PrivateRedis {
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        args.extend(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"].map(String::from));
        if let Some(dir) = dir {
            args.extend(["--dir".to_owned(), dir.display().to_string()]);
        }
        if !extra.contains(&"--port") {
            args.extend(["--port".to_owned(), port.to_string()]);
        }
        let mut redis = PrivateRedis {
            port,
            child: None,
            args,
        };
        redis.spawn().await;
        redis
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        self.child = Some(child);
        for _ in 0..1000 {
            if TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                // Answered by our server, not by another process on a port it took first.
                let exited = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                assert!(
                    exited.is_none(),
                    "the private redis-server on port {} exited ({exited:?}): the port was taken",
                    self.port
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "the private redis-server did not start on port {}",
            self.port
        );
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (losing everything) and starts an empty one on the same port.
    pub async fn restart_empty(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// SIGKILL: no shutdown, no goodbye to clients.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs one command with redis-cli against this server.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Bytes flow both ways.
    Pass,
    /// Every connection is closed; new ones are closed at once.
    Refuse,
    /// Connections stay open but nothing reaches the other side: a black hole.
    Blackhole,
    /// Bytes flow both ways, and each chunk of the server's answers is held back this
    /// long (set it before connections open: a change closes them).
    Slow(Duration),
}

/// A TCP proxy in front of a server, whose link a test can cut and heal.
pub struct Proxy {
    pub port: u16,
    link: Arc<watch::Sender<Link>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (link, _) = watch::channel(Link::Pass);
        let link = Arc::new(link);
        let task = tokio::spawn({
            let link = link.clone();
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    tokio::spawn(serve(client, target_port, link.subscribe()));
                }
            }
        });
        Proxy { port, link, task }
    }

    /// A proxy in front of the shared test Redis; `None` (and a line saying the test is
    /// skipped) when that is not one server: a cluster's clients follow the addresses the
    /// nodes announce, past any proxy. The cluster's faults have tests of their own
    /// (`tests/deploy`).
    pub async fn to_shared_redis() -> Option<Proxy> {
        let shared = crate::helpers::redis_url();
        let Some(rest) = shared.strip_prefix("redis://") else {
            eprintln!("skipped: this test cuts one Redis server behind a proxy, and the test Redis is {shared}");
            return None;
        };
        let port: u16 = rest.rsplit(':').next().unwrap().parse().unwrap();
        Some(Proxy::start(port).await)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    #[allow(dead_code)] // Used by tests/deploy, which includes this file.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn set(&self, link: Link) {
        self.link.send_replace(link);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.link.send_replace(Link::Refuse);
    }
}

async fn serve(mut client: TcpStream, target_port: u16, mut link: watch::Receiver<Link>) {
    let mode = *link.borrow_and_update();
    match mode {
        Link::Refuse => return,
        Link::Blackhole => return swallow(client, link).await,
        Link::Pass | Link::Slow(_) => {}
    }
    let delay = match mode {
        Link::Slow(delay) => Some(delay),
        _ => None,
    };
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", target_port)).await else {
        return;
    };
    let blackholed = {
        let (mut cr, mut cw) = client.split();
        let (mut sr, mut sw) = server.split();
        tokio::select! {
            _ = tokio::io::copy(&mut cr, &mut sw) => false,
            _ = copy_held_back(&mut sr, &mut cw, delay) => false,
            changed = link.wait_for(|l| *l != mode) => {
                changed.map(|l| *l == Link::Blackhole).unwrap_or(false)
            }
        }
    };
    drop(server);
    if blackholed {
        swallow(client, link).await;
    }
}

/// Copies until the end of `from`, each chunk arriving `delay` after it was read: a
/// link with latency, not a narrower one (chunks in flight do not wait for each other).
async fn copy_held_back(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    delay: Option<Duration>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let read = async move {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let due = tokio::time::Instant::now() + delay.unwrap_or_default();
            if tx.send((due, chunk[..n].to_vec())).is_err() {
                return;
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(read, write);
}

/// Reads and discards whatever the client sends, answering nothing, until the link
/// changes (then the connection closes, as a healed network would have reset it).
async fn swallow(mut client: TcpStream, mut link: watch::Receiver<Link>) {
    let mut sink = [0u8; 4096];
    loop {
        tokio::select! {
            read = client.read(&mut sink) => if matches!(read, Ok(0) | Err(_)) { return },
            _ = link.wait_for(|l| *l != Link::Blackhole) => return,
        }
    }
}

/// The instance's `/v1/admin/cache` view.
pub async fn cache_stats(app: &crate::helpers::TestApp) -> serde_json::Value {
    app.get("/v1/admin/cache").await.expect(200)
}

/// Polls `check` until it holds, for at most `limit`; returns how long it took.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until L1 serves (the instance heard its own heartbeat).
pub async fn l1_serving(app: &crate::helpers::TestApp) {
    eventually(Duration::from_secs(20), "L1 serving", || async {
        cache_stats(app).await["l1"]["bypassed"] == false
    })
    .await;
}

/// The contract's promise 3: other instances reflect a write within 1 second.
pub const PROMISE: Duration = Duration::from_secs(1);

/// Reads `path` on `app` until `check` holds, failing after [`PROMISE`].
pub async fn within_promise(
    app: &crate::helpers::TestApp,
    path: &str,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) {
    eventually(PROMISE, what, || async {
        check(&app.get(path).await.expect(200))
    })
    .await;
}

/// Reads `path` on `app` until a read is answered by the tiers (L1 or Redis) without
/// Postgres, so that a later check shows the tiers were told of a write.
pub async fn cached(app: &crate::helpers::TestApp, path: &str) {
    eventually(Duration::from_secs(10), "served by the tiers", || async {
        let before = cache_stats(app).await["postgres_reads"].clone();
        app.get(path).await.expect(200);
        cache_stats(app).await["postgres_reads"] == before
    })
    .await;
}

/// Reads `path` until the tiers (L1 or Redis) answer it: a miss is answered by Postgres
/// and fills run in the background, after the second miss by default. Fails after 10 s.
pub async fn until_cached(app: &crate::helpers::TestApp, path: &str) -> serde_json::Value {
    let hits = |s: &serde_json::Value| {
        s["l1"]["hits"].as_u64().unwrap() + s["redis"]["hits"].as_u64().unwrap()
    };
    let started = std::time::Instant::now();
    loop {
        let before = hits(&cache_stats(app).await);
        let body = app.get(path).await.expect(200);
        if hits(&cache_stats(app).await) > before {
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{path} was not cached within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A test hook ([`hotchan::cache::Hooks`]) that holds its first call until the test lets
/// it go: the hook, a receiver told when the call is held, and the sender that lets it go.
pub fn hold_first_call() -> (
    hotchan::cache::Hook,
    tokio::sync::oneshot::Receiver<()>,
    tokio::sync::oneshot::Sender<()>,
) {
    use futures::FutureExt;
    let (reached_tx, reached_rx) = tokio::sync::oneshot::channel::<()>();
    let (resume_tx, resume_rx) = tokio::sync::oneshot::channel::<()>();
    let gate = Arc::new(tokio::sync::Mutex::new(Some((reached_tx, resume_rx))));
    let hook: hotchan::cache::Hook = Arc::new(move |_channel| {
        let gate = gate.clone();
        async move {
            if let Some((reached, resume)) = gate.lock().await.take() {
                reached.send(()).unwrap();
                resume.await.unwrap();
            }
        }
        .boxed()
    });
    (hook, reached_rx, resume_tx)
}
