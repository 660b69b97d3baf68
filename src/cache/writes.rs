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
        self.write_through(c, &[Key::Window(c)], "append", call)
            .await;
        self.audit.sample(c);
    }

    /// Write-through of an edit or a delete: the window, and the runs of deep history
    /// (which a post never changes: it lands above every run).
    pub async fn after_rewrite(&self, message: &Message) {
        let call = self.tiers.redis.rewrite(message);
        let c = message.channel_id;
        let keys = [Key::Window(c), Key::History(c)];
        self.write_through(c, &keys, "rewrite", call).await;
        self.audit.sample(c);
    }

    /// Write-through of a membership change.
    pub async fn after_members_change(&self, channel: ChannelId) {
        let call = self.tiers.redis.drop_members(channel);
        self.write_through(channel, &[Key::Members(channel)], "drop_members", call)
            .await;
    }

    /// Write-through of a read marker; `member` as it is after the change.
    pub async fn after_mark_read(&self, channel: ChannelId, member: &Member) {
        let call = self.tiers.redis.mark_read(channel, member);
        self.write_through(channel, &[Key::Members(channel)], "mark_read", call)
            .await;
    }

    async fn write_through<T>(
        &self,
        channel: ChannelId,
        keys: &[Key],
        operation: &'static str,
        call: impl Future<Output = Result<T, RedisError>>,
    ) {
        if self.tiers.settings.mode == CacheMode::Off {
            return;
        }
        let reached =
            !self.tiers.breaker.is_open() && self.tiers.redis_call(operation, call).await.is_some();
        let mut published = reached;
        for &key in keys {
            self.tiers.l1.invalidate(key);
            published = published && self.publish(Invalidation::Key(key)).await;
        }
        if !published {
            self.missed_redis(&[Scope::Channel(channel)]).await;
        }
    }

    /// Drops a channel (or, with `None`, everything) from L1 here and on every instance, and
    /// from Redis. When Redis cannot be reached the drop is remembered and done later.
    pub async fn flush(&self, channel: Option<ChannelId>) {
        if self.tiers.settings.mode == CacheMode::Off {
            return;
        }
        let done = match channel {
            Some(c) => {
                self.tiers.l1.invalidate_channel(c);
                self.tiers
                    .redis_call("drop_channel", self.tiers.redis.drop_channel(c))
                    .await
                    .is_some()
                    && self.publish(Invalidation::Channel(c)).await
            }
            None => {
                self.tiers.l1.flush();
                self.tiers
                    .redis_call("delete_prefix", self.tiers.redis.delete_prefix())
                    .await
                    .is_some()
                    && self.publish(Invalidation::Everything).await
            }
        };
        if !done {
            self.missed_redis(&[channel.map_or(Scope::Everything, Scope::Channel)])
                .await;
        }
    }

    /// Publishes an invalidation for the other instances; false when it could not be sent.
    pub(super) async fn publish(&self, what: Invalidation) -> bool {
        self.publish_text(what.encode(&self.instance)).await
    }

    /// Publishes the invalidation of these users' feeds, a few hundred to a message.
    pub(super) async fn publish_feeds(&self, users: &[UserId]) -> bool {
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
