//! The operations of the HTTP contract, in domain types. Reads ([`Reads`]) ask the cache
//! tiers first and Postgres when they cannot answer; writes (here, and [`Feeds`]' own) go
//! to Postgres, then through the tiers.
//! With `--cache off` every operation goes to Postgres alone.

mod error;
pub mod feeds;
mod reads;
pub mod trace;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use crate::cache::HotCache;
use crate::domain::{
    Channel, ChannelId, ChannelName, ChannelType, Content, InvalidInput, Member, Message,
    MessageId, Role, UserId,
};
use crate::metrics::Metrics;
use crate::postgres::{
    Db, DbError, DeleteOutcome, EditOutcome, MarkReadOutcome, MemberRemoval, NewMessage,
    PostOutcome, SyncLimits,
};

pub use error::Error;
pub use feeds::Feeds;
pub use reads::Reads;

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
    pub feeds: feeds::FeedConfig,
}

/// The operations of the contract: the reads ([`Reads`]), the feeds ([`Feeds`]), and the
/// channel writes (here).
pub struct Service {
    pub reads: Reads,
    pub feeds: Feeds,
    db: Db,
    cache: Arc<HotCache>,
    metrics: Arc<Metrics>,
}

impl Service {
    pub fn new(
        db: Db,
        cache: Arc<HotCache>,
        metrics: Arc<Metrics>,
        settings: ServiceSettings,
    ) -> Service {
        Service {
            reads: Reads::new(db.clone(), cache.clone(), metrics.clone(), settings.sync),
            feeds: Feeds::new(db.clone(), cache.clone(), metrics.clone(), settings.feeds),
            db,
            cache,
            metrics,
        }
    }

    /// Every bounded table and queue, the cache's and the trace's.
    pub fn bounds(&self) -> Vec<crate::cache::Bound> {
        let mut bounds = self.cache.bounds().to_vec();
        bounds.extend(self.reads.trace_bound());
        bounds
    }

    /// Records every channel read into `trace` (`serve --trace-file`).
    pub fn with_trace(mut self, trace: trace::Trace) -> Service {
        self.reads = self.reads.with_trace(trace);
        self
    }

    pub fn cache(&self) -> &HotCache {
        &self.cache
    }

    pub async fn create_channel(&self, new: NewChannel) -> Result<Channel, Error> {
        let created = pg(
            &self.metrics,
            "create_channel",
            self.db
                .create_channel(new.id, new.kind, new.name.as_ref(), &new.members),
        );
        created
            .await?
            .ok_or_else(|| Error::Conflict("a channel with this id exists".into()))
    }

    pub async fn put_member(
        &self,
        channel: ChannelId,
        user: UserId,
        role: Option<Role>,
    ) -> Result<Member, Error> {
        let (member, ticket) = pg(
            &self.metrics,
            "upsert_member",
            self.db.upsert_member(channel, user, role.as_ref()),
        )
        .await?
        .ok_or(Error::NotFound("channel"))?;
        self.cache
            .channels
            .after_members_change(channel, ticket)
            .await;
        Ok(member)
    }

    pub async fn remove_member(&self, channel: ChannelId, user: UserId) -> Result<(), Error> {
        match pg(
            &self.metrics,
            "remove_member",
            self.db.remove_member(channel, user),
        )
        .await?
        {
            MemberRemoval::Removed(ticket) => {
                self.cache
                    .channels
                    .after_members_change(channel, ticket)
                    .await;
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
        match pg(
            &self.metrics,
            "post_message",
            self.db.post_message(channel, &new),
        )
        .await?
        {
            PostOutcome::Created(m, ticket) => {
                self.cache.channels.after_post(&m, ticket).await;
                self.cache.channels.learn_message_channel(&m);
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

    pub async fn edit(&self, id: MessageId, content: Content) -> Result<Message, Error> {
        match pg(
            &self.metrics,
            "edit_message",
            self.db.edit_message(id, &content),
        )
        .await?
        {
            EditOutcome::Edited(m, ticket) => {
                self.cache.channels.after_rewrite(&m, ticket).await;
                Ok(m)
            }
            EditOutcome::NotFound => Err(Error::NotFound("message")),
            EditOutcome::Deleted => Err(Error::Conflict(
                "the message is deleted and cannot be edited".into(),
            )),
        }
    }

    pub async fn delete(&self, id: MessageId) -> Result<(), Error> {
        match pg(&self.metrics, "delete_message", self.db.delete_message(id)).await? {
            DeleteOutcome::Deleted(m, ticket) => {
                self.cache.channels.after_rewrite(&m, ticket).await;
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
        match pg(
            &self.metrics,
            "mark_read",
            self.db.mark_read(channel, user, message),
        )
        .await?
        {
            MarkReadOutcome::Marked(member, ticket) => {
                self.cache
                    .channels
                    .after_mark_read(channel, &member, ticket)
                    .await;
                Ok(member.last_read_message_id.unwrap_or(message))
            }
            MarkReadOutcome::NoChannel => Err(Error::NotFound("channel")),
            MarkReadOutcome::NotMember => Err(not_a_member()),
            MarkReadOutcome::NotInChannel => Err(Error::Invalid(InvalidInput(
                "message_id is not a message of this channel".into(),
            ))),
        }
    }
}

/// Runs one Postgres call and records its latency under `operation`.
async fn pg<T>(
    metrics: &Metrics,
    operation: &'static str,
    call: impl Future<Output = Result<T, DbError>>,
) -> Result<T, Error> {
    let started = Instant::now();
    let result = call.await;
    metrics.record_postgres_call(operation, started.elapsed());
    Ok(result?)
}

fn not_a_member() -> Error {
    Error::Forbidden("the user is not a member of this channel".into())
}
