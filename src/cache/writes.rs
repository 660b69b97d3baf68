//! Write-through: after Postgres commits, the channel's script in Redis, the local L1
//! entry, and an invalidation for the other instances; a write that cannot reach Redis
//! marks its channel dirty and announces it through Postgres.

use std::future::Future;

use super::invalidation::Invalidation;
use super::l1::Key;
use super::stats::bump;
use super::CacheMode;
use super::HotCache;
use crate::domain::{ChannelId, Member, Message, Scope, UserId};
use crate::redis::RedisError;

impl HotCache {
    /// Write-through of a post.
    pub async fn after_post(&self, message: &Message) {
        let call = self
            .tiers
            .redis
            .append(message, self.tiers.settings.hot_window);
        let c = message.channel_id;
        let changed = [Invalidation::Key(Key::Window(c))];
        self.write_through("append", call, &changed).await;
        self.audit.sample(c);
    }

    /// Write-through of an edit or a delete: the window, and the runs of deep history
    /// (which a post never changes: it lands above every run).
    pub async fn after_rewrite(&self, message: &Message) {
        let call = self.tiers.redis.rewrite(message);
        let c = message.channel_id;
        let changed = [Key::Window(c), Key::History(c)].map(Invalidation::Key);
        self.write_through("rewrite", call, &changed).await;
        self.audit.sample(c);
    }

    /// Write-through of a membership change.
    pub async fn after_members_change(&self, channel: ChannelId) {
        let call = self.tiers.redis.drop_members(channel);
        let changed = [Invalidation::Key(Key::Members(channel))];
        self.write_through("drop_members", call, &changed).await;
    }

    /// Write-through of a read marker; `member` as it is after the change.
    pub async fn after_mark_read(&self, channel: ChannelId, member: &Member) {
        let call = self.tiers.redis.mark_read(channel, member);
        let changed = [Invalidation::Key(Key::Members(channel))];
        self.write_through("mark_read", call, &changed).await;
    }

    /// A write-through: the write's Redis `call` (not while the breaker is open), then
    /// [`HotCache::settle`] with what it `changed`. `None` when the cache is off or the
    /// call did not reach Redis.
    pub(super) async fn write_through<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, RedisError>>,
        changed: &[Invalidation],
    ) -> Option<T> {
        if self.tiers.settings.mode == CacheMode::Off {
            return None;
        }
        let answer = match self.tiers.breaker.is_open() {
            true => None,
            false => self.tiers.redis_call(operation, call).await,
        };
        self.settle(answer.is_some(), changed).await;
        answer
    }

    /// The step every write-through ends with, once its Redis step did (`reached`) or did
    /// not reach Redis: drops what it `changed` from L1 here, tells the other instances,
    /// and when either Redis step failed, marks those scopes dirty and announces them
    /// through Postgres ([`super::notices`]).
    pub(super) async fn settle(&self, reached: bool, changed: &[Invalidation]) {
        for &what in changed {
            self.apply(what);
        }
        if reached && self.publish_all(changed).await {
            return;
        }
        let mut scopes: Vec<Scope> = changed.iter().map(Invalidation::scope).collect();
        scopes.sort();
        scopes.dedup();
        self.missed_redis(&scopes).await;
    }

    /// Drops a channel (or, with `None`, everything) from Redis, from L1 here and on every
    /// instance. When Redis cannot be reached the drop is remembered and done later.
    pub async fn flush(&self, channel: Option<ChannelId>) {
        let redis = &self.tiers.redis;
        match channel {
            Some(c) => {
                let call = redis.drop_channel(c);
                self.write_through("drop_channel", call, &[Invalidation::Channel(c)])
                    .await;
            }
            None => {
                let call = redis.delete_prefix();
                self.write_through("delete_prefix", call, &[Invalidation::Everything])
                    .await;
            }
        }
    }

    /// Publishes these invalidations for the other instances (users' feeds a few hundred
    /// to a message); false when one could not be sent.
    async fn publish_all(&self, changed: &[Invalidation]) -> bool {
        let feeds: Vec<UserId> = changed
            .iter()
            .filter_map(|what| match what {
                Invalidation::Key(Key::Feed(user)) => Some(*user),
                _ => None,
            })
            .collect();
        for &what in changed {
            if !matches!(what, Invalidation::Key(Key::Feed(_))) && !self.publish(what).await {
                return false;
            }
        }
        feeds.is_empty() || self.publish_feeds(&feeds).await
    }

    /// Publishes an invalidation for the other instances; false when it could not be sent.
    async fn publish(&self, what: Invalidation) -> bool {
        self.publish_text(what.encode(&self.instance)).await
    }

    /// Publishes the invalidation of these users' feeds, a few hundred to a message.
    async fn publish_feeds(&self, users: &[UserId]) -> bool {
        let messages = users
            .chunks(super::invalidation::FEEDS_PER_MESSAGE)
            .map(|chunk| {
                self.publish_text(super::invalidation::encode_feeds(&self.instance, chunk))
            });
        futures::future::join_all(messages)
            .await
            .into_iter()
            .all(|sent| sent)
    }

    async fn publish_text(&self, message: String) -> bool {
        if self.tiers.breaker.is_open() {
            return false;
        }
        let sent = self
            .tiers
            .redis_call(
                "publish",
                self.tiers
                    .redis
                    .publish(&self.tiers.redis.invalidation_channel(), message),
            )
            .await
            .is_some();
        if sent {
            bump(&self.tiers.stats.invalidations_sent);
        }
        sent
    }
}
