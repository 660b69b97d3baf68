//! Connecting: the URL forms and TLS, the checks at startup, the link's state (its last
//! error, reconnections), and `WAIT` for failover safety.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fred::clients::Pool;
use fred::prelude::{
    Builder, ClientLike, ClusterInterface, Config, EventInterface, ReconnectPolicy, ServerConfig,
    ServerInterface,
};

use super::nodes::{Node, Nodes};
use super::{Links, Redis, RedisConfigError, RedisError, RedisSettings, Scripts, Subscription};

/// Reconnect back-off: from 100 ms doubling to 2 s, forever (0 = no attempt limit).
const RECONNECT_MIN_MS: u32 = 100;
const RECONNECT_MAX_MS: u32 = 2_000;
/// How long opening one connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A connection that answers nothing for this long is closed and reopened (a black hole).
const UNRESPONSIVE_AFTER: Duration = Duration::from_secs(1);
/// How long startup waits for the first connection to Redis.
const STARTUP_WAIT: Duration = Duration::from_secs(3);

/// Whether the URL asks for TLS (`rediss://`, `rediss-cluster://`, `rediss-sentinel://`).
fn is_tls_url(url: &str) -> bool {
    let scheme = url.split(':').next().unwrap_or_default();
    scheme.starts_with("rediss") || scheme.starts_with("valkeys")
}

/// The URL's config, with TLS as the settings ask (never a plaintext fallback).
fn config(settings: &RedisSettings) -> Result<Config, RedisConfigError> {
    let mut config = Config::from_url(&settings.url)?;
    if is_tls_url(&settings.url) {
        // Always our own rustls config: the CA setting, and never a plaintext fallback.
        let tls = crate::tls::redis_client_config(settings.ca_file.as_deref())
            .map_err(|e| RedisConfigError(e.to_string()))?;
        config.tls = Some(fred::prelude::TlsConnector::from(tls).into());
    } else if settings.ca_file.is_some() {
        return Err(RedisConfigError(
            "--redis-ca-file is set but the URL is not a TLS URL (use rediss://, rediss-cluster:// or rediss-sentinel://)".into(),
        ));
    }
    Ok(config)
}

/// A builder of clients for `config`, with the timeouts and reconnection policy.
fn builder(config: Config, timeout: Duration) -> Builder {
    let mut builder = Builder::from_config(config);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = CONNECT_TIMEOUT;
            c.internal_command_timeout = timeout.max(Duration::from_millis(500));
            c.unresponsive.max_timeout = Some(UNRESPONSIVE_AFTER);
            c.unresponsive.interval = Duration::from_millis(250);
        })
        .with_performance_config(|p| {
            p.default_command_timeout = timeout;
            // Pub/sub messages wait here for the forwarder; past this the reader lags.
            p.broadcast_channel_capacity = 4096;
        })
        .set_policy(ReconnectPolicy::new_exponential(
            0,
            RECONNECT_MIN_MS,
            RECONNECT_MAX_MS,
            2,
        ));
    builder
}

impl Links {
    /// Keeps what `pool`'s connections report: errors (by server) and reconnections.
    pub(super) fn watch(self: &Arc<Self>, pool: &Pool) {
        for connection in pool.clients() {
            let links = self.clone();
            connection.on_error(move |(error, server)| {
                let node = server.map_or_else(String::new, |s| format!("{}:{}", s.host, s.port));
                let text = match node.is_empty() {
                    true => error.to_string(),
                    false => format!("{node}: {error}"),
                };
                links
                    .errors
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(node, text);
                async { Ok(()) }
            });
            let links = self.clone();
            connection.on_reconnect(move |server| {
                links.reconnects.fetch_add(1, Ordering::AcqRel);
                let node = format!("{}:{}", server.host, server.port);
                links
                    .errors
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&node);
                async { Ok(()) }
            });
        }
    }

    /// What the last failed connection attempt met: at `node`, or at any node.
    fn error(&self, node: Option<&str>) -> Option<String> {
        let errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        match node {
            Some(node) => errors.get(node).or_else(|| errors.get("")).cloned(),
            None => errors.values().next_back().cloned(),
        }
    }
}

