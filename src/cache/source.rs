//! The contract between the tier engine ([`super::tiers`]) and each kind of cached data
//! ([`super::sources`]): how a kind is keyed, read from Redis, loaded from Postgres and
//! installed through its fence.

use std::future::Future;

use futures::future::BoxFuture;

use super::fills::FillKey;
use super::l1::{Entry, Key};
use super::{CacheSettings, Hooks};
use crate::domain::Scope;
use crate::postgres::{Db, DbError};
use crate::redis::{Redis, RedisError};

/// What a Redis read of a key found.
pub enum RedisRead {
    Hit(Entry),
    /// Not cached; a fill must present this fence version.
    Miss(String),
}

/// One kind of cached data, as the engine reads and fills it.
pub trait Source: Sync {
    /// What L1 and Redis answer with.
    type Value;
    /// What a fill reads from Postgres and installs.
    type Row: Send + Sync;

    /// Its L1 key.
    fn key(&self) -> Key;
    /// Its fill (and presence mark).
    fn fill_key(&self) -> FillKey;
    /// What a write to it dirties.
    fn scope(&self) -> Scope;
    /// Whether this instance remembers if Redis holds it ([`Presence`]); without marks
    /// every L1 miss asks Redis.
    fn marks_presence(&self) -> bool {
        true
    }
    /// The typed value of an entry of its key.
    fn value(entry: Entry) -> Option<Self::Value>;
    /// The names its calls are timed under: (Redis read, Postgres load, Redis fill).
    fn operations(&self) -> [&'static str; 3];

    /// One Redis read.
    fn read(&self, redis: &Redis) -> impl Future<Output = Result<RedisRead, RedisError>> + Send;
    /// The Postgres read of a fill; `None` when there is nothing to install (the channel
    /// does not exist, a run would not answer its page).
    fn load(
        &self,
        db: &Db,
        settings: &CacheSettings,
    ) -> impl Future<Output = Result<Option<Self::Row>, DbError>> + Send;
    /// The fenced install of what `load` read: true when the fence let it in.
    fn install(
        &self,
        redis: &Redis,
        version: &str,
        row: &Self::Row,
        settings: &CacheSettings,
    ) -> impl Future<Output = Result<bool, RedisError>> + Send;
    /// The L1 entry of a row a fill installed, for a source L1 keeps whole; `None` (the
    /// default) leaves L1 to load it from Redis on the next read.
    fn entry(&self, _row: Self::Row) -> Option<Entry> {
        None
    }
    /// Whether a miss is answered by its fill ([`Tiers::read_through`]): true when
    /// [`Source::answer`] makes an entry of every row.
    fn answers_fills(&self) -> bool {
        false
    }
    /// The entry a row a fill installed answers its readers with.
    fn answer(&self, row: Self::Row) -> Option<Entry> {
        self.entry(row)
    }
    /// A test hook to await between the load and the install.
    fn hook(&self, _hooks: &Hooks) -> Option<BoxFuture<'static, ()>> {
        None
    }
}
