//! The only module that imports `fred`: the connection, the channel keys, the Lua scripts
//! (`lua/`) as typed calls, the codec of stored values, and pub/sub.
//!
//! Every call is bounded by the configured timeout here, with `tokio::time::timeout`:
//! fred's own per-command timeouts do not bound `EVALSHA`. A dropped call is not
//! cancelled in Redis and fred replays in-flight commands after a reconnect, so every
//! script is idempotent and fenced (see `lua/README.md`).

pub mod codec;
pub use feeds::{FeedRead, FeedState};
pub use history::HistoryRead;
mod feeds;
mod history;
mod pubsub;

use std::time::Duration;

use fred::prelude::{
    Builder, ClientLike, ClusterInterface, Config, EventInterface, KeysInterface, PubsubInterface,
    ReconnectPolicy, ServerInterface,
};
use fred::types::scripts::Script;
use fred::types::Value;
use futures::TryStreamExt;

use crate::domain::window::{Members, Window};
use crate::domain::{ChannelId, Member, Message, UserId};

pub use pubsub::{Subscription, SubscriptionEvent, EVENT_BUFFER};

/// Reconnect back-off: from 100 ms doubling to 2 s, forever (0 = no attempt limit).
const RECONNECT_MIN_MS: u32 = 100;
const RECONNECT_MAX_MS: u32 = 2_000;
/// How long opening one connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A connection that answers nothing for this long is closed and reopened (a black hole).
const UNRESPONSIVE_AFTER: Duration = Duration::from_secs(1);
/// How long startup waits for the first connection to Redis.
const STARTUP_WAIT: Duration = Duration::from_secs(3);
/// The member-hash field that marks a loaded set, even an empty one.
const LOADED_MARKER: &str = "_";

/// A failed Redis call. Both kinds count against the breaker.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("the Redis call timed out")]
    Timeout,
    /// No connection is up; what the last attempt met.
    #[error("Redis is not connected: {0}")]
    Unreachable(String),
    /// fred's kind and the server's own message (`MOVED …`, `CROSSSLOT …`, `NOAUTH …`).
    #[error("Redis: {0}")]
    Command(#[from] fred::error::Error),
    /// A write reached the primary but not the replicas `WAIT` asked for.
    #[error("a write reached {acked} of the {wanted} replicas it must reach (WAIT)")]
    NotReplicated { wanted: u32, acked: i64 },
    #[error("Redis answered something this build does not understand")]
    Protocol,
    #[error(transparent)]
    Config(#[from] RedisConfigError),
}

/// Redis could not be set up (a bad URL); being unreachable is not an error here.
#[derive(Debug, thiserror::Error)]
#[error("bad Redis configuration (--redis-url / HOTCHAN_REDIS_URL): {0}")]
pub struct RedisConfigError(String);

impl From<fred::error::Error> for RedisConfigError {
    fn from(e: fred::error::Error) -> Self {
        RedisConfigError(e.details().to_owned())
    }
}

/// Timeouts and lifetimes of the Redis tier.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    /// The CA bundle a TLS URL is verified against (`None`: the system's roots).
    pub ca_file: Option<std::path::PathBuf>,
    pub prefix: String,
    /// Bound of every call.
    pub timeout: Duration,
    /// Keys of a channel expire this long after its last fill or write.
    pub ttl: Duration,
    /// Connections to Redis, used in turn.
    pub connections: usize,
    /// Replicas every write must reach before it counts (`WAIT`); `None`: 1 behind
    /// Sentinel and on a cluster with replicas, else 0.
    pub wait_replicas: Option<u32>,
}

struct Scripts {
    read_window: Script,
    fill_window: Script,
    append: Script,
    rewrite: Script,
    drop_channel: Script,
    read_members: Script,
    fill_members: Script,
    drop_members: Script,
    mark_read: Script,
    read_history: Script,
    fill_history: Script,
    read_feed: Script,
    fill_feed: Script,
    feed_deliver: Script,
    feed_seen: Script,
}

