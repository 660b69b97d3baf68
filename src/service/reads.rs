//! The reads of the contract: each asks the tiers, and Postgres when they cannot answer;
//! each is timed by the path that answered it. A read the cache can answer is answered by
//! it: no route is picked at run time.

use std::future::Future;
use std::time::Instant;

use std::sync::Arc;

use super::trace::Trace;
use super::{not_a_member, pg, Error};
use crate::cache::paths::Path;
use crate::cache::{Bound, HotCache, Lookup};
use crate::domain::{
    Channel, ChannelId, Member, MemberSummary, Message, MessageId, Page, PageRequest, SyncRequest,
    SyncResult, UnreadChannel, UserId,
};
use crate::metrics::Metrics;
use crate::postgres::{Db, DbError, MemberLookup, SyncLimits, UnreadOutcome};

/// A read in progress: timed from its start, and recorded under the path that answered.
pub(super) struct Read<'a> {
    cache: &'a HotCache,
    started: Instant,
    /// The path of a read the tiers sent to Postgres: `Fill` when both tiers missed.
    missed: Path,
}

impl<'a> Read<'a> {
    pub(super) fn start(cache: &'a HotCache) -> Read<'a> {
        Read {
            cache,
            started: Instant::now(),
            missed: Path::Postgres,
        }
    }

    /// The tiers' answer, recorded under the path that gave it; `None` when they cannot
    /// answer, and the caller asks Postgres.
    pub(super) async fn ask<T>(
        &mut self,
        tiers: impl Future<Output = Result<(Lookup<T>, Path), DbError>>,
    ) -> Result<Option<T>, Error> {
        let (lookup, path) = tiers.await?;
        let Lookup::Found(answer) = lookup else {
            self.missed = Path::Postgres;
            self.missed_on(path);
            return Ok(None);
        };
        self.record(path);
        Ok(Some(answer))
    }

    /// Notes that the tiers sent a part of the read to Postgres, by `path`: `Fill` when
    /// both tiers missed.
    pub(super) fn missed_on(&mut self, path: Path) {
        if path == Path::Fill {
            self.missed = Path::Fill;
        }
    }

    /// Records a read that Postgres answered.
    pub(super) fn postgres<T>(&self, answer: T) -> T {
        self.record(self.missed);
        answer
    }

    fn record(&self, path: Path) {
        self.cache.record_read(path, self.started.elapsed());
    }
}

/// The reads of the contract, and what they need: Postgres, the cache, and the trace of
/// channel reads (`serve --trace-file`).
pub struct Reads {
    db: Db,
    cache: Arc<HotCache>,
    metrics: Arc<Metrics>,
    sync: SyncLimits,
    trace: Option<Trace>,
}

impl Reads {
    pub(super) fn new(
        db: Db,
        cache: Arc<HotCache>,
        metrics: Arc<Metrics>,
        sync: SyncLimits,
    ) -> Reads {
        Reads {
            db,
            cache,
            metrics,
            sync,
            trace: None,
        }
    }

    /// Records every channel read into `trace`. Every read also goes to the sizing
    /// advisor ([`crate::cache::advice`]).
    pub(super) fn with_trace(mut self, trace: Trace) -> Reads {
        self.trace = Some(trace);
        self
    }

    /// The trace's queue, as a bound ([`crate::cache::Bound`]).
    pub(super) fn trace_bound(&self) -> Option<Bound> {
        self.trace.as_ref().map(|trace| Bound {
            name: "trace_lines",
            len: trace.backlog(),
            limit: super::trace::QUEUE,
        })
    }

    fn traced(&self, channel: ChannelId, depth: u32) {
        self.cache.advice().record(channel, depth);
        if let Some(trace) = &self.trace {
            trace.record(channel, depth);
        }
    }

    fn read(&self) -> Read<'_> {
        Read::start(&self.cache)
    }

    pub async fn channel(&self, id: ChannelId) -> Result<Channel, Error> {
        let mut read = self.read();
        if let Some(channel) = read.ask(self.cache.channels.channel(id)).await? {
            return Ok(channel);
        }
        self.cache.note_postgres_read();
        let channel = pg(&self.metrics, "load_channel", self.db.load_channel(id)).await?;
        read.postgres(channel.ok_or(Error::NotFound("channel")))
    }

    pub async fn members(&self, id: ChannelId) -> Result<Vec<MemberSummary>, Error> {
        self.traced(id, 0);
        let mut read = self.read();
        if let Some(members) = read.ask(self.cache.channels.members(id)).await? {
            return Ok(members.summaries());
        }
        self.cache.note_postgres_read();
        let members = pg(&self.metrics, "load_members", self.db.load_members(id)).await?;
        read.postgres(members.ok_or(Error::NotFound("channel")))
    }

