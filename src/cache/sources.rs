//! Every kind of cached data, as a source of the tier engine ([`super::tiers`]): a
//! channel's window (or, without L1, only its newest messages), its member set, and a
//! user's hot feed. Deep history's source lives with its reads ([`super::history`]). Each says how it is keyed, read from Redis,
//! loaded from Postgres and installed through its fence; the engine does the rest.

use std::sync::Arc;

use bytes::Bytes;

use futures::future::BoxFuture;

use super::entry::{CachedFeed, CachedWindow};
use super::fills::{FillKey, What};
use super::l1::{Entry, Key};
use super::tiers::{RedisRead, Source};
use super::{CacheSettings, Hooks, HEAD_SLACK};
use crate::domain::feed::{Event, FeedWindow};
use crate::domain::window::{Members, Window};
use crate::domain::{ChannelId, Page, PageRequest, Scope, UserId};
use crate::postgres::{Db, DbError};
use crate::redis::{FeedRead, MembersRead, PageRead, Redis, RedisError, WindowRead};

/// A channel's hot window; with `head: Some(n)`, only its newest n messages (the probe
/// of a queued fill, which only asks whether Redis holds the window).
pub struct WindowSource {
    pub channel: ChannelId,
    pub head: Option<usize>,
}

impl Source for WindowSource {
    type Value = Arc<CachedWindow>;
    type Row = Window;

    fn key(&self) -> Key {
        match self.head {
            None => Key::Window(self.channel),
            Some(n) => Key::LatestPage(self.channel, n as u32),
        }
    }
    fn fill_key(&self) -> FillKey {
        FillKey::Channel(self.channel, What::Window)
    }
    fn scope(&self) -> Scope {
        Scope::Channel(self.channel)
    }
    fn value(entry: Entry) -> Option<Self::Value> {
        match entry {
            Entry::Window(w) => Some(w),
            _ => None,
        }
    }
    fn operations(&self) -> [&'static str; 3] {
        ["read_window", "load_window", "fill_window"]
    }
    async fn read(&self, redis: &Redis) -> Result<RedisRead, RedisError> {
        Ok(
            match redis.read_window_head(self.channel, self.head).await? {
                WindowRead::Hit(w) => RedisRead::Hit(Entry::Window(Arc::new(CachedWindow::new(w)))),
                WindowRead::Miss(version) => RedisRead::Miss(version),
            },
        )
    }
    async fn load(&self, db: &Db, settings: &CacheSettings) -> Result<Option<Window>, DbError> {
        db.load_window(self.channel, settings.hot_window).await
    }
    async fn install(
        &self,
        redis: &Redis,
        version: &str,
        window: &Window,
        _: &CacheSettings,
    ) -> Result<bool, RedisError> {
        redis.fill_window(version, window).await
    }
    fn entry(&self, window: Window) -> Option<Entry> {
        // Only a whole window is kept ([`Key::LatestPage`] never is).
        self.head
            .is_none()
            .then(|| Entry::Window(Arc::new(CachedWindow::new(window))))
    }
    fn answers_fills(&self) -> bool {
        self.head.is_none()
    }
    fn hook(&self, hooks: &Hooks) -> Option<BoxFuture<'static, ()>> {
        hooks
            .after_fill_read
            .as_ref()
            .map(|hook| hook(self.channel))
    }
}

/// A channel's latest page, read without L1 (`--cache redis`): the page Redis keeps
/// beside the window when it was made at the window's seq (no message decoded, nothing
/// encoded); else made from the window's newest messages and kept there for the next
/// reader. A miss is filled with the whole window, which answers it.
pub struct LatestPageSource {
    pub channel: ChannelId,
    pub request: PageRequest,
    pub encode: fn(&Page) -> Bytes,
}

impl LatestPageSource {
    /// The window it is made from, loaded and installed as a window is.
    fn window(&self) -> WindowSource {
        WindowSource {
            channel: self.channel,
            head: None,
        }
    }

    fn page_entry(&self, window: &Window) -> Option<Entry> {
        Some(Entry::Page((self.encode)(&window.page(self.request)?)))
    }
}

impl Source for LatestPageSource {
    type Value = Bytes;
    type Row = Window;