impl Scripts {
    fn new() -> Scripts {
        let lua = |src: &'static str| Script::from_lua(src);
        Scripts {
            read_window: lua(include_str!("../../lua/read_window.lua")),
            fill_window: lua(include_str!("../../lua/fill_window.lua")),
            append: lua(include_str!("../../lua/append.lua")),
            rewrite: lua(include_str!("../../lua/rewrite.lua")),
            drop_channel: lua(include_str!("../../lua/drop_channel.lua")),
            read_members: lua(include_str!("../../lua/read_members.lua")),
            fill_members: lua(include_str!("../../lua/fill_members.lua")),
            drop_members: lua(include_str!("../../lua/drop_members.lua")),
            mark_read: lua(include_str!("../../lua/mark_read.lua")),
            read_history: lua(include_str!("../../lua/read_history.lua")),
            fill_history: lua(include_str!("../../lua/fill_history.lua")),
            read_feed: lua(include_str!("../../lua/read_feed.lua")),
            fill_feed: lua(include_str!("../../lua/fill_feed.lua")),
            feed_deliver: lua(include_str!("../../lua/feed_deliver.lua")),
            feed_seen: lua(include_str!("../../lua/feed_seen.lua")),
        }
    }

    fn all(&self) -> [&Script; 15] {
        [
            &self.read_window,
            &self.fill_window,
            &self.append,
            &self.rewrite,
            &self.drop_channel,
            &self.read_members,
            &self.fill_members,
            &self.drop_members,
            &self.mark_read,
            &self.read_history,
            &self.fill_history,
            &self.read_feed,
            &self.fill_feed,
            &self.feed_deliver,
            &self.feed_seen,
        ]
    }
}

/// The keys of one channel; they share the hash tag `{<channel id>}`.
pub struct ChannelKeys {
    pub msgs: String,
    pub meta: String,
    pub ver: String,
    pub members: String,
    pub mver: String,
    pub hist: String,
    pub hver: String,
}

/// What a window read found.
pub enum WindowRead {
    Hit(Window),
    /// Not cached; a fill must present this version.
    Miss(String),
}

/// What a member read found.
pub enum MembersRead {
    Hit(Members),
    /// Not cached; a fill must present this version.
    Miss(String),
}

