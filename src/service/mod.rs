//! The operations of the HTTP contract, in domain types. This is where the cache tiers
//! sit between the API and Postgres; with `--cache off` (and until the tiers land, with
//! every mode) each operation goes to Postgres.

mod error;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use crate::config::CacheMode;
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
    pub cache: CacheMode,
    pub sync: SyncLimits,
}

pub struct Service {
    db: Db,
    metrics: Arc<Metrics>,
    settings: ServiceSettings,
}

impl Service {
    pub fn new(db: Db, metrics: Arc<Metrics>, settings: ServiceSettings) -> Service {
        Service {
            db,
            metrics,
            settings,
        }
    }

    pub fn cache_mode(&self) -> CacheMode {
        self.settings.cache
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
        self.pg("load_channel", self.db.load_channel(id))
            .await?
            .ok_or(Error::NotFound("channel"))
    }

    pub async fn members(&self, id: ChannelId) -> Result<Vec<MemberSummary>, Error> {
        self.pg("load_members", self.db.load_members(id))
            .await?
            .ok_or(Error::NotFound("channel"))
    }

    pub async fn member(&self, channel: ChannelId, user: UserId) -> Result<Member, Error> {
        match self
            .pg("load_member", self.db.load_member(channel, user))
            .await?
        {
            MemberLookup::Member(m) => Ok(m),
            MemberLookup::NoChannel => Err(Error::NotFound("channel")),
            MemberLookup::NotMember => Err(Error::NotFound("member")),
        }
    }

    pub async fn put_member(
        &self,
        channel: ChannelId,
        user: UserId,
        role: Option<Role>,
    ) -> Result<Member, Error> {
        self.pg(
            "upsert_member",
            self.db.upsert_member(channel, user, role.as_ref()),
        )
        .await?
        .ok_or(Error::NotFound("channel"))
    }

    pub async fn remove_member(&self, channel: ChannelId, user: UserId) -> Result<(), Error> {
        match self
            .pg("remove_member", self.db.remove_member(channel, user))
            .await?
        {
            MemberRemoval::Removed => Ok(()),
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
            PostOutcome::Created(m) => Ok((m, Posted::Created)),
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

    pub async fn page(&self, channel: ChannelId, request: PageRequest) -> Result<Page, Error> {
        self.pg("load_page", self.db.load_page(channel, request))
            .await?
            .ok_or(Error::NotFound("channel"))
    }

    pub async fn message(&self, id: MessageId) -> Result<Message, Error> {
        self.pg("load_message", self.db.load_message(id))
            .await?
            .ok_or(Error::NotFound("message"))
    }

    pub async fn edit(&self, id: MessageId, content: Content) -> Result<Message, Error> {
        match self
            .pg("edit_message", self.db.edit_message(id, &content))
            .await?
        {
            EditOutcome::Edited(m) => Ok(m),
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
            DeleteOutcome::Deleted(_) | DeleteOutcome::AlreadyDeleted => Ok(()),
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
            MarkReadOutcome::Marked(m) => Ok(m),
            MarkReadOutcome::NoChannel => Err(Error::NotFound("channel")),
            MarkReadOutcome::NotMember => Err(not_a_member()),
            MarkReadOutcome::NotInChannel => Err(Error::Invalid(InvalidInput(
                "message_id is not a message of this channel".into(),
            ))),
        }
    }

    pub async fn unread(&self, channel: ChannelId, user: UserId) -> Result<i64, Error> {
        match self
            .pg("unread_count", self.db.unread_count(channel, user))
            .await?
        {
            UnreadOutcome::Count(n) => Ok(n),
            UnreadOutcome::NoChannel => Err(Error::NotFound("channel")),
            UnreadOutcome::NotMember => Err(not_a_member()),
        }
    }

    pub async fn user_unread(&self, user: UserId) -> Result<Vec<UnreadChannel>, Error> {
        self.pg("user_unread", self.db.user_unread(user)).await
    }

    pub async fn sync(&self, request: SyncRequest) -> Result<SyncResult, Error> {
        self.pg("sync", self.db.sync(&request, self.settings.sync))
            .await
    }
}

fn not_a_member() -> Error {
    Error::Forbidden("the user is not a member of this channel".into())
}