    fn key(&self) -> Key {
        Key::LatestPage(self.channel, self.request.limit)
    }
    fn fill_key(&self) -> FillKey {
        FillKey::Channel(self.channel, What::Window)
    }
    fn scope(&self) -> Scope {
        Scope::Channel(self.channel)
    }
    fn value(entry: Entry) -> Option<Bytes> {
        match entry {
            Entry::Page(body) => Some(body),
            _ => None,
        }
    }
    fn operations(&self) -> [&'static str; 3] {
        ["read_page", "load_window", "fill_window"]
    }
    async fn read(&self, redis: &Redis) -> Result<RedisRead, RedisError> {
        // The page's rows, the one that says whether more exist, and room for tombstones.
        let head = self.request.limit as usize + 1 + HEAD_SLACK;
        let (channel, limit) = (self.channel, self.request.limit);
        Ok(
            match redis
                .read_window_page(channel, Some(head), Some(limit))
                .await?
            {
                PageRead::Kept(body) => RedisRead::Hit(Entry::Page(body)),
                PageRead::Window(WindowRead::Hit(window)) => match self.page_entry(&window) {
                    Some(Entry::Page(body)) => {
                        // Kept for the next reader, unless a write came in since; a
                        // failure only costs that reader this encode.
                        let _ = redis.store_page(channel, window.seq(), limit, &body).await;
                        RedisRead::Hit(Entry::Page(body))
                    }
                    // The head is too short (tombstones): Postgres answers.
                    _ => RedisRead::Hit(Entry::Window(Arc::new(CachedWindow::new(window)))),
                },
                PageRead::Window(WindowRead::Miss(version)) => RedisRead::Miss(version),
            },
        )
    }
    async fn load(&self, db: &Db, settings: &CacheSettings) -> Result<Option<Window>, DbError> {
        self.window().load(db, settings).await
    }
    async fn install(
        &self,
        redis: &Redis,
        version: &str,
        window: &Window,
        settings: &CacheSettings,
    ) -> Result<bool, RedisError> {
        self.window()
            .install(redis, version, window, settings)
            .await
    }
    fn answers_fills(&self) -> bool {
        true
    }
    fn answer(&self, window: Window) -> Option<Entry> {
        self.page_entry(&window)
    }
    fn hook(&self, hooks: &Hooks) -> Option<BoxFuture<'static, ()>> {
        self.window().hook(hooks)
    }
}

/// A channel's member set, with read markers.
pub struct MembersSource {
    pub channel: ChannelId,
}

impl Source for MembersSource {
    type Value = Arc<Members>;
    type Row = Members;

    fn key(&self) -> Key {
        Key::Members(self.channel)
    }
    fn fill_key(&self) -> FillKey {
        FillKey::Channel(self.channel, What::Members)
    }
    fn scope(&self) -> Scope {
        Scope::Channel(self.channel)
    }
    fn value(entry: Entry) -> Option<Self::Value> {
        match entry {
            Entry::Members(m) => Some(m),
            _ => None,
        }
    }
    fn operations(&self) -> [&'static str; 3] {
        ["read_members", "load_member_set", "fill_members"]
    }
    async fn read(&self, redis: &Redis) -> Result<RedisRead, RedisError> {
        Ok(match redis.read_members(self.channel).await? {
            MembersRead::Hit(m) => RedisRead::Hit(Entry::Members(Arc::new(m))),
            MembersRead::Miss(version) => RedisRead::Miss(version),
        })
    }
    async fn load(&self, db: &Db, _: &CacheSettings) -> Result<Option<Members>, DbError> {
        db.load_member_set(self.channel).await
    }
    async fn install(
        &self,
        redis: &Redis,
        version: &str,
        members: &Members,
        _: &CacheSettings,
    ) -> Result<bool, RedisError> {
        redis.fill_members(self.channel, version, members).await
    }
    fn entry(&self, members: Members) -> Option<Entry> {
        Some(Entry::Members(Arc::new(members)))
    }
    fn answers_fills(&self) -> bool {
        true
    }
}

/// A user's hot feed (event ids, newest first), as a source of the tier engine. Feeds
/// keep no presence marks: every L1 miss asks Redis, whose read also hands out the fence
/// version that a delivery's write-through checks for.
pub struct FeedSource {
    pub user: UserId,
}

impl Source for FeedSource {
    type Value = Arc<CachedFeed>;
    type Row = (FeedWindow, Vec<Event>);

    fn key(&self) -> Key {
        Key::Feed(self.user)
    }
    fn fill_key(&self) -> FillKey {
        FillKey::Feed(self.user)
    }
    fn scope(&self) -> Scope {
        Scope::Feed(self.user)
    }
    fn marks_presence(&self) -> bool {
        false
    }
    fn value(entry: Entry) -> Option<Self::Value> {
        match entry {
            Entry::Feed(feed) => Some(feed),
            _ => None,
        }
    }
    fn operations(&self) -> [&'static str; 3] {
        ["read_feed", "load_feed_window", "fill_feed"]
    }
    async fn read(&self, redis: &Redis) -> Result<RedisRead, RedisError> {
        Ok(match redis.read_feed(self.user).await? {
            FeedRead::Hit(window) => RedisRead::Hit(Entry::Feed(Arc::new(CachedFeed::new(window)))),
            FeedRead::Miss(version) => RedisRead::Miss(version),
        })
    }
    async fn load(&self, db: &Db, settings: &CacheSettings) -> Result<Option<Self::Row>, DbError> {
        let load = db.load_feed_window(self.user, settings.feed_hot, settings.feed_retention);
        Ok(Some(load.await?))
    }
    async fn install(
        &self,
        redis: &Redis,
        version: &str,
        (window, bodies): &Self::Row,
        _: &CacheSettings,
    ) -> Result<bool, RedisError> {
        redis.fill_feed(self.user, version, window, bodies).await
    }
}