impl Redis {
    /// Connects, waiting up to [`STARTUP_WAIT`] for the first connection (on a cluster:
    /// for its slot map, so no call meets a missing routing state). Redis that does not
    /// answer yet is no error: connections keep being retried and the cache stays off
    /// until it answers. What is refused: a TLS URL whose handshake fails (a certificate
    /// that does not verify, a plaintext server), and a one-server URL at a cluster node.
    pub async fn connect(settings: RedisSettings) -> Result<Redis, RedisConfigError> {
        let config = config(&settings)?;
        let (timeout, connections) = (settings.timeout, settings.connections.max(1));
        let make =
            Box::new(move |config: Config| Ok(builder(config, timeout).build_pool(connections)?));
        let links = Arc::new(Links::default());
        // The connection tasks run until `quit`; they reconnect by the policy above.
        let nodes = Nodes::connect(config, make, links.clone())?;
        let settings_wait = settings.wait_replicas;
        let redis = Redis {
            nodes: Arc::new(nodes),
            settings: Arc::new(settings),
            scripts: Arc::new(Scripts::new()),
            links,
            wait_replicas: Arc::new(AtomicU32::new(settings_wait.unwrap_or(0))),
        };
        redis.check_at_startup().await?;
        Ok(redis)
    }

    /// Every node's first connection (and on a cluster, first the slot map).
    async fn wait_for_connect(&self) -> Result<(), RedisError> {
        self.nodes.wait_for_map(STARTUP_WAIT).await?;
        let connects = self.nodes.all().into_iter().map(|node| async move {
            node.pool.wait_for_connect().await.map_err(RedisError::from)
        });
        futures::future::try_join_all(connects).await.map(drop)
    }

    async fn check_at_startup(&self) -> Result<(), RedisConfigError> {
        let tls = is_tls_url(&self.settings.url);
        let failure = match tokio::time::timeout(STARTUP_WAIT, self.wait_for_connect()).await {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => self.links.error(None).or_else(|| {
                Some(format!(
                    "no connection within {} ms",
                    STARTUP_WAIT.as_millis()
                ))
            }),
        };
        if let Some(reason) = failure {
            // A TLS URL whose server takes TCP connections but no TLS connection: a
            // certificate that does not verify, or a plaintext server (whose reply to a
            // ClientHello may be silence). Never fall back; refuse to start.
            if tls && self.tcp_reachable().await {
                return Err(RedisConfigError(format!(
                    "Redis takes TCP connections but the TLS handshake failed (check --redis-url and --redis-ca-file / HOTCHAN_REDIS_CA_FILE): {reason}"
                )));
            }
            // Credentials Redis refused never start working by themselves.
            if reason.contains("WRONGPASS") || reason.contains("NOAUTH") {
                return Err(RedisConfigError(format!(
                    "Redis refused the user name or password of --redis-url: {reason}"
                )));
            }
            tracing::warn!(error = %reason, "Redis does not answer yet: serving from Postgres until it does");
            return Ok(());
        }
        self.check_permissions().await?;
        if self.settings.wait_replicas.is_none() {
            let wanted = self.replicas_to_wait_for().await;
            self.wait_replicas.store(wanted, Ordering::Release);
            tracing::info!(
                wait_replicas = wanted,
                "writes count once this many replicas hold them"
            );
        }
        if !self.nodes.is_cluster() {
            let node = self.nodes.any(None);
            let info: Option<String> = self
                .bounded(node.client().info(Some(fred::types::InfoKind::Cluster)))
                .await
                .ok();
            if info.is_some_and(|i| i.contains("cluster_enabled:1")) {
                return Err(RedisConfigError(
                    "this Redis is a node of a Redis Cluster, and a redis:// URL would meet MOVED on most keys: use redis-cluster://host:port (rediss-cluster:// for TLS)".into(),
                ));
            }
        }
        Ok(())
    }

    /// A subscription to one pub/sub channel, on a connection of its own. On a cluster it
    /// is made at a node that is connected (`PUBLISH` reaches every node), and made again
    /// at another node when that one fails.
    pub async fn subscribe(&self, channel: &str) -> Result<Subscription, RedisError> {
        let (redis, settings) = (self.clone(), self.settings.clone());
        let make = move |avoid: Option<&str>| {
            let mut config = config(&settings).map_err(RedisError::Config)?;
            let mut at = None;
            if redis.nodes.is_cluster() {
                let node = redis.nodes.any(avoid);
                let server = node.client().client_config().server.hosts();
                config.server = ServerConfig::Centralized {
                    server: server.into_iter().next().ok_or(RedisError::Protocol)?,
                };
                at = Some(node.name.to_string());
            }
            let client = builder(config, settings.timeout).build_subscriber_client()?;
            Ok((client, at))
        };
        Subscription::start(Box::new(make), channel.to_owned(), self.settings.timeout).await
    }

    /// Whether the first server of the URL accepts a TCP connection.
    async fn tcp_reachable(&self) -> bool {
        let node = self.nodes.any(None);
        let config = node.client().client_config();
        let Some(server) = config.server.hosts().into_iter().next() else {
            return false;
        };
        let connect = tokio::net::TcpStream::connect((server.host.to_string(), server.port));
        matches!(
            tokio::time::timeout(CONNECT_TIMEOUT, connect).await,
            Ok(Ok(_))
        )
    }

