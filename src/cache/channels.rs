//! A channel's cached data as the service sees it: its window and member set read through
//! the tiers ([`super::tiers`]), with deep history for pages below the window
//! ([`super::history`]), and the write-through of each channel write
//! ([`super::coherence`]).

use std::sync::Arc;

use super::audit::Auditor;
use super::coherence::invalidation::Invalidation;
use super::coherence::Coherence;
use super::entry::CachedWindow;
use super::history;
use super::l1::{Entry, Key, MessageChannels};
use super::paths::Path;
use super::sources::{LatestPageSource, MembersSource, WindowSource};
use super::tiers::Tiers;
use super::CacheMode;
use super::{Lookup, Reach};
use crate::domain::window::Members;
use crate::domain::{
    Channel, ChannelId, Member, Message, MessageId, Page, PageRequest, SyncChannel, UserId,
};
use crate::postgres::{DbError, Ticket};

/// Most message id → channel mappings kept for `GET /v1/messages/{id}` (they never change).
const MESSAGE_CHANNELS: u64 = 100_000;

pub struct Channels {
    tiers: Arc<Tiers>,
    coherence: Arc<Coherence>,
    audit: Arc<Auditor>,
    /// Which channel a message is in, for reads of one message.
    message_channels: MessageChannels,
}

impl Channels {
    pub(super) fn new(
        tiers: Arc<Tiers>,
        coherence: Arc<Coherence>,
        audit: Arc<Auditor>,
    ) -> Channels {
        Channels {
            tiers,
            coherence,
            audit,
            message_channels: MessageChannels::new(MESSAGE_CHANNELS),
        }
    }

    /// How many message → channel mappings are kept, and the most that are.
    pub(super) fn message_channels_usage(&self) -> (usize, usize) {
        self.message_channels.usage()
    }

    /// A page L1 answers from its window, encoded by `encode` (once per window and
    /// request), with no future built: the hit path. `None` when [`Channels::page`] must
    /// read it through.
    pub fn page_hit(
        &self,
        channel: ChannelId,
        request: PageRequest,
        encode: impl FnOnce(&Page) -> bytes::Bytes,
    ) -> Option<bytes::Bytes> {
        let source = WindowSource {
            channel,
            head: None,
        };
        self.tiers.hit(&source, |w| w.encoded_page(request, encode))
    }

