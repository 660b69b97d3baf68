//! The Redis side of activity feeds (`lua/README.md` "Keys of a feed"): per user, in one
//! hash slot `{u:<user id>}`, a list of the newest event ids, its meta hash and its fence
//! version; per event, one body under `{e:<event id>}`, shared by every feed.

use fred::prelude::KeysInterface;
use fred::types::{Expiration, SetOptions, Value};

use super::{codec, fresh_version, hash_tag, version_of, Redis, RedisError};
use crate::domain::feed::{Event, EventId, FeedWindow};
use crate::domain::{Scope, UserId};

/// Written into a feed's meta hash; a reader with another value treats it as a miss.
const FEED_FORMAT: &str = "1";

/// Users whose fence versions one `MGET` asks for; their script calls (for the users
/// who have one) are in flight together.
const TOPS_AT_ONCE: usize = 1000;

/// A recipient's feed in Redis, as a delivery finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedState {
    /// No fence version: nothing cached and no fill in flight, here or in any L1 (a feed
    /// read keeps the version alive as long as what it read).
    NoVersion,
    /// A version (now bumped), no feed.
    Uncached,
    /// A cached feed, with its newest id.
    Cached(i64),
}

/// What a feed read found.
pub enum FeedRead {
    Hit(FeedWindow),
    /// Not cached; a fill must present this version.
    Miss(String),
}

