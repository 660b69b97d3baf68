//! The hot-channel cache: read-through and write-through over L1 ([`l1`]), Redis
//! ([`crate::redis`]) and Postgres, and what happens when Redis fails ([`health`]).
//!
//! # Read path
//! L1 hit → answer. Else one shared load per key: a Redis read (one round trip, which also
//! hands out the fence version on a miss); on a miss the Postgres fill query, then the
//! fenced fill script. A fill refused by the fence, a Redis failure, an open breaker or a
//! dirty channel all say [`Lookup::Unavailable`]: the caller reads Postgres directly.
//!
//! # Write path
//! After Postgres commits: the channel's script in Redis (which bumps the fence version),
//! then the local L1 entry is invalidated, then an invalidation is published for the
//! other instances. A write that cannot reach Redis marks its channel dirty: the channel
//! skips the tiers until the background task has dropped it from Redis. It also announces
//! the channel through Postgres ([`notices`]), so the other instances do the same.

pub mod fills;
pub mod health;
pub mod invalidation;
pub mod l1;
pub mod notices;
pub mod paths;
pub mod stats;

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tracing::{debug, warn};

use crate::config::CacheMode;
use crate::domain::window::Members;
use crate::domain::{
    Channel, ChannelId, Member, Message, MessageId, Page, PageRequest, SyncChannel, UserId,
};
use crate::metrics::Metrics;
use crate::postgres::{Db, DbError};
use crate::redis::{MembersRead, Redis, RedisError, WindowRead};
use health::{Breaker, Dirty};
use l1::{CachedWindow, Entry, Key, Loaded, Source, L1};
use paths::{Path, PathLatency};
use stats::{bump, CacheStats};

/// Extra messages read with a window's head for tombstones among the newest ones; a head
/// short of live messages falls back to Postgres.
const HEAD_SLACK: usize = 16;

/// Most message id → channel mappings kept for `GET /v1/messages/{id}` (they never change).
const MESSAGE_CHANNELS: u64 = 100_000;

/// What the tiers know.
#[derive(Debug, Clone)]
pub enum Lookup<T> {
    Found(T),
    /// The channel does not exist (Postgres said so during a fill).
    Absent,
    /// Ask Postgres directly.
    Unavailable,
}

impl<T> Lookup<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Lookup<U> {
        match self {
            Lookup::Found(value) => Lookup::Found(f(value)),
            Lookup::Absent => Lookup::Absent,
            Lookup::Unavailable => Lookup::Unavailable,
        }
    }
}

/// Settings of the cache tiers.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub mode: CacheMode,
    /// Messages per channel kept in Redis and L1.
    pub hot_window: usize,
    pub l1_capacity_bytes: u64,
    pub l1_ttl: Duration,
    /// Consecutive Redis failures that open the breaker.
    pub breaker_failures: u32,
    /// How often the background task probes Redis and drops dirty channels.
    pub probe_interval: Duration,
    /// The miss of a channel that queues its fill ([`fills`]).
    pub fill_after_misses: u32,
}

/// Test hooks: points where a test can hold a request to order a race.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Runs in a window fill after its Postgres read, before the fill script.
    pub after_fill_read: Option<Arc<dyn Fn(ChannelId) -> BoxFuture<'static, ()> + Send + Sync>>,
}

/// How far a lookup may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Only what L1 already holds: reads that a whole window would not pay for (pages
    /// past a cursor, syncs), which go to Postgres rather than fetch one.
    L1,
    /// L1, then Redis, then a fenced fill from Postgres.
    Fill,
}

pub struct HotCache {
    settings: CacheSettings,
    db: Db,
    redis: Redis,
    l1: L1,
    message_channels: moka::sync::Cache<MessageId, ChannelId>,
    breaker: Breaker,
    dirty: Dirty,
    stats: CacheStats,
    latency: PathLatency,
    fills: fills::Fills,
    /// This instance's name on the invalidation channel and in cache notices.
    instance: String,
    /// Whether the cache notice listener is connected ([`notices`]).
    notice_listener: AtomicBool,
    hooks: Hooks,
    metrics: Arc<Metrics>,
}

