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
mod connection;
mod feeds;
mod history;
mod keyspace;
mod pubsub;

use std::time::Duration;

use fred::prelude::{KeysInterface, PubsubInterface};
use fred::types::scripts::Script;
use fred::types::Value;

use crate::domain::window::{Members, Window};
use crate::domain::{ChannelId, Member, Message, UserId};

pub use pubsub::{Subscription, SubscriptionEvent, EVENT_BUFFER};

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

impl Redis {
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
