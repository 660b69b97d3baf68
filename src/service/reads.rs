//! The reads of the contract: each asks the tiers when the cost gate sends it there
//! ([`crate::cache::gate`]), and Postgres when they cannot answer; each is timed by the
//! path that answered it.

use std::future::Future;
use std::time::Instant;

use super::{not_a_member, Error, Service};
use crate::cache::gate::{self, Kind, Route};
use crate::cache::paths::Path;
use crate::cache::{HotCache, Lookup, Reach};
use crate::domain::{
    Channel, ChannelId, Member, MemberSummary, Message, MessageId, Page, PageRequest, SyncRequest,
    SyncResult, UnreadChannel, UserId,
};
use crate::postgres::{DbError, MemberLookup, UnreadOutcome};

/// A read in progress: timed from its start, recorded under the path that answered, and
/// judged with the route the cost gate gave it ([`crate::cache::gate`]).
pub(super) struct Read<'a> {
    cache: &'a HotCache,
    started: Instant,
    /// `None` for reads only Postgres answers: not judged.
    kind: Option<Kind>,
    route: Route,
    /// The path of a read the tiers sent to Postgres: `Fill` when both tiers missed.
    missed: Path,
}

impl Read<'_> {
    /// Asks the tiers as far as the gate's route lets it: all of them on the tiers' route;
    /// only what L1 already holds on Postgres's (a hit costs nothing, and is not judged).
    /// `None` when they cannot answer, and the caller asks Postgres. Fills queued here are
    /// charged to this kind of read.
    pub(super) async fn ask<T, F>(
        &mut self,
        tiers: impl FnOnce(Reach) -> F,
    ) -> Result<Option<T>, Error>
    where
        F: Future<Output = Result<(Lookup<T>, Path), DbError>>,
    {
        let Some(kind) = self.kind else {
            return Ok(None);
        };
        let reach = match self.route {
            Route::Tiers => Reach::Fill,
            Route::Postgres => Reach::L1,
        };
        let answer = gate::serving(kind, tiers(reach)).await?;
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
    pub(super) fn postgres<T>(&self, answer: T) -> T {
        self.record(self.missed);
        answer
    }

    /// Records the read under its path and, unless L1 answered a read the gate had sent
    /// to Postgres (neither route's cost), under its route.
    fn record(&self, path: Path) {
        let now = Instant::now();
        let elapsed = now - self.started;
        self.cache.record_read(path, elapsed);
        match self.kind {
            Some(_) if self.route == Route::Postgres && path == Path::L1 => {}
            Some(kind) => self.cache.gate().record(kind, self.route, elapsed, now),
            None => {}
        }
    }
}

impl Service {
    /// A read of `kind`, with the route the cost gate gives it; `None`: a read only
    /// Postgres answers.
    pub(super) fn read(&self, kind: Option<Kind>) -> Read<'_> {
        Read {
            cache: &self.cache,
            started: Instant::now(),
            kind,
            route: kind.map_or(Route::Postgres, |kind| self.cache.gate().route(kind)),
            missed: Path::Postgres,
        }
    }

    pub async fn channel(&self, id: ChannelId) -> Result<Channel, Error> {
        let mut read = self.read(Some(Kind::Channel));
        if let Some(channel) = read.ask(|reach| self.cache.channel(id, reach)).await? {
            return Ok(channel);
        }
        self.cache.note_postgres_read();
        let channel = self.pg("load_channel", self.db.load_channel(id)).await?;
        read.postgres(channel.ok_or(Error::NotFound("channel")))
    }

    pub async fn members(&self, id: ChannelId) -> Result<Vec<MemberSummary>, Error> {
        self.traced(id, 0);
        let mut read = self.read(Some(Kind::Members));
        if let Some(members) = read.ask(|reach| self.cache.members(id, reach)).await? {
            return Ok(members.summaries());
        }
        self.cache.note_postgres_read();
        let members = self.pg("load_members", self.db.load_members(id)).await?;
        read.postgres(members.ok_or(Error::NotFound("channel")))
    }

    pub async fn member(&self, channel: ChannelId, user: UserId) -> Result<Member, Error> {
        let mut read = self.read(Some(Kind::Members));
        if let Some(members) = read.ask(|reach| self.cache.members(channel, reach)).await? {
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
        if let Some(body) = read
            .ask(|reach| self.cache.page(channel, request, reach, encode))
            .await?
        {
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
        let tiers = |reach| async move {
            Ok(match self.cache.message(id, reach).await? {
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

    pub async fn unread(&self, channel: ChannelId, user: UserId) -> Result<i64, Error> {
        self.traced(channel, 0);
        let mut read = self.read(Some(Kind::Unread));
        if let Some(count) = read
            .ask(|reach| self.cache.unread(channel, user, reach))
            .await?
        {
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

    /// Channels L1 holds are answered from it; the rest in one Postgres snapshot. Not
    /// judged by the cost gate: L1 is all a sync asks of the tiers, and a peek costs
    /// nothing.
    pub async fn sync(&self, request: SyncRequest) -> Result<SyncResult, Error> {
        let read = self.read(None);
        let limits = self.settings.sync;
        let user = request.user_id;
        let mut answered = std::collections::BTreeMap::new();
        let mut rest = SyncRequest {
            channels: Default::default(),
            user_id: user,
        };
        for (channel, since) in request.channels {
            self.traced(channel, 0);
            match self.cache.sync_channel(channel, since, user, limits) {
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
