//! The operations of the HTTP contract, in domain types. Reads ask the cache tiers first
//! and Postgres when they cannot answer; writes go to Postgres, then through the tiers.
//! With `--cache off` every operation goes to Postgres alone.

mod error;
pub mod trace;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use crate::cache::gate::{self, Kind, Route};
use crate::cache::paths::Path;
use crate::cache::{HotCache, Lookup};
use crate::domain::{
    Channel, ChannelId, ChannelName, ChannelType, Content, InvalidInput, Member, MemberSummary,
    Message, MessageId, Page, PageRequest, Role, SyncRequest, SyncResult, UnreadChannel, UserId,
};
use crate::metrics::Metrics;
use crate::postgres::{
    Db, DbError, DeleteOutcome, EditOutcome, MarkReadOutcome, MemberLookup, MemberRemoval,
    NewMessage, PostOutcome, SyncLimits, UnreadOutcome,
};

pub use error::Error;

/// A channel to create, validated.
#[derive(Debug, Clone)]
pub struct NewChannel {
    pub id: Option<ChannelId>,
    pub kind: ChannelType,
    pub name: Option<ChannelName>,
    pub members: Vec<UserId>,
}

impl NewChannel {
    /// Checks the member rules: a direct channel has exactly two distinct members;
    /// a group's duplicate member ids collapse into one.
    pub fn parse(
        id: Option<ChannelId>,
        kind: ChannelType,
        name: Option<ChannelName>,
        members: Vec<UserId>,
    ) -> Result<NewChannel, InvalidInput> {
        let distinct: BTreeSet<UserId> = members.into_iter().collect();
        if kind == ChannelType::Direct && distinct.len() != 2 {
            return Err(InvalidInput(format!(
                "a direct channel needs exactly 2 distinct members, got {}",
                distinct.len()
            )));
        }
        Ok(NewChannel {
            id,
            kind,
            name,
            members: distinct.into_iter().collect(),
        })
    }
}

/// Whether a post made a new message or found the original of a repeated `client_msg_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Posted {
    Created,
    Duplicate,
}

/// Settings the operations need.
#[derive(Debug, Clone, Copy)]
pub struct ServiceSettings {
    pub sync: SyncLimits,
}

pub struct Service {
    db: Db,
    cache: Arc<HotCache>,
    metrics: Arc<Metrics>,
    settings: ServiceSettings,
    trace: Option<trace::Trace>,
}

/// A read in progress: timed from its start, recorded under the path that answered, and
/// judged with the route the cost gate gave it ([`crate::cache::gate`]).
struct Read<'a> {
    cache: &'a HotCache,
    started: Instant,
    /// `None` for reads only Postgres answers: not judged.
    kind: Option<Kind>,
    route: Route,
    /// The path of a read the tiers sent to Postgres: `Fill` when both tiers missed.
    missed: Path,
}

impl Read<'_> {
    /// Asks the tiers, when the gate sends this read to them: `None` when they were not
    /// asked or cannot answer, and the caller asks Postgres. Fills the ask queues are
    /// charged to this kind of read.
    async fn ask<T>(
        &mut self,
        tiers: impl Future<Output = Result<(Lookup<T>, Path), DbError>>,
    ) -> Result<Option<T>, Error> {
        let Some(kind) = self.kind.filter(|_| self.route == Route::Tiers) else {
            return Ok(None);
        };
        let answer = gate::serving(kind, tiers).await?;
        Ok(self.tiers(answer))
    }

    /// The tiers' answer when they had one (recorded under `path`); else `None`.
    fn tiers<T>(&mut self, (lookup, path): (Lookup<T>, Path)) -> Option<T> {
        let Lookup::Found(answer) = lookup else {
            self.missed = if path == Path::Fill {
                Path::Fill
            } else {
                Path::Postgres
            };
            return None;
        };
        self.record(path);
        Some(answer)
    }

    /// Records a read that Postgres answered.
    fn postgres<T>(&self, answer: T) -> T {
        self.record(self.missed);
        answer
    }

    fn record(&self, path: Path) {
        let elapsed = self.started.elapsed();
        self.cache.record_read(path, elapsed);
        if let Some(kind) = self.kind {
            self.cache.gate().record(kind, self.route, elapsed);
        }
    }
}