    /// A page from the window, encoded by `encode` (once per window and request: the
    /// encoding is kept with the window); `Unavailable` also when the page reaches past it.
    ///
    /// A latest page reads through (it is how a channel enters the tiers). A page past a
    /// cursor is answered only from a window L1 already holds: fetching a whole window
    /// for a page that may lie below it would cost more than the Postgres page it spares.
    ///
    /// A page past a cursor that the window cannot answer goes to deep history
    /// ([`super::history`]).
    ///
    pub async fn page(
        &self,
        channel: ChannelId,
        request: PageRequest,
        encode: fn(&Page) -> bytes::Bytes,
    ) -> Result<(Lookup<bytes::Bytes>, Path), DbError> {
        let latest = request.cursor == crate::domain::Cursor::Latest;
        if latest && !self.tiers.l1.is_enabled() {
            // Without L1 nothing keeps the whole window: the page Redis keeps, or one made
            // from the window's newest messages.
            let source = LatestPageSource {
                channel,
                request,
                encode,
            };
            return self.tiers.fetch(&source, Reach::Fill).await;
        }
        // A page past a cursor never fetches a window (below); deep history may still be
        // read as far as `reach` allows.
        let window_reach = if latest { Reach::Fill } else { Reach::L1 };
        let (lookup, path) = self.fetch_window(channel, window_reach).await?;
        if let Lookup::Found(w) = &lookup {
            if let Some(body) = w.encoded_page(request, encode) {
                return Ok((Lookup::Found(body), path));
            }
        }
        if latest {
            let path = match lookup {
                Lookup::Found(_) => Path::Postgres,
                Lookup::Unavailable => path,
            };
            return Ok((Lookup::Unavailable, path));
        }
        Ok(
            match history::page(&self.tiers, channel, request, Reach::Fill).await? {
                (Some(page), path) => (Lookup::Found(encode(&page)), path),
                (None, path) => (Lookup::Unavailable, path),
            },
        )
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
        let reach = Reach::Fill;
        let (members, members_path) = self.fetch_members(channel, reach).await?;
        let members = match members {
            Lookup::Found(m) => m,
            other => return Ok((other.map(|_| None), members_path)),
        };
        let Some(member) = members.get(user) else {
            return Ok((Lookup::Found(None), members_path));
        };
        let (window, path) = self.fetch_window(channel, reach).await?;
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
        let Some(channel) = self.message_channels.get(id) else {
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
        if self.tiers.settings.mode != CacheMode::Off {
            self.message_channels.insert(message.id, message.channel_id);
        }
    }

    /// A channel's sync answer from the tiers, read through as a latest page is when L1
    /// is on (a sync is a hot read: clients reconnect to the channels they were in), with
    /// the path that answered; `None` when Postgres must answer (the window cannot tell, or both tiers
    /// missed). With a user, also the unread count, or `None` when it needs Postgres.
    pub async fn sync_channel(
        &self,
        channel: ChannelId,
        since: i64,
        user: Option<UserId>,
        limits: crate::postgres::SyncLimits,
    ) -> Result<(Option<SyncChannel>, Path), DbError> {
        // Without L1, each sync would decode whole windows from Redis: at 20 channels a
        // sync and 32 clients that saturated Redis (`hotchan bench --scale 2m`: calls
        // timed out and the breaker opened), so there a sync asks only L1, which is
        // none, and Postgres answers it in one query.
        let reach = match self.tiers.l1.is_enabled() {
            true => Reach::Fill,
            false => Reach::L1,
        };
        // Both at once: a cold channel is filled whole in one sync.
        let members = async {
            match user {
                Some(_) => Some(self.fetch_members(channel, reach).await),
                None => None,
            }
        };
        let (window, members) =
            futures::future::join(self.fetch_window(channel, reach), members).await;
        let (window, path) = match window? {
            (Lookup::Found(window), path) => (window, path),
            (Lookup::Unavailable, path) => return Ok((None, path)),
        };
        let Some(mut answer) = window.sync(
            since,
            i64::from(limits.reset_threshold),
            limits.reset_messages as usize,
        ) else {
            return Ok((None, Path::Postgres));
        };
        let (Some(user), Some(members)) = (user, members) else {
            return Ok((Some(answer), path));
        };
        let (members, members_path) = match members? {
            (Lookup::Found(members), members_path) => (members, members_path),
            (Lookup::Unavailable, members_path) => return Ok((None, members_path)),
        };
        if let Some(member) = members.get(user) {
            match window.unread(member) {
                Some(unread) => answer.unread_count = Some(unread),
                None => return Ok((None, Path::Postgres)),
            }
        }
        Ok((Some(answer), path.max(members_path)))
    }

    async fn fetch_window(
        &self,
        channel: ChannelId,
        reach: Reach,
    ) -> Result<(Lookup<Arc<CachedWindow>>, Path), DbError> {
        let source = WindowSource {
            channel,
            head: None,
        };
        self.tiers.fetch(&source, reach).await
    }

    async fn fetch_members(
        &self,
        channel: ChannelId,
        reach: Reach,
    ) -> Result<(Lookup<Arc<Members>>, Path), DbError> {
        self.tiers.fetch(&MembersSource { channel }, reach).await
    }

    /// Write-through of a post.
    pub async fn after_post(&self, message: &Message, ticket: Ticket) {
        let call = self
            .tiers
            .redis
            .append(message, self.tiers.settings.hot_window);
        let c = message.channel_id;
        let key = Key::Window(c);
        let hot_window = self.tiers.settings.hot_window;
        // The window L1 holds, with the post on top, when it is the one just before it
        // (as `append.lua` does in Redis).
        let next = |entry: &Entry| match entry {
            Entry::Window(w) => w
                .window
                .with_post(message, hot_window)
                .map(|w| Entry::Window(Arc::new(CachedWindow::new(w)))),
            _ => None,
        };
        let changed = [Invalidation::Key(key)];
        self.coherence
            .write_through_updating("append", call, &changed, Some((key, &next)), ticket)
            .await;
        self.audit.sample(c);
    }

    /// Write-through of an edit or a delete: the window, and the runs of deep history
    /// (which a post never changes: it lands above every run).
    pub async fn after_rewrite(&self, message: &Message, ticket: Ticket) {
        let call = self.tiers.redis.rewrite(message);
        let c = message.channel_id;
        let changed = [Key::Window(c), Key::History(c)].map(Invalidation::Key);
        self.coherence
            .write_through("rewrite", call, &changed, ticket)
            .await;
        self.audit.sample(c);
    }

    /// Write-through of a membership change.
    pub async fn after_members_change(&self, channel: ChannelId, ticket: Ticket) {
        let call = self.tiers.redis.drop_members(channel);
        let changed = [Invalidation::Key(Key::Members(channel))];
        self.coherence
            .write_through("drop_members", call, &changed, ticket)
            .await;
    }

    /// Write-through of a read marker; `member` as it is after the change.
    pub async fn after_mark_read(&self, channel: ChannelId, member: &Member, ticket: Ticket) {
        let call = self.tiers.redis.mark_read(channel, member);
        let changed = [Invalidation::Key(Key::Members(channel))];
        self.coherence
            .write_through("mark_read", call, &changed, ticket)
            .await;
    }
}
