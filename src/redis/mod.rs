//! The only module that imports `fred`: the connection, the channel keys, the Lua scripts
//! (`lua/`) as typed calls, the codec of stored values, and pub/sub.
//!
//! Every call is bounded by the configured timeout here, with `tokio::time::timeout`:
//! fred's own per-command timeouts do not bound `EVALSHA`. A dropped call is not
//! cancelled in Redis and fred replays in-flight commands after a reconnect, so every
//! script is idempotent and fenced (see `lua/README.md`).

pub mod codec;
pub use channels::{MembersRead, PageRead, WindowRead};
pub use feeds::{FeedRead, FeedState};
pub use history::HistoryRead;
mod channels;
mod connection;
mod feeds;
mod history;
mod keyspace;
mod nodes;
mod permissions;
mod positions;
mod pubsub;

use std::time::Duration;

use fred::prelude::PubsubInterface;
use fred::types::scripts::Script;
use fred::types::Value;

use crate::domain::{ChannelId, Scope};

pub use pubsub::{Subscription, SubscriptionEvent, EVENT_BUFFER};

/// The member-hash field that marks a loaded set, even an empty one.
pub(super) const LOADED_MARKER: &str = "_";

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
    store_page: Script,
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
    raise_position: Script,
}

impl Scripts {
    fn new() -> Scripts {
        let lua = |src: &'static str| Script::from_lua(src);
        Scripts {
            read_window: lua(include_str!("../../lua/read_window.lua")),
            store_page: lua(include_str!("../../lua/store_page.lua")),
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
            raise_position: lua(include_str!("../../lua/raise_position.lua")),
        }
    }

    fn all(&self) -> [&Script; 17] {
        [
            &self.read_window,
            &self.store_page,
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
            &self.raise_position,
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

/// A Redis connection that reconnects by itself, with the hot-channel scripts.
#[derive(Clone)]
pub struct Redis {
    /// One pool per server: on a cluster, one per primary, chosen by slot ([`nodes`]).
    nodes: std::sync::Arc<nodes::Nodes>,
    settings: std::sync::Arc<RedisSettings>,
    scripts: std::sync::Arc<Scripts>,
    links: std::sync::Arc<Links>,
    /// Replicas a write must reach ([`Redis::replicated`]); settled at startup.
    wait_replicas: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

/// What fred's connection events said, for every pool.
#[derive(Default)]
struct Links {
    /// What the last failed connection attempt met, by node.
    errors: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
    /// Reconnections fred reported (every connection's, summed).
    reconnects: std::sync::atomic::AtomicU64,
}

/// How a Redis server is named (`host:port`) in the breaker per node, `/v1/admin/cache`
/// and `/metrics`.
pub type NodeName = std::sync::Arc<str>;

impl Redis {
    pub fn prefix(&self) -> &str {
        &self.settings.prefix
    }

    /// The pub/sub channel of cache invalidations.
    pub fn invalidation_channel(&self) -> String {
        format!("{}:invalidate", self.settings.prefix)
    }

    /// The node that holds `scope`'s keys (they share one hash tag, so one slot); on
    /// one server, that server. `Scope::Everything` spans every node: `None` on a cluster.
    pub fn node_of(&self, scope: Scope) -> Option<NodeName> {
        if !self.nodes.is_cluster() {
            return Some(self.nodes.any(None).name.clone());
        }
        let tag = hash_tag(scope)?;
        Some(self.nodes.for_key(tag.as_bytes()).name.clone())
    }

    /// Every node: the server, or each primary of a cluster.
    pub fn node_names(&self) -> Vec<NodeName> {
        self.nodes
            .all()
            .into_iter()
            .map(|n| n.name.clone())
            .collect()
    }

    pub fn keys(&self, channel: ChannelId) -> ChannelKeys {
        let p = &self.settings.prefix;
        let channel = hash_tag(Scope::Channel(channel)).unwrap_or_default();
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

    /// The call within the timeout; a failure on a cluster asks for the slot map soon.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, fred::error::Error>>,
    ) -> Result<T, RedisError> {
        let result = match tokio::time::timeout(self.settings.timeout, call).await {
            Ok(result) => result.map_err(RedisError::from),
            Err(_) => Err(RedisError::Timeout),
        };
        if result.is_err() {
            self.nodes.call_failed();
        }
        result
    }

    async fn eval(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<Value, RedisError> {
        let node = self.nodes.for_key(keys[0].as_bytes());
        self.bounded(script.evalsha_with_reload(node.client(), keys, args))
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
        let node = self.nodes.for_key(keys[0].as_bytes());
        let client = node.client();
        let link = self.link_epoch();
        let answer = self
            .bounded(script.evalsha_with_reload(client, keys, args))
            .await?;
        self.replicated(&node, client, link).await?;
        Ok(answer)
    }

    fn ttl_ms(&self) -> Value {
        Value::from(self.settings.ttl.as_millis() as i64)
    }

    /// Loads every script on every node (also done lazily on `NOSCRIPT`).
    pub async fn load_scripts(&self) -> Result<(), RedisError> {
        for node in self.nodes.all() {
            for script in self.scripts.all() {
                self.bounded(script.load(node.client())).await?;
            }
        }
        Ok(())
    }

    /// `PUBLISH` through a node that is connected (on a cluster it reaches every node).
    pub async fn publish(&self, channel: &str, message: String) -> Result<(), RedisError> {
        let node = self.nodes.any(None);
        self.bounded(node.client().publish::<i64, _, _>(channel, message))
            .await
            .map(drop)
    }
}

/// What goes between the braces of `scope`'s keys (`{…}`), so all of them share one
/// cluster slot: a channel's id, `u:<user>` for a feed, `e:<event>` for a body. `None` for
/// `Scope::Everything`, which has no keys of its own.
fn hash_tag(scope: Scope) -> Option<String> {
    Some(match scope {
        Scope::Everything => return None,
        Scope::Channel(c) => c.to_string(),
        Scope::Feed(u) => format!("u:{u}"),
        Scope::Event(e) => format!("e:{}", e.0),
    })
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
