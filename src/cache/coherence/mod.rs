//! Coherence: how every instance learns of what another one wrote, and how the cache
//! recovers what Redis missed.
//!
//! - [`invalidation`]: the wire format of invalidations on Redis pub/sub, the listener
//!   that applies other instances' invalidations to L1 (with its own heartbeat, so lost
//!   messages bypass L1 until they arrive again), and the repair task that drops dirty
//!   scopes from Redis once it answers.
//! - [`notices`]: the second path, through Postgres, for writes that could not reach
//!   Redis: the announcement in the write's wake, and the `LISTEN`ing connection that
//!   hears other instances' announcements and catches up after a disconnection.
//! - [`repair`]: the task that drops what Redis missed once it answers again.
//! - [`outbox`]: the third, for writes whose instance died between commit and cache:
//!   each write's row in the cache outbox, deleted once its cache step is done and
//!   replayed by any instance when it is not.
//!
//! [`Coherence`] holds both, and the write-through step every write ends with.
//!
//! The dirty set itself lives with the breaker ([`super::health`]); the tasks are started
//! in [`crate::tasks`].

pub mod invalidation;
pub mod notices;
pub mod outbox;
pub mod repair;

use std::future::Future;
use std::sync::Arc;

use invalidation::{Invalidation, Invalidations};
use notices::Notices;
use outbox::Outbox;
use tracing::warn;

use super::l1::{Entry, Key};
use super::tiers::Tiers;
use super::CacheMode;
use crate::crash;
use crate::domain::{ChannelId, Lsn, Scope};
use crate::postgres::{DbError, Ticket};
use crate::redis::RedisError;

/// What an L1 entry becomes after a write this instance made (`None`: drop it).
pub type Successor<'a> = dyn Fn(&Entry) -> Option<Entry> + Sync + 'a;

/// Coherence of one instance: its name, the pub/sub side and the Postgres side, and the
/// write-through step every write ends with.
pub struct Coherence {
    tiers: Arc<Tiers>,
    pub invalidations: Invalidations,
    pub notices: Notices,
    pub outbox: Outbox,
}

impl Coherence {
    pub fn new(tiers: Arc<Tiers>) -> Coherence {
        // This instance's name on the invalidation channel and in cache notices.
        let instance: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
        Coherence {
            invalidations: Invalidations::new(tiers.clone(), instance.clone()),
            notices: Notices::new(tiers.clone(), instance),
            outbox: Outbox::default(),
            tiers,
        }
    }

    /// A write-through: the write's Redis `call` (not while the breaker of its node is open), then
    /// [`Coherence::settle`] with what it `changed`, and the write's `ticket` in the cache
    /// outbox handed back. `None` when the cache is off or the call did not reach Redis.
    pub async fn write_through<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, RedisError>>,
        changed: &[Invalidation],
        ticket: Ticket,
    ) -> Option<T> {
        self.write_through_updating(operation, call, changed, None, ticket)
            .await
    }

    /// A write-through that, once Redis took the write, brings one L1 entry of this
    /// instance up to date in place rather than dropping it (`update`: the key, and the
    /// entry that follows the one L1 holds, `None` when it cannot tell); see
    /// [`super::l1::L1::replace`]. Every other instance drops the key, as after
    /// [`Coherence::write_through`].
    pub async fn write_through_updating<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, RedisError>>,
        changed: &[Invalidation],
        update: Option<(Key, &Successor<'_>)>,
        ticket: Ticket,
    ) -> Option<T> {
        let scopes: Vec<Scope> = changed.iter().map(Invalidation::scope).collect();
        let position = self.position(&scopes).await;
        if self.tiers.settings.mode == CacheMode::Off {
            return None;
        }
        crash::point(crash::AFTER_COMMIT);
        let answer = match self.raise(&scopes, &position).await {
            true => self.tiers.redis_call_many(&scopes, operation, call).await,
            false => None,
        };
        crash::point(crash::AFTER_REDIS);
        let reached = answer.is_some();
        for &what in changed {
            match (update, what) {
                (Some((key, next)), Invalidation::Key(k)) if reached && k == key => {
                    self.tiers.l1.replace(key, next);
                }
                _ => self.invalidations.apply(what),
            }
        }
        self.announce(reached, changed, ticket, position.ok().flatten())
            .await;
        answer
    }

    /// With read replicas, the WAL position of a write to `scopes` that just committed,
    /// learned as theirs ([`crate::postgres`]'s replicas); `Ok(None)` without replicas.
    pub async fn position(&self, scopes: &[Scope]) -> Result<Option<Lsn>, DbError> {
        self.tiers.db.wrote(scopes).await.inspect_err(|error| {
            warn!(%error, "cannot read the WAL position of a write: its cache step is skipped");
        })
    }

    /// Raises `scopes`' positions in Redis to the write's, before its own Redis step, so
    /// no fill from a replica that lacks the write gets past the fence. False when that
    /// failed (or the position could not be read): the write's Redis step is skipped and
    /// its scopes go dirty, as when Redis fails.
    pub async fn raise(&self, scopes: &[Scope], position: &Result<Option<Lsn>, DbError>) -> bool {
        let at = match *position {
            Ok(Some(at)) => at,
            Ok(None) => return true,
            Err(_) => return false,
        };
        let redis = &self.tiers.redis;
        self.tiers
            .redis_call_many(scopes, "raise_position", redis.raise_positions(scopes, at))
            .await
            .is_some()
    }

    /// The step every write-through ends with, once its Redis step did (`reached`) or did
    /// not reach Redis: drops what it `changed` from L1 here, tells the other instances,
    /// and when either Redis step failed, marks those scopes dirty and announces them
    /// through Postgres ([`notices`]). Then the write's `ticket` goes back to the outbox.
    pub async fn settle(
        &self,
        reached: bool,
        changed: &[Invalidation],
        ticket: Ticket,
        at: Option<Lsn>,
    ) {
        crash::point(crash::AFTER_REDIS);
        for &what in changed {
            self.invalidations.apply(what);
        }
        self.announce(reached, changed, ticket, at).await;
    }

    /// Tells the other instances what a write `changed`, and when its Redis step failed,
    /// marks those scopes dirty and announces them through Postgres. The write's row in
    /// the outbox goes once the others were told one way or the other; when neither way
    /// worked it stays, for any instance to replay.
    async fn announce(
        &self,
        reached: bool,
        changed: &[Invalidation],
        ticket: Ticket,
        at: Option<Lsn>,
    ) {
        if reached && self.invalidations.publish_all(changed, at).await {
            self.outbox.finish(ticket);
            return;
        }
        let mut scopes: Vec<Scope> = changed.iter().map(Invalidation::scope).collect();
        scopes.sort();
        scopes.dedup();
        if self.notices.missed_redis(&scopes).await {
            self.outbox.finish(ticket);
        }
    }

    /// Drops a channel (or, with `None`, everything) from Redis, from L1 here and on every
    /// instance. When Redis cannot be reached the drop is remembered and done later.
    pub async fn flush(&self, channel: Option<ChannelId>) {
        let redis = &self.tiers.redis;
        match channel {
            Some(c) => {
                let call = redis.drop_channel(c);
                let changed = [Invalidation::Channel(c)];
                self.write_through("drop_channel", call, &changed, Ticket::default())
                    .await;
            }
            None => {
                let call = redis.delete_prefix();
                let changed = [Invalidation::Everything];
                self.write_through("delete_prefix", call, &changed, Ticket::default())
                    .await;
            }
        }
    }
}
