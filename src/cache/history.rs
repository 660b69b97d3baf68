//! Deep history: pages past a cursor that the hot window cannot answer, served from runs
//! of the channel's live messages ([`crate::domain::history`]) kept in L1 (in their own
//! budget, `--history-l1-bytes`) and in Redis (at most [`RUNS_KEPT`] runs a channel).
//!
//! The same machinery as windows: a read looks in L1, then in Redis (one round trip that
//! also hands out the fence version); a miss is answered by Postgres at once and queues a
//! fenced fill ([`super::fills`], admitted on the channel's second miss). An edit or delete
//! drops the runs whose range holds the message, in Redis (`lua/rewrite.lua`, which also
//! bumps the fence) and in every instance's L1 (pub/sub, as for windows).

use std::sync::Arc;

use futures::future::BoxFuture;

use super::fills::{FillKey, What};
use super::l1::{Entry, Key, Loaded};
use super::paths::Path;
use super::stats::bump;
use super::tiers::{RedisRead, Source, Tiers};
use super::{CacheSettings, Hooks};
use crate::domain::history::{History, Run};
use crate::domain::Scope;
use crate::domain::{ChannelId, Cursor, Page, PageRequest};
use crate::postgres::history::Anchor;
use crate::postgres::{Db, DbError};
use crate::redis::{Redis, RedisError};

/// Runs of one channel kept in Redis and in L1: the newest tops, where pagers start.
pub const RUNS_KEPT: usize = 16;

/// A page past a cursor from deep history; `None` when Postgres must answer (the path
/// then says whether both tiers missed).
pub(super) async fn page(
    tiers: &Tiers,
    channel: ChannelId,
    request: PageRequest,
    reach: super::Reach,
) -> Result<(Option<Page>, Path), DbError> {
    if request.cursor == Cursor::Latest || !tiers.usable(Scope::Channel(channel)) {
        return Ok((None, Path::Postgres));
    }
    let key = Key::History(channel);
    if let Some(Entry::History(held)) = tiers.l1.peek(key) {
        if let Some(page) = held.page(request) {
            bump(&tiers.stats.history_l1_hits);
            return Ok((Some(page), Path::L1));
        }
    }
    if reach == super::Reach::L1 {
        return Ok((None, Path::Postgres));
    }
    // Each reader reads Redis for its own cursor (a read shared among readers of
    // other cursors would not hold their pages); what it finds joins what L1 holds,
    // unless an edit or delete of the channel came in between.
    let ticket = tiers.l1.ticket(key);
    Ok(match read_run(tiers, channel, request).await? {
        Loaded::Found(Entry::History(held), path) => {
            let page = held.page(request);
            tiers.l1.install_with(key, ticket, Entry::History(held));
            (page, path)
        }
        Loaded::Missed => (None, Path::Fill),
        _ => (None, Path::Postgres),
    })
}

/// L1's load of deep history for one page: the run Redis holds for the cursor, added to
/// the runs L1 holds; or, when no run there answers, a queued fill at the cursor.
async fn read_run(
    tiers: &Tiers,
    channel: ChannelId,
    request: PageRequest,
) -> Result<Loaded, DbError> {
    let fill = FillKey::Channel(channel, What::History(request));
    if !tiers.presence.likely(fill) {
        return Ok(tiers.skip_redis(fill));
    }
    let read = tiers.redis.read_history(channel, request.cursor);
    let Some(Some(found)) = tiers
        .redis_call(Scope::Channel(channel), "read_history", read)
        .await
    else {
        return Ok(Loaded::Unavailable);
    };
    match found.run {
        Some(run) if run.page(request).is_some() => {
            bump(&tiers.stats.history_redis_hits);
            let held = match tiers.l1.peek(Key::History(channel)) {
                Some(Entry::History(held)) => held.with(Arc::new(run), RUNS_KEPT),
                _ => History::default().with(Arc::new(run), RUNS_KEPT),
            };
            Ok(Loaded::Found(Entry::History(Arc::new(held)), Path::Redis))
        }
        // No run covers the cursor, or the one that does ends too soon: a new run
        // starts at the cursor; unless the page goes up past a run that already
        // reached the newest message (a new one would end there too).
        found_run => {
            bump(&tiers.stats.history_misses);
            let at_newest =
                matches!(request.cursor, Cursor::After(_)) && found_run.is_some_and(|r| r.open);
            if !at_newest {
                tiers.queue_fill(fill, Some(found.version));
            }
            Ok(Loaded::Missed)
        }
    }
}

/// The run of deep history that starts at the cursor of a page it must answer. Its reads
/// are not shared ([`page`]: each reader has its own cursor); its fills and
/// probes go through the engine like any other.
pub struct HistorySource {
    pub channel: ChannelId,
    pub page: PageRequest,
}

impl Source for HistorySource {
    type Value = Arc<History>;
    type Row = Run;

    fn key(&self) -> Key {
        Key::History(self.channel)
    }
    fn fill_key(&self) -> FillKey {
        FillKey::Channel(self.channel, What::History(self.page))
    }
    fn scope(&self) -> Scope {
        Scope::Channel(self.channel)
    }
    fn value(entry: Entry) -> Option<Self::Value> {
        match entry {
            Entry::History(h) => Some(h),
            _ => None,
        }
    }
    fn operations(&self) -> [&'static str; 3] {
        ["read_history", "load_run", "fill_history"]
    }
    /// A hit only when the run Redis holds for the cursor answers the page.
    async fn read(&self, redis: &Redis) -> Result<RedisRead, RedisError> {
        let Some(found) = redis.read_history(self.channel, self.page.cursor).await? else {
            // The latest page, which deep history never answers: a version no fill can
            // present.
            return Ok(RedisRead::Miss(String::new()));
        };
        Ok(match found.run {
            Some(run) if run.page(self.page).is_some() => RedisRead::Hit(Entry::History(Arc::new(
                History::default().with(Arc::new(run), RUNS_KEPT),
            ))),
            _ => RedisRead::Miss(found.version),
        })
    }
    /// A run that would not answer the page itself (the newest messages, going up) is
    /// not kept: it would only push useful ones out.
    async fn load(&self, db: &Db, _: &CacheSettings) -> Result<Option<Run>, DbError> {
        let anchor = match self.page.cursor {
            Cursor::After(x) => Anchor::Up(x),
            Cursor::Before(x) => Anchor::Down(x),
            Cursor::Latest => return Ok(None),
        };
        let run = db.load_run(self.channel, anchor).await?;
        Ok(run.filter(|run| run.page(self.page).is_some()))
    }
    async fn install(
        &self,
        redis: &Redis,
        version: &str,
        run: &Run,
        _: &CacheSettings,
    ) -> Result<bool, RedisError> {
        redis
            .fill_history(self.channel, version, run, RUNS_KEPT)
            .await
    }
    fn hook(&self, hooks: &Hooks) -> Option<BoxFuture<'static, ()>> {
        hooks
            .after_history_read
            .as_ref()
            .map(|hook| hook(self.channel))
    }
}