    /// `--redis-wait-replicas auto`: 1 behind Sentinel (a failover there promotes a
    /// replica), 1 on a cluster whose nodes include replicas, else 0 (nothing promotes a
    /// replica, so nothing can lose a write that way).
    async fn replicas_to_wait_for(&self) -> u32 {
        let Ok(config) = config(&self.settings) else {
            return 0;
        };
        if matches!(config.server, ServerConfig::Sentinel { .. }) {
            return 1;
        }
        if !self.nodes.is_cluster() {
            return 0;
        }
        let node = self.nodes.any(None);
        let nodes: Result<String, _> = self.bounded(node.client().cluster_nodes()).await;
        u32::from(nodes.is_ok_and(|n| n.lines().any(|l| l.contains("slave"))))
    }

    /// How many reconnections fred reported so far (see [`Redis::replicated`]).
    pub(super) fn link_epoch(&self) -> u64 {
        self.links.reconnects.load(Ordering::Acquire)
    }

    /// Failover safety: `WAIT` until `--redis-wait-replicas` replicas hold this
    /// connection's writes, at most the call timeout. Replication is asynchronous, so a
    /// replica promoted by Sentinel or Cluster may lack the newest fence bumps; a fill
    /// read before such a write could then be installed over it. A write-through that is
    /// not confirmed is a failed one: the cache marks the channel dirty and announces it
    /// (the outage path), so no instance serves it from Redis until it is dropped again.
    ///
    /// `WAIT` is tried once (never replayed on a new connection, where it would vouch for
    /// nothing), and a reconnection between the write and the `WAIT` fails it too.
    ///
    /// On a cluster, a primary that has fewer replicas than that (its own failed, or it
    /// was just promoted) waits for those it has: no other node could take over from it
    /// holding less than it does.
    pub(super) async fn replicated(
        &self,
        node: &Node,
        client: &fred::clients::Client,
        link: u64,
    ) -> Result<(), RedisError> {
        let wanted = self
            .wait_replicas
            .load(Ordering::Acquire)
            .min(node.replicas());
        if wanted == 0 {
            return Ok(());
        }
        let options = fred::types::config::Options {
            max_attempts: Some(1),
            fail_fast: true,
            ..Default::default()
        };
        let timeout_ms = self.settings.timeout.as_millis() as i64;
        let acked: i64 = self
            .bounded(
                client
                    .with_options(&options)
                    .wait(i64::from(wanted), timeout_ms),
            )
            .await?;
        if acked < i64::from(wanted) || self.link_epoch() != link {
            return Err(RedisError::NotReplicated { wanted, acked });
        }
        Ok(())
    }

    /// True when Redis answers a PING within the call timeout.
    pub async fn is_up(&self) -> bool {
        self.ping().await.is_ok()
    }

    /// A PING of every node within the call timeout; the error names each node that
    /// did not answer, and why.
    pub async fn ping(&self) -> Result<(), RedisError> {
        let pings = self.nodes.all().into_iter().map(|node| async move {
            let result = self.ping_at(&node).await;
            (node, result)
        });
        let failed: Vec<String> = futures::future::join_all(pings)
            .await
            .into_iter()
            .filter_map(|(node, result)| {
                let error = result.err()?;
                Some(match self.nodes.is_cluster() {
                    true => format!("{}: {error}", node.name),
                    false => error.to_string(),
                })
            })
            .collect();
        match failed.len() {
            0 => Ok(()),
            1 if !self.nodes.is_cluster() => Err(RedisError::Unreachable(failed.join(""))),
            _ => Err(RedisError::Unreachable(failed.join("; "))),
        }
    }

    /// A PING of the node named `name` (on a cluster, a primary of the slot map).
    pub async fn ping_node(&self, name: &str) -> Result<(), RedisError> {
        match self.nodes.all().into_iter().find(|n| &*n.name == name) {
            Some(node) => self.ping_at(&node).await,
            None => Err(RedisError::Unreachable(format!(
                "{name} is no longer a primary of the cluster"
            ))),
        }
    }

    /// A PING within the call timeout. While no connection is up, the error is what the
    /// last connection attempt met (a PING would only time out).
    async fn ping_at(&self, node: &Node) -> Result<(), RedisError> {
        let result = self
            .bounded(node.client().ping::<String>(None))
            .await
            .map(drop);
        match result {
            Err(_) if !node.is_connected() => match self.links.error(Some(&node.name)) {
                Some(reason) => Err(RedisError::Unreachable(reason)),
                None => result,
            },
            other => other,
        }
    }

    /// Closes every connection.
    pub async fn close(&self) {
        let _ = tokio::time::timeout(self.settings.timeout, self.nodes.quit()).await;
    }
}