impl HotCache {
    pub fn new(
        settings: CacheSettings,
        db: Db,
        redis: Redis,
        hooks: Hooks,
        metrics: Arc<Metrics>,
    ) -> HotCache {
        let l1_bytes = match settings.mode {
            CacheMode::Full => settings.l1_capacity_bytes,
            CacheMode::Redis | CacheMode::Off => 0,
        };
        HotCache {
            l1: L1::new(l1_bytes, settings.l1_ttl),
            message_channels: moka::sync::Cache::new(MESSAGE_CHANNELS),
            breaker: Breaker::new(settings.breaker_failures),
            dirty: Dirty::default(),
            stats: CacheStats::default(),
            latency: PathLatency::default(),
            fills: fills::Fills::new(settings.fill_after_misses),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            notice_listener: AtomicBool::new(false),
            settings,
            db,
            redis,
            hooks,
            metrics,
        }
    }

    pub fn mode(&self) -> CacheMode {
        self.settings.mode
    }
    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }
    /// Background fills waiting or running ([`fills`]).
    pub fn fills_pending(&self) -> usize {
        self.fills.pending()
    }
    /// Read latency by the path that answered ([`paths`]).
    pub fn latency(&self) -> &PathLatency {
        &self.latency
    }
    pub fn l1(&self) -> &L1 {
        &self.l1
    }
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }
    pub fn dirty(&self) -> &Dirty {
        &self.dirty
    }
    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    /// Counts a read answered by Postgres outside the tiers.
    pub fn note_postgres_read(&self) {
        bump(&self.stats.postgres_reads);
    }

    fn tiers_usable(&self, channel: ChannelId) -> bool {
        self.settings.mode != CacheMode::Off
            && !self.breaker.is_open()
            && !self.dirty.contains(channel)
    }

    /// Runs a Postgres call of a fill and records its latency.
    async fn pg_call<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, DbError>>,
    ) -> Result<T, DbError> {
        bump(&self.stats.postgres_reads);
        let started = Instant::now();
        let result = call.await;
        self.metrics
            .record_postgres_call(operation, started.elapsed());
        result
    }

    /// Runs a Redis call, keeping the breaker's count and its latency; `None` when it failed.
    async fn redis_call<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, RedisError>>,
    ) -> Option<T> {
        let started = Instant::now();
        let result = call.await;
        self.metrics.record_redis_call(operation, started.elapsed());
        match result {
            Ok(value) => {
                self.breaker.record_success();
                Some(value)
            }
            Err(error) => {
                bump(&self.stats.redis_errors);
                if self.breaker.record_failure() {
                    warn!(%error, "Redis breaker opened: reads and writes go to Postgres only");
                } else {
                    debug!(%error, "a Redis call failed");
                }
                None
            }
        }
    }

    /// Counts an L1 lookup; the path of what it found.
    fn count_l1(&self, source: Source, loaded: &Loaded) -> Path {
        if self.l1.is_enabled() {
            bump(match source {
                Source::L1 => &self.stats.l1_hits,
                Source::Load => &self.stats.l1_misses,
            });
        }
        match loaded {
            Loaded::Found(_, path) => *path,
            Loaded::Absent | Loaded::Unavailable => Path::Postgres,
            Loaded::Missed => Path::Fill,
        }
    }

    async fn fetch_window(
        &self,
        channel: ChannelId,
        reach: Reach,
    ) -> Result<(Lookup<Arc<CachedWindow>>, Path), DbError> {
        self.fetch_window_head(channel, reach, None).await
    }

    /// What L1 holds under `key`, counted as a hit or a miss.
    fn peek(&self, key: Key) -> Option<Entry> {
        let entry = self.l1.peek(key);
        if self.l1.is_enabled() {
            bump(match entry {
                Some(_) => &self.stats.l1_hits,
                None => &self.stats.l1_misses,
            });
        }
        entry
    }

    /// The window, or with `head: Some(n)` only its newest n messages.
    async fn fetch_window_head(
        &self,
        channel: ChannelId,
        reach: Reach,
        head: Option<usize>,
    ) -> Result<(Lookup<Arc<CachedWindow>>, Path), DbError> {
        if !self.tiers_usable(channel) {
            return Ok((Lookup::Unavailable, Path::Postgres));
        }
        let key = match head {
            None => Key::Window(channel),
            Some(n) => Key::WindowHead(channel, n as u32),
        };
        if reach == Reach::L1 {
            return Ok(match self.peek(key) {
                Some(Entry::Window(w)) => (Lookup::Found(w), Path::L1),
                _ => (Lookup::Unavailable, Path::Postgres),
            });
        }
        let (loaded, source) = self
            .l1
            .fetch(key, || self.load_window(channel, head))
            .await?;
        let path = self.count_l1(source, &loaded);
        let lookup = match loaded {
            Loaded::Found(Entry::Window(w), _) => Lookup::Found(w),
            Loaded::Found(Entry::Members(_), _) | Loaded::Unavailable | Loaded::Missed => {
                Lookup::Unavailable
            }
            Loaded::Absent => Lookup::Absent,
        };
        Ok((lookup, path))
    }

    /// L1's load of a window: Redis, and on a miss a queued fill ([`fills`]).
    async fn load_window(
        &self,
        channel: ChannelId,
        head: Option<usize>,
    ) -> Result<Loaded, DbError> {
        let read = self.redis.read_window_head(channel, head);
        match self.redis_call("read_window", read).await {
            None => Ok(Loaded::Unavailable),
            Some(WindowRead::Hit(window)) => {
                bump(&self.stats.l2_hits);
                let window = Arc::new(CachedWindow::new(window));
                Ok(Loaded::Found(Entry::Window(window), Path::Redis))
            }
            Some(WindowRead::Miss(version)) => {
                bump(&self.stats.l2_misses);
                self.queue_fill(channel, fills::What::Window, version);
                Ok(Loaded::Missed)
            }
        }
    }

    /// A fill of the window: Postgres, then the fenced fill script. `None` when the
    /// channel does not exist or Redis failed; else whether the fence let it in.
    async fn fill_window(
        &self,
        channel: ChannelId,
        version: &str,
    ) -> Result<Option<bool>, DbError> {
        let load = self.db.load_window(channel, self.settings.hot_window);
        let Some(window) = self.pg_call("load_window", load).await? else {
            return Ok(None);
        };
        if let Some(hook) = &self.hooks.after_fill_read {
            hook(channel).await;
        }
        let fill = self.redis.fill_window(version, &window);
        Ok(self.redis_call("fill_window", fill).await)
    }

    async fn fetch_members(
        &self,
        channel: ChannelId,
        reach: Reach,
    ) -> Result<(Lookup<Arc<Members>>, Path), DbError> {
        if !self.tiers_usable(channel) {
            return Ok((Lookup::Unavailable, Path::Postgres));
        }
        if reach == Reach::L1 {
            return Ok(match self.peek(Key::Members(channel)) {
                Some(Entry::Members(m)) => (Lookup::Found(m), Path::L1),
                _ => (Lookup::Unavailable, Path::Postgres),
            });
        }
        let (loaded, source) = self
            .l1
            .fetch(Key::Members(channel), || self.load_members(channel))
            .await?;
        let path = self.count_l1(source, &loaded);
        let lookup = match loaded {
            Loaded::Found(Entry::Members(m), _) => Lookup::Found(m),
            Loaded::Found(Entry::Window(_), _) | Loaded::Unavailable | Loaded::Missed => {
                Lookup::Unavailable
            }
            Loaded::Absent => Lookup::Absent,
        };
        Ok((lookup, path))
    }

    /// L1's load of a member set: Redis, and on a miss a queued fill ([`fills`]).
    async fn load_members(&self, channel: ChannelId) -> Result<Loaded, DbError> {
        match self
            .redis_call("read_members", self.redis.read_members(channel))
            .await
        {
            None => Ok(Loaded::Unavailable),
            Some(MembersRead::Hit(members)) => {
                bump(&self.stats.l2_hits);
                let members = Arc::new(members);
                Ok(Loaded::Found(Entry::Members(members), Path::Redis))
            }
            Some(MembersRead::Miss(version)) => {
                bump(&self.stats.l2_misses);
                self.queue_fill(channel, fills::What::Members, version);
                Ok(Loaded::Missed)
            }
        }
    }

    /// A fill of the member set, as [`HotCache::fill_window`].
    async fn fill_members(
        &self,
        channel: ChannelId,
        version: &str,
    ) -> Result<Option<bool>, DbError> {
        let load = self.db.load_member_set(channel);
        let Some(members) = self.pg_call("load_member_set", load).await? else {
            return Ok(None);
        };
        let fill = self.redis.fill_members(channel, version, &members);
        Ok(self.redis_call("fill_members", fill).await)
    }

    /// A page from the window, encoded by `encode` (once per window and request: the
    /// encoding is kept with the window); `Unavailable` also when the page reaches past it.
    ///
    /// A latest page reads through (it is how a channel enters the tiers). A page past a
    /// cursor is answered only from a window L1 already holds: fetching a whole window
    /// for a page that may lie below it would cost more than the Postgres page it spares.
    pub async fn page(
        &self,
        channel: ChannelId,
        request: PageRequest,
        encode: impl FnOnce(&Page) -> bytes::Bytes,
    ) -> Result<(Lookup<bytes::Bytes>, Path), DbError> {
        let latest = request.cursor == crate::domain::Cursor::Latest;
        let reach = if latest { Reach::Fill } else { Reach::L1 };
        // Without L1 nothing keeps the whole window: a latest page reads only the head it
        // needs (its rows, the one that says whether more exist, and room for tombstones).
        let head =
            (!self.l1.is_enabled() && latest).then_some(request.limit as usize + 1 + HEAD_SLACK);
        let (lookup, path) = self.fetch_window_head(channel, reach, head).await?;
        Ok(match lookup {
            Lookup::Found(w) => match w.encoded_page(request, encode) {
                Some(body) => (Lookup::Found(body), path),
                None => (Lookup::Unavailable, Path::Postgres),
            },
            Lookup::Absent => (Lookup::Absent, path),
            Lookup::Unavailable => (Lookup::Unavailable, path),
        })
    }

    pub async fn channel(&self, channel: ChannelId) -> Result<(Lookup<Channel>, Path), DbError> {
        let (lookup, path) = self.fetch_window(channel, Reach::Fill).await?;
        Ok((lookup.map(|w| w.channel.clone()), path))
    }

    pub async fn members(
        &self,
        channel: ChannelId,
    ) -> Result<(Lookup<Arc<Members>>, Path), DbError> {
        self.fetch_members(channel, Reach::Fill).await
    }

    /// Unread count: `Found(None)` when the user is not a member.
    pub async fn unread(
        &self,
        channel: ChannelId,
        user: UserId,
    ) -> Result<(Lookup<Option<i64>>, Path), DbError> {
        let (members, members_path) = self.fetch_members(channel, Reach::Fill).await?;
        let members = match members {
            Lookup::Found(m) => m,
            other => return Ok((other.map(|_| None), members_path)),
        };
        let Some(member) = members.get(user) else {
            return Ok((Lookup::Found(None), members_path));
        };
        let (window, path) = self.fetch_window(channel, Reach::Fill).await?;
        Ok(match window {
            Lookup::Found(w) => match w.unread(member) {
                Some(n) => (Lookup::Found(Some(n)), path.max(members_path)),
                None => (Lookup::Unavailable, Path::Postgres),
            },
            other => (other.map(|_| None), path.max(members_path)),
        })
    }

    /// One message, when its channel's window holds it.
    pub async fn message(&self, id: MessageId) -> Result<(Option<Message>, Path), DbError> {
        let Some(channel) = self.message_channels.get(&id) else {
            return Ok((None, Path::Postgres));
        };
        Ok(match self.fetch_window(channel, Reach::Fill).await? {
            (Lookup::Found(w), path) => match w.message(id) {
                Some(m) => (Some(m.clone()), path),
                None => (None, Path::Postgres),
            },
            _ => (None, Path::Postgres),
        })
    }

    /// Remembers the channel of a message read from Postgres.
    pub fn learn_message_channel(&self, message: &Message) {
        if self.settings.mode != CacheMode::Off {
            self.message_channels.insert(message.id, message.channel_id);
        }
    }

    /// A channel's sync answer from what L1 holds; `None` when Postgres must answer. With
    /// a user, also the unread count, or `None` when it needs Postgres.
    ///
    /// Only L1: a sync asks for a few changes of many channels, and the channels L1 lacks
    /// cost one batched Postgres query together, less than fetching and decoding each
    /// one's whole window from Redis.
    pub fn sync_channel(
        &self,
        channel: ChannelId,
        since: i64,
        user: Option<UserId>,
        limits: crate::postgres::SyncLimits,
    ) -> Option<SyncChannel> {
        if !self.tiers_usable(channel) {
            return None;
        }
        let Some(Entry::Window(window)) = self.peek(Key::Window(channel)) else {
            return None;
        };
        let mut answer = window.sync(
            since,
            i64::from(limits.reset_threshold),
            limits.reset_messages as usize,
        )?;
        if let Some(user) = user {
            let Some(Entry::Members(members)) = self.peek(Key::Members(channel)) else {
                return None;
            };
            if let Some(member) = members.get(user) {
                answer.unread_count = Some(window.unread(member)?);
            }
        }
        Some(answer)
    }

    /// Records how long a read took, under the path that answered it.
    pub fn record_read(&self, path: Path, elapsed: Duration) {
        self.latency.record(path, elapsed);
        self.metrics.record_read(path.as_str(), elapsed);
    }

    /// Write-through of a post.
    pub async fn after_post(&self, message: &Message) {
        let call = self.redis.append(message, self.settings.hot_window);
        self.write_through(
            message.channel_id,
            Key::Window(message.channel_id),
            "append",
            call,
        )
        .await;
    }

    /// Write-through of an edit or a delete.
    pub async fn after_rewrite(&self, message: &Message) {
        let call = self.redis.rewrite(message);
        self.write_through(
            message.channel_id,
            Key::Window(message.channel_id),
            "rewrite",
            call,
        )
        .await;
    }

    /// Write-through of a membership change.
    pub async fn after_members_change(&self, channel: ChannelId) {
        let call = self.redis.drop_members(channel);
        self.write_through(channel, Key::Members(channel), "drop_members", call)
            .await;
    }

    /// Write-through of a read marker; `member` as it is after the change.
    pub async fn after_mark_read(&self, channel: ChannelId, member: &Member) {
        let call = self.redis.mark_read(channel, member);
        self.write_through(channel, Key::Members(channel), "mark_read", call)
            .await;
    }

    async fn write_through<T>(
        &self,
        channel: ChannelId,
        key: Key,
        operation: &'static str,
        call: impl Future<Output = Result<T, RedisError>>,
    ) {
        if self.settings.mode == CacheMode::Off {
            return;
        }
        let reached = !self.breaker.is_open() && self.redis_call(operation, call).await.is_some();
        self.l1.invalidate(key);
        if !reached || !self.publish(invalidation::Invalidation::Key(key)).await {
            self.dirty.mark(channel);
            self.announce(Some(channel)).await;
        }
    }

    /// Drops a channel (or, with `None`, everything) from L1 here and on every instance, and
    /// from Redis. When Redis cannot be reached the drop is remembered and done later.
    pub async fn flush(&self, channel: Option<ChannelId>) {
        if self.settings.mode == CacheMode::Off {
            return;
        }
        let done = match channel {
            Some(c) => {
                self.l1.invalidate(Key::Window(c));
                self.l1.invalidate(Key::Members(c));
                self.redis_call("drop_channel", self.redis.drop_channel(c))
                    .await
                    .is_some()
                    && self.publish(invalidation::Invalidation::Channel(c)).await
            }
            None => {
                self.l1.flush();
                self.redis_call("delete_prefix", self.redis.delete_prefix())
                    .await
                    .is_some()
                    && self.publish(invalidation::Invalidation::Everything).await
            }
        };
        if !done {
            match channel {
                Some(c) => self.dirty.mark(c),
                None => self.dirty.mark_all(),
            }
            self.announce(channel).await;
        }
    }

    /// Publishes an invalidation for the other instances; false when it could not be sent.
    async fn publish(&self, what: invalidation::Invalidation) -> bool {
        if self.breaker.is_open() {
            return false;
        }
        let message = what.encode(&self.instance);
        let sent = self
            .redis_call(
                "publish",
                self.redis
                    .publish(&self.redis.invalidation_channel(), message),
            )
            .await
            .is_some();
        if sent {
            bump(&self.stats.invalidations_sent);
        }
        sent
    }
}