impl Service {
    pub fn new(
        db: Db,
        cache: Arc<HotCache>,
        metrics: Arc<Metrics>,
        settings: ServiceSettings,
    ) -> Service {
        Service {
            db,
            cache,
            metrics,
            settings,
            trace: None,
        }
    }

    /// Every bounded table and queue, the cache's and the trace's.
    pub fn bounds(&self) -> Vec<crate::cache::Bound> {
        let mut bounds = self.cache.bounds().to_vec();
        if let Some(trace) = &self.trace {
            bounds.push(crate::cache::Bound {
                name: "trace_lines",
                len: trace.backlog(),
                limit: trace::QUEUE,
            });
        }
        bounds
    }

    /// Records every channel read into `trace` (`serve --trace-file`).
    pub fn with_trace(mut self, trace: trace::Trace) -> Service {
        self.trace = Some(trace);
        self
    }

    fn traced(&self, channel: ChannelId, depth: u32) {
        if let Some(trace) = &self.trace {
            trace.record(channel, depth);
        }
    }

    pub fn cache(&self) -> &HotCache {
        &self.cache
    }

    /// A read of `kind`, with the route the cost gate gives it; `None`: a read only
    /// Postgres answers.
    fn read(&self, kind: Option<Kind>) -> Read<'_> {
        Read {
            cache: &self.cache,
            started: Instant::now(),
            kind,
            route: kind.map_or(Route::Postgres, |kind| self.cache.gate().route(kind)),
            missed: Path::Postgres,
        }
    }

    /// Runs one Postgres call and records its latency under `operation`.
    async fn pg<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, DbError>>,
    ) -> Result<T, Error> {
        let started = Instant::now();
        let result = call.await;
        self.metrics
            .record_postgres_call(operation, started.elapsed());
        Ok(result?)
    }

    pub async fn create_channel(&self, new: NewChannel) -> Result<Channel, Error> {
        let created = self.pg(
            "create_channel",
            self.db
                .create_channel(new.id, new.kind, new.name.as_ref(), &new.members),
        );
        created
            .await?
            .ok_or_else(|| Error::Conflict("a channel with this id exists".into()))
    }

    pub async fn channel(&self, id: ChannelId) -> Result<Channel, Error> {
        let mut read = self.read(Some(Kind::Channel));
        if let Some(channel) = read.ask(self.cache.channel(id)).await? {
            return Ok(channel);
        }
        self.cache.note_postgres_read();
        let channel = self.pg("load_channel", self.db.load_channel(id)).await?;
        read.postgres(channel.ok_or(Error::NotFound("channel")))
    }

    pub async fn members(&self, id: ChannelId) -> Result<Vec<MemberSummary>, Error> {
        self.traced(id, 0);
        let mut read = self.read(Some(Kind::Members));
        if let Some(members) = read.ask(self.cache.members(id)).await? {
            return Ok(members.summaries());
        }
        self.cache.note_postgres_read();
        let members = self.pg("load_members", self.db.load_members(id)).await?;
        read.postgres(members.ok_or(Error::NotFound("channel")))
    }

    pub async fn member(&self, channel: ChannelId, user: UserId) -> Result<Member, Error> {
        let mut read = self.read(Some(Kind::Members));
        if let Some(members) = read.ask(self.cache.members(channel)).await? {
            return members.get(user).cloned().ok_or(Error::NotFound("member"));
        }
        self.cache.note_postgres_read();
        let member = self
            .pg("load_member", self.db.load_member(channel, user))
            .await?;
        read.postgres(match member {
            MemberLookup::Member(m) => Ok(m),
            MemberLookup::NoChannel => Err(Error::NotFound("channel")),
            MemberLookup::NotMember => Err(Error::NotFound("member")),
        })
    }

    pub async fn put_member(
        &self,
        channel: ChannelId,
        user: UserId,
        role: Option<Role>,
    ) -> Result<Member, Error> {
        let member = self
            .pg(
                "upsert_member",
                self.db.upsert_member(channel, user, role.as_ref()),
            )
            .await?
            .ok_or(Error::NotFound("channel"))?;
        self.cache.after_members_change(channel).await;
        Ok(member)
    }

    pub async fn remove_member(&self, channel: ChannelId, user: UserId) -> Result<(), Error> {
        match self
            .pg("remove_member", self.db.remove_member(channel, user))
            .await?
        {
            MemberRemoval::Removed => {
                self.cache.after_members_change(channel).await;
                Ok(())
            }
            MemberRemoval::NoChannel => Err(Error::NotFound("channel")),
            MemberRemoval::NotMember => Err(Error::NotFound("member")),
        }
    }

    pub async fn post(
        &self,
        channel: ChannelId,
        new: NewMessage,
    ) -> Result<(Message, Posted), Error> {
        match self
            .pg("post_message", self.db.post_message(channel, &new))
            .await?
        {
            PostOutcome::Created(m) => {
                self.cache.after_post(&m).await;
                self.cache.learn_message_channel(&m);
                Ok((m, Posted::Created))
            }
            PostOutcome::Duplicate(m) => Ok((m, Posted::Duplicate)),
            PostOutcome::NoChannel => Err(Error::NotFound("channel")),
            PostOutcome::NotMember => Err(Error::Forbidden(
                "the sender is not a member of this channel".into(),
            )),
            PostOutcome::BadReplyTo => Err(Error::Invalid(InvalidInput(
                "reply_to_id is not a message of this channel".into(),
            ))),
        }
    }

    /// A page, encoded by `encode`. Pages served by the tiers are encoded once per cached
    /// window, so a hot page is not encoded again on every request.
    pub async fn page(
        &self,
        channel: ChannelId,
        request: PageRequest,
        encode: fn(&Page) -> bytes::Bytes,
    ) -> Result<bytes::Bytes, Error> {
        // Depth as the window sees it: a page past a cursor is marked as reaching past any
        // window (the cursor's depth is not known without the channel's ids).
        let depth = match request.cursor {
            crate::domain::Cursor::Latest => request.limit,
            _ => u32::MAX,
        };
        self.traced(channel, depth);
        let kind = match request.cursor {
            crate::domain::Cursor::Latest => Kind::LatestPage,
            _ => Kind::CursorPage,
        };
        let mut read = self.read(Some(kind));
        if let Some(body) = read.ask(self.cache.page(channel, request, encode)).await? {
            return Ok(body);
        }
        self.cache.note_postgres_read();
        let page = self
            .pg("load_page", self.db.load_page(channel, request))
            .await?
            .ok_or(Error::NotFound("channel"))?;
        Ok(read.postgres(encode(&page)))
    }

    pub async fn message(&self, id: MessageId) -> Result<Message, Error> {
        let mut read = self.read(Some(Kind::Message));
        let tiers = async {
            Ok(match self.cache.message(id).await? {
                (Some(message), path) => (Lookup::Found(message), path),
                (None, path) => (Lookup::Unavailable, path),
            })
        };
        if let Some(message) = read.ask(tiers).await? {
            return Ok(message);
        }
        self.cache.note_postgres_read();
        let message = self
            .pg("load_message", self.db.load_message(id))
            .await?
            .ok_or(Error::NotFound("message"))?;
        self.cache.learn_message_channel(&message);
        Ok(read.postgres(message))
    }

    pub async fn edit(&self, id: MessageId, content: Content) -> Result<Message, Error> {
        match self
            .pg("edit_message", self.db.edit_message(id, &content))
            .await?
        {
            EditOutcome::Edited(m) => {
                self.cache.after_rewrite(&m).await;
                Ok(m)
            }
            EditOutcome::NotFound => Err(Error::NotFound("message")),
            EditOutcome::Deleted => Err(Error::Conflict(
                "the message is deleted and cannot be edited".into(),
            )),
        }
    }

    pub async fn delete(&self, id: MessageId) -> Result<(), Error> {
        match self
            .pg("delete_message", self.db.delete_message(id))
            .await?
        {
            DeleteOutcome::Deleted(m) => {
                self.cache.after_rewrite(&m).await;
                Ok(())
            }
            DeleteOutcome::AlreadyDeleted => Ok(()),
            DeleteOutcome::NotFound => Err(Error::NotFound("message")),
        }
    }

    pub async fn mark_read(
        &self,
        channel: ChannelId,
        user: UserId,
        message: MessageId,
    ) -> Result<MessageId, Error> {
        match self
            .pg("mark_read", self.db.mark_read(channel, user, message))
            .await?
        {
            MarkReadOutcome::Marked(member) => {
                self.cache.after_mark_read(channel, &member).await;
                Ok(member.last_read_message_id.unwrap_or(message))
            }
            MarkReadOutcome::NoChannel => Err(Error::NotFound("channel")),
            MarkReadOutcome::NotMember => Err(not_a_member()),
            MarkReadOutcome::NotInChannel => Err(Error::Invalid(InvalidInput(
                "message_id is not a message of this channel".into(),
            ))),
        }
    }

    pub async fn unread(&self, channel: ChannelId, user: UserId) -> Result<i64, Error> {
        self.traced(channel, 0);
        let mut read = self.read(Some(Kind::Unread));
        if let Some(count) = read.ask(self.cache.unread(channel, user)).await? {
            return count.ok_or_else(not_a_member);
        }
        self.cache.note_postgres_read();
        let count = self
            .pg("unread_count", self.db.unread_count(channel, user))
            .await?;
        read.postgres(match count {
            UnreadOutcome::Count(n) => Ok(n),
            UnreadOutcome::NoChannel => Err(Error::NotFound("channel")),
            UnreadOutcome::NotMember => Err(not_a_member()),
        })
    }

    pub async fn user_unread(&self, user: UserId) -> Result<Vec<UnreadChannel>, Error> {
        let read = self.read(None);
        let unread = self.pg("user_unread", self.db.user_unread(user)).await;
        read.postgres(unread)
    }

    /// Channels L1 holds are answered from it; the rest in one Postgres snapshot.
    pub async fn sync(&self, request: SyncRequest) -> Result<SyncResult, Error> {
        let read = self.read(Some(Kind::Sync));
        let from_l1 = read.route == Route::Tiers;
        let limits = self.settings.sync;
        let user = request.user_id;
        let mut answered = std::collections::BTreeMap::new();
        let mut rest = SyncRequest {
            channels: Default::default(),
            user_id: user,
        };
        for (channel, since) in request.channels {
            self.traced(channel, 0);
            let cached = from_l1
                .then(|| self.cache.sync_channel(channel, since, user, limits))
                .flatten();
            match cached {
                Some(answer) => {
                    answered.insert(channel, answer);
                }
                None => {
                    rest.channels.insert(channel, since);
                }
            }
        }
        if rest.channels.is_empty() {
            read.record(Path::L1);
            return Ok(SyncResult {
                channels: answered,
                unknown: Vec::new(),
            });
        }
        self.cache.note_postgres_read();
        let mut result = self.pg("sync", self.db.sync(&rest, limits)).await?;
        result.channels.extend(answered);
        Ok(read.postgres(result))
    }
}

fn not_a_member() -> Error {
    Error::Forbidden("the user is not a member of this channel".into())
}