fn int(value: &Value) -> Option<i64> {
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

impl Redis {
    fn feed_keys(&self, user: UserId) -> Vec<String> {
        let p = &self.settings.prefix;
        let tag = hash_tag(Scope::Feed(user)).unwrap_or_default();
        vec![
            format!("{p}:{{{tag}}}:feed"),
            format!("{p}:{{{tag}}}:fmeta"),
            format!("{p}:{{{tag}}}:fver"),
        ]
    }

    /// The fence version's key alone (`feed_keys(user)[2]`), for the writers' `MGET`.
    fn version_key(&self, user: UserId) -> String {
        let tag = hash_tag(Scope::Feed(user)).unwrap_or_default();
        format!("{}:{{{tag}}}:fver", self.settings.prefix)
    }

    fn body_key(&self, id: EventId) -> String {
        let tag = hash_tag(Scope::Event(id)).unwrap_or_default();
        format!("{}:{{{tag}}}", self.settings.prefix)
    }

    pub async fn read_feed(&self, user: UserId) -> Result<FeedRead, RedisError> {
        let args = vec![fresh_version(), self.ttl_ms(), Value::from(FEED_FORMAT)];
        let answer = self
            .eval(&self.scripts.read_feed, self.feed_keys(user), args)
            .await?;
        let mut parts = answer.into_array().into_iter();
        match parts.next().and_then(|v| v.as_i64()) {
            Some(1) => {
                let complete = parts.next().as_ref().and_then(int) == Some(1);
                let seen = parts.next().as_ref().and_then(int).map(EventId);
                let ids = parts
                    .next()
                    .ok_or(RedisError::Protocol)?
                    .into_array()
                    .iter()
                    .map(|v| int(v).map(EventId).ok_or(RedisError::Protocol))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(FeedRead::Hit(FeedWindow {
                    ids,
                    complete,
                    seen,
                }))
            }
            Some(0) => Ok(FeedRead::Miss(version_of(parts.next())?)),
            _ => Err(RedisError::Protocol),
        }
    }

    /// Installs a feed read from Postgres if the version is unchanged, after storing the
    /// bodies of its events that Redis lacks (`SET NX`: a tombstone written by a delete
    /// is never replaced by an older live body). True when installed.
    pub async fn fill_feed(
        &self,
        user: UserId,
        version: &str,
        window: &FeedWindow,
        bodies: &[Event],
    ) -> Result<bool, RedisError> {
        let puts = bodies
            .iter()
            .map(|e| self.set_body(e, Some(SetOptions::NX)));
        futures::future::try_join_all(puts).await?;
        let mut args = Vec::with_capacity(5 + window.ids.len());
        args.extend([
            Value::from(version),
            self.ttl_ms(),
            Value::from(i64::from(window.complete)),
            Value::from(window.seen.map_or(String::new(), |s| s.0.to_string())),
            Value::from(FEED_FORMAT),
        ]);
        args.extend(window.ids.iter().map(|id| Value::from(id.0)));
        let answer = self
            .eval(&self.scripts.fill_feed, self.feed_keys(user), args)
            .await?;
        Ok(answer.as_i64() == Some(1))
    }

    /// For each user, their feed's state ([`FeedState`]). Bumps the fence version of every
    /// user who has one (a delivery just committed).
    ///
    /// One `MGET` of the fence versions first, [`TOPS_AT_ONCE`] users at a time: a user
    /// with no version has no cached feed and no fill in flight (a reader that misses
    /// makes the version before it reads Postgres), so only the others need the script.
    /// A version made after this `MGET` belongs to a reader whose Postgres read comes
    /// after the delivery's commit, so skipping that user is safe.
    pub async fn feed_tops(&self, users: &[UserId]) -> Result<Vec<FeedState>, RedisError> {
        let mut tops = Vec::with_capacity(users.len());
        for chunk in users.chunks(TOPS_AT_ONCE) {
            let versions: Vec<String> = chunk.iter().map(|&u| self.version_key(u)).collect();
            let present = self.mget(versions).await?;
            if present.iter().all(Value::is_null) {
                // The common case for a large audience: nobody's feed is cached.
                tops.extend(std::iter::repeat_n(FeedState::NoVersion, chunk.len()));
                continue;
            }
            let calls = chunk.iter().zip(&present).map(|(&u, version)| async move {
                if version.is_null() {
                    return Ok(FeedState::NoVersion);
                }
                let args = vec![self.ttl_ms(), Value::from(0), Value::from("?")];
                let answer = self
                    .eval_write(&self.scripts.feed_deliver, self.feed_keys(u), args)
                    .await?;
                Ok::<_, RedisError>(match answer.as_i64() {
                    Some(top) if top >= 0 => FeedState::Cached(top),
                    _ => FeedState::Uncached,
                })
            });
            tops.extend(futures::future::try_join_all(calls).await?);
        }
        Ok(tops)
    }

    /// Appends `ids` (ascending) onto a cached feed whose newest id is `prev`; else drops
    /// it. 1 appended, -1 dropped, -2 not cached.
    pub async fn feed_deliver(
        &self,
        user: UserId,
        prev: i64,
        ids: &[EventId],
        hot: usize,
    ) -> Result<i64, RedisError> {
        let mut args = vec![
            self.ttl_ms(),
            Value::from(hot as i64),
            Value::from(prev.to_string()),
        ];
        args.extend(ids.iter().map(|id| Value::from(id.0)));
        let answer = self
            .eval_write(&self.scripts.feed_deliver, self.feed_keys(user), args)
            .await?;
        answer.as_i64().ok_or(RedisError::Protocol)
    }

    /// Drops a user's cached feed and bumps its fence version (a feed written while Redis
    /// could not be told). The delivery script with a `prev` no feed can have (-1) does
    /// exactly that.
    pub async fn drop_feed(&self, user: UserId) -> Result<(), RedisError> {
        self.feed_deliver(user, -1, &[], 1).await.map(|_| ())
    }

    /// Drops an event's body (a delete written while Redis could not be told): the next
    /// read takes the tombstone from Postgres.
    pub async fn drop_body(&self, id: EventId) -> Result<(), RedisError> {
        self.delete(vec![self.body_key(id).into()])
            .await
            .map(|_| ())
    }

    /// Moves a cached feed's unseen marker forward.
    pub async fn feed_seen(&self, user: UserId, seen: EventId) -> Result<(), RedisError> {
        let keys = self.feed_keys(user)[1..].to_vec();
        self.eval_write(&self.scripts.feed_seen, keys, vec![Value::from(seen.0)])
            .await?;
        Ok(())
    }

    /// Stores an event's body (a new event, or a tombstone over a live one).
    pub async fn put_body(&self, event: &Event) -> Result<(), RedisError> {
        self.set_body(event, None).await
    }

    /// Stores an event's body unless Redis has one (a tombstone is never replaced).
    pub async fn put_body_if_absent(&self, event: &Event) -> Result<(), RedisError> {
        self.set_body(event, Some(SetOptions::NX)).await
    }

    async fn set_body(&self, event: &Event, options: Option<SetOptions>) -> Result<(), RedisError> {
        let ttl = self.settings.ttl.as_millis() as i64;
        let bytes = codec::encode_event(event);
        let key = self.body_key(event.id);
        let node = self.nodes.for_key(key.as_bytes());
        let client = node.client();
        let link = self.link_epoch();
        let _: Value = self
            .bounded(client.set(
                key,
                Value::Bytes(bytes.into()),
                Some(Expiration::PX(ttl)),
                options,
                false,
            ))
            .await?;
        self.replicated(&node, client, link).await
    }

    /// The bodies of these events, `None` where Redis has none (or one this build cannot
    /// read).
    pub async fn bodies(&self, ids: &[EventId]) -> Result<Vec<Option<Event>>, RedisError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|&id| self.body_key(id)).collect();
        let values = self.mget(keys).await?;
        Ok(values
            .iter()
            .map(|v| v.as_bytes().and_then(codec::decode_event))
            .collect())
    }
}