    pub async fn member(&self, channel: ChannelId, user: UserId) -> Result<Member, Error> {
        let mut read = self.read();
        if let Some(members) = read.ask(self.cache.channels.members(channel)).await? {
            return members.get(user).cloned().ok_or(Error::NotFound("member"));
        }
        self.cache.note_postgres_read();
        let member = pg(
            &self.metrics,
            "load_member",
            self.db.load_member(channel, user),
        )
        .await?;
        read.postgres(match member {
            MemberLookup::Member(m) => Ok(m),
            MemberLookup::NoChannel => Err(Error::NotFound("channel")),
            MemberLookup::NotMember => Err(Error::NotFound("member")),
        })
    }

    /// A page, encoded by `encode`. Pages served by the tiers are encoded once per cached
    /// window, so a hot page is not encoded again on every request.
    ///
    /// An L1 hit is answered before any future of the read-through is built; the rest
    /// of the read is boxed, so the future of every page read (and of its handler) stays
    /// small to create and move.
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
        let read = self.read();
        if let Some(body) = self.cache.channels.page_hit(channel, request, encode) {
            read.record(Path::L1);
            return Ok(body);
        }
        Box::pin(self.page_through(read, channel, request, encode)).await
    }

    /// A page L1 did not answer: through the tiers, then Postgres.
    async fn page_through(
        &self,
        mut read: Read<'_>,
        channel: ChannelId,
        request: PageRequest,
        encode: fn(&Page) -> bytes::Bytes,
    ) -> Result<bytes::Bytes, Error> {
        if let Some(body) = read
            .ask(self.cache.channels.page(channel, request, encode))
            .await?
        {
            return Ok(body);
        }
        self.cache.note_postgres_read();
        let page = pg(
            &self.metrics,
            "load_page",
            self.db.load_page(channel, request),
        )
        .await?
        .ok_or(Error::NotFound("channel"))?;
        Ok(read.postgres(encode(&page)))
    }

    pub async fn message(&self, id: MessageId) -> Result<Message, Error> {
        let mut read = self.read();
        let tiers = async {
            Ok(match self.cache.channels.message(id).await? {
                (Some(message), path) => (Lookup::Found(message), path),
                (None, path) => (Lookup::Unavailable, path),
            })
        };
        if let Some(message) = read.ask(tiers).await? {
            return Ok(message);
        }
        self.cache.note_postgres_read();
        let message = pg(&self.metrics, "load_message", self.db.load_message(id))
            .await?
            .ok_or(Error::NotFound("message"))?;
        self.cache.channels.learn_message_channel(&message);
        Ok(read.postgres(message))
    }

    pub async fn unread(&self, channel: ChannelId, user: UserId) -> Result<i64, Error> {
        self.traced(channel, 0);
        let mut read = self.read();
        if let Some(count) = read.ask(self.cache.channels.unread(channel, user)).await? {
            return count.ok_or_else(not_a_member);
        }
        self.cache.note_postgres_read();
        let count = pg(
            &self.metrics,
            "unread_count",
            self.db.unread_count(channel, user),
        )
        .await?;
        read.postgres(match count {
            UnreadOutcome::Count(n) => Ok(n),
            UnreadOutcome::NoChannel => Err(Error::NotFound("channel")),
            UnreadOutcome::NotMember => Err(not_a_member()),
        })
    }

    pub async fn user_unread(&self, user: UserId) -> Result<Vec<UnreadChannel>, Error> {
        let read = self.read();
        let unread = pg(&self.metrics, "user_unread", self.db.user_unread(user)).await;
        read.postgres(unread)
    }

    /// Channels the tiers can answer are answered by them (read through, as latest
    /// pages are); the rest in one Postgres snapshot.
    pub async fn sync(&self, request: SyncRequest) -> Result<SyncResult, Error> {
        let mut read = self.read();
        let limits = self.sync;
        let user = request.user_id;
        let mut answered = std::collections::BTreeMap::new();
        let mut rest = SyncRequest {
            channels: Default::default(),
            user_id: user,
        };
        // Every channel at once: the tiers' reads of different channels share the Redis
        // connections' pipelines.
        let asks = request.channels.iter().map(|(&channel, &since)| {
            self.traced(channel, 0);
            async move {
                let answer = self
                    .cache
                    .channels
                    .sync_channel(channel, since, user, limits)
                    .await;
                (channel, since, answer)
            }
        });
        let mut answered_by = Path::L1;
        for (channel, since, answer) in futures::future::join_all(asks).await {
            match answer? {
                (Some(answer), path) => {
                    answered_by = answered_by.max(path);
                    answered.insert(channel, answer);
                }
                (None, path) => {
                    read.missed_on(path);
                    rest.channels.insert(channel, since);
                }
            }
        }
        if rest.channels.is_empty() {
            read.record(answered_by);
            return Ok(SyncResult {
                channels: answered,
                unknown: Vec::new(),
            });
        }
        self.cache.note_postgres_read();
        let mut result = pg(&self.metrics, "sync", self.db.sync(&rest, limits)).await?;
        result.channels.extend(answered);
        Ok(read.postgres(result))
    }
}