/// A Redis connection that reconnects by itself, with the hot-channel scripts.
#[derive(Clone)]
pub struct Redis {
    /// Connections used in turn (`--redis-connections`).
    client: fred::clients::Pool,
    settings: std::sync::Arc<RedisSettings>,
    scripts: std::sync::Arc<Scripts>,
    /// What the last failed connection attempt met (kept by fred's error events).
    link_error: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    /// Reconnections fred reported (each connection's, summed).
    reconnects: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Replicas a write must reach ([`Redis::replicated`]); settled at startup.
    wait_replicas: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

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
            tracing::warn!(error = %reason, "Redis does not answer yet: serving from Postgres until it does");
            return Ok(());
        }
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

    pub fn prefix(&self) -> &str {
        &self.settings.prefix
    }

    /// The pub/sub channel of cache invalidations.
    pub fn invalidation_channel(&self) -> String {
        format!("{}:invalidate", self.settings.prefix)
    }

    pub fn keys(&self, channel: ChannelId) -> ChannelKeys {
        let p = &self.settings.prefix;
        ChannelKeys {
            msgs: format!("{p}:{{{channel}}}:msgs"),
            meta: format!("{p}:{{{channel}}}:meta"),
            ver: format!("{p}:{{{channel}}}:ver"),
            members: format!("{p}:{{{channel}}}:members"),
            mver: format!("{p}:{{{channel}}}:mver"),
            hist: format!("{p}:{{{channel}}}:hist"),
            hver: format!("{p}:{{{channel}}}:hver"),
        }
    }

    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, fred::error::Error>>,
    ) -> Result<T, RedisError> {
        match tokio::time::timeout(self.settings.timeout, call).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(RedisError::Timeout),
        }
    }

    async fn eval(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<Value, RedisError> {
        self.bounded(script.evalsha_with_reload(self.client.next_connected(), keys, args))
            .await
    }

    /// A script that changes what readers may see (a write-through, a drop, a fence
    /// bump): it counts as done only once replicated ([`Redis::replicated`]).
    async fn eval_write(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<Value, RedisError> {
        let client = self.client.next_connected();
        let slot = fred::util::redis_keyslot(keys[0].as_bytes());
        let link = self.link_epoch();
        let answer = self
            .bounded(script.evalsha_with_reload(client, keys, args))
            .await?;
        self.replicated(client, slot, link).await?;
        Ok(answer)
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
    fn link_epoch(&self) -> u64 {
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
    async fn replicated(
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

    fn ttl_ms(&self) -> Value {
        Value::from(self.settings.ttl.as_millis() as i64)
    }

    /// Loads every script (also done lazily on `NOSCRIPT`).
    pub async fn load_scripts(&self) -> Result<(), RedisError> {
        for script in self.scripts.all() {
            self.bounded(script.load(self.client.next_connected()))
                .await?;
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

    pub async fn read_window(&self, channel: ChannelId) -> Result<WindowRead, RedisError> {
        self.read_window_head(channel, None).await
    }

    /// Like [`Redis::read_window`], but with `head: Some(n)` only the newest `n` messages
    /// are read. A head is itself a window (every message from its oldest id up is in it);
    /// it is complete only when it holds the whole window, and it answers no sync beyond
    /// the current seq (older changes may sit below it).
    pub async fn read_window_head(
        &self,
        channel: ChannelId,
        head: Option<usize>,
    ) -> Result<WindowRead, RedisError> {
        let k = self.keys(channel);
        let last = head.map_or(-1, |n| n.max(1) as i64 - 1);
        let answer = self
            .eval(
                &self.scripts.read_window,
                vec![k.msgs, k.meta, k.ver],
                vec![fresh_version(), self.ttl_ms(), Value::from(last)],
            )
            .await?;
        let mut parts = answer.into_array().into_iter();
        match parts.next().and_then(|v| v.as_i64()) {
            Some(1) => {
                let meta = parts.next().ok_or(RedisError::Protocol)?.into_array();
                let elements = parts.next().ok_or(RedisError::Protocol)?.into_array();
                Ok(match decode_window(channel, &meta, &elements, head) {
                    Some(window) => WindowRead::Hit(window),
                    // Undecodable or partial: a miss. The next fill replaces it; a fill
                    // needs a version, so take it now.
                    None => WindowRead::Miss(self.current_version(&self.keys(channel).ver).await?),
                })
            }
            Some(0) => Ok(WindowRead::Miss(version_of(parts.next())?)),
            _ => Err(RedisError::Protocol),
        }
    }

    async fn current_version(&self, key: &str) -> Result<String, RedisError> {
        let fresh = fresh_version();
        let ttl = self.settings.ttl.as_millis() as i64;
        // SET NX then GET: a missing version becomes a fresh random one.
        let _: Value = self
            .bounded(self.client.set(
                key,
                fresh,
                Some(fred::types::Expiration::PX(ttl)),
                Some(fred::types::SetOptions::NX),
                false,
            ))
            .await?;
        let v: Option<String> = self.bounded(self.client.get(key)).await?;
        v.ok_or(RedisError::Protocol)
    }

    /// Installs a window read from Postgres if the version is unchanged. True when installed.
    pub async fn fill_window(&self, version: &str, window: &Window) -> Result<bool, RedisError> {
        let k = self.keys(window.channel.id);
        let mut args = Vec::with_capacity(7 + window.messages.len());
        args.extend([
            Value::from(version),
            self.ttl_ms(),
            Value::from(window.seq()),
            Value::from(window.floor),
            Value::from(i64::from(window.complete)),
            Value::Bytes(codec::encode_channel(&window.channel).into()),
            Value::from(codec::META_FORMAT),
        ]);
        args.extend(
            window
                .messages
                .iter()
                .map(|m| Value::Bytes(codec::encode_message(m).into())),
        );
        let answer = self
            .eval(&self.scripts.fill_window, vec![k.msgs, k.meta, k.ver], args)
            .await?;
        Ok(answer.as_i64() == Some(1))
    }

    /// Write-through of a post. Returns the script's answer (see `lua/append.lua`).
    pub async fn append(&self, message: &Message, hot_window: usize) -> Result<i64, RedisError> {
        let k = self.keys(message.channel_id);
        let args = vec![
            Value::from(message.seq),
            Value::Bytes(codec::encode_message(message).into()),
            Value::from(hot_window as i64),
            self.ttl_ms(),
            Value::from(codec::META_FORMAT),
        ];
        let answer = self
            .eval_write(&self.scripts.append, vec![k.msgs, k.meta, k.ver], args)
            .await?;
        answer.as_i64().ok_or(RedisError::Protocol)
    }

    /// Write-through of an edit or a delete. Returns the script's answer.
    pub async fn rewrite(&self, message: &Message) -> Result<i64, RedisError> {
        let k = self.keys(message.channel_id);
        let args = vec![
            Value::from(message.seq),
            Value::from(message.id.0),
            Value::Bytes(codec::encode_message(message).into()),
            self.ttl_ms(),
            Value::from(codec::META_FORMAT),
        ];
        let answer = self
            .eval_write(
                &self.scripts.rewrite,
                vec![k.msgs, k.meta, k.ver, k.hist, k.hver],
                args,
            )
            .await?;
        answer.as_i64().ok_or(RedisError::Protocol)
    }

    /// Forgets everything cached of a channel and fences in-flight fills.
    pub async fn drop_channel(&self, channel: ChannelId) -> Result<(), RedisError> {
        let k = self.keys(channel);
        self.eval_write(
            &self.scripts.drop_channel,
            vec![k.msgs, k.meta, k.ver, k.members, k.mver, k.hist, k.hver],
            vec![self.ttl_ms()],
        )
        .await
        .map(drop)
    }

    pub async fn read_members(&self, channel: ChannelId) -> Result<MembersRead, RedisError> {
        let k = self.keys(channel);
        let answer = self
            .eval(
                &self.scripts.read_members,
                vec![k.members, k.mver],
                vec![fresh_version(), self.ttl_ms()],
            )
            .await?;
        let mut parts = answer.into_array().into_iter();
        match parts.next().and_then(|v| v.as_i64()) {
            Some(1) => {
                let fields = parts.next().ok_or(RedisError::Protocol)?.into_array();
                Ok(match decode_members(&fields) {
                    Some(members) => MembersRead::Hit(members),
                    None => {
                        MembersRead::Miss(self.current_version(&self.keys(channel).mver).await?)
                    }
                })
            }
            Some(0) => Ok(MembersRead::Miss(version_of(parts.next())?)),
            _ => Err(RedisError::Protocol),
        }
    }

    pub async fn fill_members(
        &self,
        channel: ChannelId,
        version: &str,
        members: &Members,
    ) -> Result<bool, RedisError> {
        let k = self.keys(channel);
        let mut args = vec![
            Value::from(version),
            self.ttl_ms(),
            Value::from(LOADED_MARKER),
            Value::from("1"),
        ];
        for m in &members.members {
            args.push(Value::from(m.user_id.to_string()));
            args.push(Value::Bytes(codec::encode_member(m).into()));
        }
        let answer = self
            .eval(&self.scripts.fill_members, vec![k.members, k.mver], args)
            .await?;
        Ok(answer.as_i64() == Some(1))
    }

    /// Write-through of a membership change: the member hash is dropped.
    pub async fn drop_members(&self, channel: ChannelId) -> Result<(), RedisError> {
        let k = self.keys(channel);
        self.eval_write(
            &self.scripts.drop_members,
            vec![k.members, k.mver],
            vec![self.ttl_ms()],
        )
        .await
        .map(drop)
    }

    /// Write-through of a read marker (`member` as it is after the change).
    pub async fn mark_read(&self, channel: ChannelId, member: &Member) -> Result<i64, RedisError> {
        let k = self.keys(channel);
        let args = vec![
            Value::from(member.user_id.to_string()),
            Value::from(member.last_read_message_id.map_or(0, |m| m.0)),
            Value::from(codec::joined_at_micros(member)),
            self.ttl_ms(),
        ];
        let answer = self
            .eval_write(&self.scripts.mark_read, vec![k.members, k.mver], args)
            .await?;
        answer.as_i64().ok_or(RedisError::Protocol)
    }

    pub async fn publish(&self, channel: &str, message: String) -> Result<(), RedisError> {
        self.bounded(
            self.client
                .next_connected()
                .publish::<i64, _, _>(channel, message),
        )
        .await
        .map(drop)
    }

    /// `MGET` of keys that may sit in different slots. On a cluster the keys are grouped
    /// by slot and the groups go out in one pipeline (one `MGET` per slot, each routed
    /// to its primary); the values come back in the order of `keys`.
    async fn mget(&self, keys: Vec<String>) -> Result<Vec<Value>, RedisError> {
        let client = self.client.next();
        if !client.is_clustered() {
            return self.bounded(client.mget(keys)).await;
        }
        let groups = by_slot(keys.iter().map(String::as_str));
        if groups.len() == 1 {
            return self.bounded(client.mget(keys)).await;
        }
        let pipeline = client.pipeline();
        for positions in groups.values() {
            let group: Vec<&str> = positions.iter().map(|&i| keys[i].as_str()).collect();
            let () = pipeline.mget(group).await?;
        }
        let answers: Vec<Value> = self.bounded(pipeline.all()).await?;
        let mut values = vec![Value::Null; keys.len()];
        for (positions, answer) in groups.values().zip(answers) {
            for (&i, value) in positions.iter().zip(answer.into_array()) {
                values[i] = value;
            }
        }
        Ok(values)
    }

    /// Every key under `pattern`: on a cluster, from every primary.
    fn scan(
        &self,
        pattern: String,
        page: u32,
    ) -> futures::stream::BoxStream<'_, Result<fred::types::Key, fred::error::Error>> {
        let client = self.client.next_connected();
        if client.is_clustered() {
            Box::pin(client.scan_cluster_buffered(pattern, Some(page), None))
        } else {
            Box::pin(client.scan_buffered(pattern, Some(page), None))
        }
    }

    /// Deletes these keys, one `DEL` per slot (a cluster refuses a `DEL` across slots).
    async fn delete(&self, keys: Vec<fred::types::Key>) -> Result<u64, RedisError> {
        let client = self.client.next_connected();
        if !client.is_clustered() {
            let link = self.link_epoch();
            let deleted = client.del::<u64, _>(keys).await?;
            self.replicated(client, 0, link).await?;
            return Ok(deleted);
        }
        let groups = by_slot(keys.iter().map(|k| k.as_bytes()));
        let link = self.link_epoch();
        let deletes = groups.into_iter().map(|(slot, positions)| {
            let group: Vec<fred::types::Key> =
                positions.into_iter().map(|i| keys[i].clone()).collect();
            async move {
                let deleted = client.del::<u64, _>(group).await?;
                self.replicated(client, slot, link).await?;
                Ok::<_, RedisError>(deleted)
            }
        });
        Ok(futures::future::try_join_all(deletes)
            .await?
            .into_iter()
            .sum())
    }

    /// Deletes every key under the prefix (SCAN every primary, then DEL in batches, slot
    /// by slot). Versions are deleted too: a missing version is replaced by a fresh
    /// random one, never reused.
    pub async fn delete_prefix(&self) -> Result<u64, RedisError> {
        let pattern = format!("{}:*", self.settings.prefix);
        let mut deleted = 0;
        let mut pages = self.scan(pattern, 500);
        let mut batch = Vec::new();
        let deadline = self.settings.timeout * 50;
        let scan = async {
            while let Some(key) = pages.try_next().await? {
                batch.push(key);
                if batch.len() == 500 {
                    deleted += self.delete(std::mem::take(&mut batch)).await?;
                }
            }
            if !batch.is_empty() {
                deleted += self.delete(batch).await?;
            }
            Ok::<_, RedisError>(deleted)
        };
        match tokio::time::timeout(deadline, scan).await {
            Ok(result) => result,
            Err(_) => Err(RedisError::Timeout),
        }
    }

    /// How many channel windows are held under the prefix (a SCAN of every primary: for
    /// the admin view).
    pub async fn count_windows(&self) -> Result<u64, RedisError> {
        let pattern = format!("{}:*:meta", self.settings.prefix);
        let count = self
            .scan(pattern, 1000)
            .try_fold(0u64, |n, _| async move { Ok(n + 1) });
        match tokio::time::timeout(self.settings.timeout * 20, count).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(RedisError::Timeout),
        }
    }

    /// Closes the connection.
    pub async fn close(&self) {
        let _ = tokio::time::timeout(self.settings.timeout, self.client.quit()).await;
    }
}

/// Positions of `keys` grouped by their cluster slot.
fn by_slot<'k, K: AsRef<[u8]> + ?Sized + 'k>(
    keys: impl Iterator<Item = &'k K>,
) -> std::collections::BTreeMap<u16, Vec<usize>> {
    let mut groups = std::collections::BTreeMap::<u16, Vec<usize>>::new();
    for (i, key) in keys.enumerate() {
        let slot = fred::util::redis_keyslot(key.as_ref());
        groups.entry(slot).or_default().push(i);
    }
    groups
}

/// A random version in [0, 2^62): `INCR` on it never overflows.
fn fresh_version() -> Value {
    let (high, _) = uuid::Uuid::new_v4().as_u64_pair();
    Value::from((high >> 2) as i64)
}

fn version_of(value: Option<Value>) -> Result<String, RedisError> {
    value
        .and_then(|v| v.as_str().map(|s| s.into_owned()))
        .ok_or(RedisError::Protocol)
}

fn decode_window(
    channel: ChannelId,
    meta: &[Value],
    elements: &[Value],
    head: Option<usize>,
) -> Option<Window> {
    let field = |name: &str| {
        meta.chunks(2)
            .find(|pair| pair[0].as_str().as_deref() == Some(name))
            .and_then(|pair| pair.get(1))
    };
    let number = |name: &str| field(name)?.as_str()?.parse::<i64>().ok();
    if field("fmt")?.as_str()?.as_ref() != codec::META_FORMAT {
        return None;
    }
    let count = number("count")?;
    let expected = head.map_or(count, |n| count.min(n.max(1) as i64));
    if expected != elements.len() as i64 {
        return None; // Part of the window was evicted.
    }
    let whole = expected == count;
    let seq = number("seq")?;
    let channel_info = codec::decode_channel(channel, seq, field("chan")?.as_bytes()?)?;
    let messages = elements
        .iter()
        .map(|e| codec::decode_message(channel, e.as_bytes()?))
        .collect::<Option<Vec<_>>>()?;
    Some(Window {
        channel: channel_info,
        messages,
        floor: if whole { number("floor")? } else { seq },
        complete: whole && number("complete")? == 1,
    })
}

fn decode_members(fields: &[Value]) -> Option<Members> {
    let mut loaded = false;
    let mut members = Vec::with_capacity(fields.len() / 2);
    for pair in fields.chunks(2) {
        let name = pair[0].as_str()?;
        if name == LOADED_MARKER {
            loaded = true;
            continue;
        }
        let user = UserId::parse(&name).ok()?;
        members.push(codec::decode_member(user, pair.get(1)?.as_bytes()?)?);
    }
    if !loaded {
        return None; // The marker was evicted or the hash is partial.
    }
    members.sort_by_key(|m| m.user_id);
    Some(Members { members })
}
