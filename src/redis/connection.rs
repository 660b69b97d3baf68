//! Connecting: the URL forms and TLS, the checks at startup, the link's state (its last
//! error, reconnections), and `WAIT` for failover safety.

use std::time::Duration;

use fred::prelude::{
    Builder, ClientLike, ClusterInterface, Config, EventInterface, ReconnectPolicy, ServerInterface,
};

use super::{Redis, RedisConfigError, RedisError, RedisSettings, Scripts, Subscription};

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

fn builder(settings: &RedisSettings) -> Result<Builder, RedisConfigError> {
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
    let mut builder = Builder::from_config(config);
    let timeout = settings.timeout;
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
    Ok(builder)
}

impl Redis {
    /// Connects, waiting up to [`STARTUP_WAIT`] for the first connection (on a cluster:
    /// for its slot map, so no call meets a missing routing state). Redis that does not
    /// answer yet is no error: connections keep being retried and the cache stays off
    /// until it answers. What is refused: a TLS URL whose handshake fails (a certificate
    /// that does not verify, a plaintext server), and a one-server URL at a cluster node.
    pub async fn connect(settings: RedisSettings) -> Result<Redis, RedisConfigError> {
        let client = builder(&settings)?.build_pool(settings.connections.max(1))?;
        let settings_wait = settings.wait_replicas;
        // The connection tasks run until `quit`; they reconnect by the policy above.
        let link_error = std::sync::Arc::new(std::sync::Mutex::new(None));
        for connection in client.clients() {
            let link_error = link_error.clone();
            connection.on_error(move |(error, server)| {
                let text = match server {
                    Some(server) => format!("{server}: {error}"),
                    None => error.to_string(),
                };
                *link_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
                async { Ok(()) }
            });
        }
        let reconnects = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        for connection in client.clients() {
            let reconnects = reconnects.clone();
            connection.on_reconnect(move |_| {
                reconnects.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                async { Ok(()) }
            });
        }
        let _tasks = client.connect_pool();
        let redis = Redis {
            client,
            settings: std::sync::Arc::new(settings),
            scripts: std::sync::Arc::new(Scripts::new()),
            link_error,
            reconnects,
            wait_replicas: std::sync::Arc::new(std::sync::atomic::AtomicU32::new(
                settings_wait.unwrap_or(0),
            )),
        };
        redis.check_at_startup().await?;
        Ok(redis)
    }

    async fn check_at_startup(&self) -> Result<(), RedisConfigError> {
        let tls = is_tls_url(&self.settings.url);
        let failure = match tokio::time::timeout(STARTUP_WAIT, self.client.wait_for_connect()).await
        {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(RedisError::Command(error).to_string()),
            Err(_) => self
                .link_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .or_else(|| {
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
            self.wait_replicas
                .store(wanted, std::sync::atomic::Ordering::Release);
            tracing::info!(
                wait_replicas = wanted,
                "writes count once this many replicas hold them"
            );
        }
        if !self.client.is_clustered() {
            let info: Option<String> = self
                .bounded(
                    self.client
                        .next()
                        .info(Some(fred::types::InfoKind::Cluster)),
                )
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

    /// A subscription to one pub/sub channel, on a connection of its own.
    pub async fn subscribe(&self, channel: &str) -> Result<Subscription, RedisError> {
        let client = builder(&self.settings)
            .map_err(RedisError::Config)?
            .build_subscriber_client()?;
        Subscription::start(client, channel.to_owned(), self.settings.timeout).await
    }

    /// Whether the first server of the URL accepts a TCP connection.
    async fn tcp_reachable(&self) -> bool {
        let config = self.client.next().client_config();
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
        let config = self.client.next().client_config();
        if matches!(
            config.server,
            fred::types::config::ServerConfig::Sentinel { .. }
        ) {
            return 1;
        }
        if !self.client.is_clustered() {
            return 0;
        }
        let nodes: Result<String, _> = self.bounded(self.client.next().cluster_nodes()).await;
        u32::from(nodes.is_ok_and(|n| n.lines().any(|l| l.contains("slave"))))
    }

    /// How many reconnections fred reported so far (see [`Redis::replicated`]).
    pub(super) fn link_epoch(&self) -> u64 {
        self.reconnects.load(std::sync::atomic::Ordering::Acquire)
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
    pub(super) async fn replicated(
        &self,
        client: &fred::clients::Client,
        slot: u16,
        link: u64,
    ) -> Result<(), RedisError> {
        let wanted = self
            .wait_replicas
            .load(std::sync::atomic::Ordering::Acquire);
        if wanted == 0 {
            return Ok(());
        }
        let options = fred::types::config::Options {
            max_attempts: Some(1),
            fail_fast: true,
            cluster_hash: Some(fred::types::ClusterHash::Custom(slot)),
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

    /// A PING within the call timeout; the error says why not. While no connection is
    /// up, that is what the last connection attempt met (a PING would only time out).
    pub async fn ping(&self) -> Result<(), RedisError> {
        let result = self
            .bounded(self.client.ping::<String>(None))
            .await
            .map(drop);
        match result {
            Err(_) if !self.client.is_connected() => {
                let reason = self
                    .link_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                match reason {
                    Some(reason) => Err(RedisError::Unreachable(reason)),
                    None => result,
                }
            }
            other => other,
        }
    }

    /// Closes the connection.
    pub async fn close(&self) {
        let _ = tokio::time::timeout(self.settings.timeout, self.client.quit()).await;
    }
}
