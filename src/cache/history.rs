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

use super::fills::{FillKey, What};
use super::l1::{Entry, Key, Loaded};
use super::paths::Path;
use super::sources::RUNS_KEPT;
use super::stats::bump;
use super::HotCache;
use crate::domain::history::History;
use crate::domain::Scope;
use crate::domain::{ChannelId, Cursor, Page, PageRequest};
use crate::postgres::DbError;

impl HotCache {
    /// A page past a cursor from deep history; `None` when Postgres must answer (the path
    /// then says whether both tiers missed).
    pub(super) async fn history_page(
        &self,
        channel: ChannelId,
        request: PageRequest,
        reach: super::Reach,
    ) -> Result<(Option<Page>, Path), DbError> {
        if request.cursor == Cursor::Latest || !self.tiers.usable(Scope::Channel(channel)) {
            return Ok((None, Path::Postgres));
        }
        let key = Key::History(channel);
        if let Some(Entry::History(held)) = self.tiers.l1.peek(key) {
            if let Some(page) = held.page(request) {
                bump(&self.tiers.stats.history_l1_hits);
                return Ok((Some(page), Path::L1));
            }
        }
        if reach == super::Reach::L1 {
            return Ok((None, Path::Postgres));
        }
        // Each reader reads Redis for its own cursor (a read shared among readers of
        // other cursors would not hold their pages); what it finds joins what L1 holds,
        // unless an edit or delete of the channel came in between.
        let ticket = self.tiers.l1.ticket(key);
        Ok(match self.get_history_run(channel, request).await? {
            Loaded::Found(Entry::History(held), path) => {
                let page = held.page(request);
                self.tiers
                    .l1
                    .install_with(key, ticket, Entry::History(held));
                (page, path)
            }
            Loaded::Missed => (None, Path::Fill),
            _ => (None, Path::Postgres),
        })
    }

    /// L1's load of deep history for one page: the run Redis holds for the cursor, added
    /// to the runs L1 holds; or, when no run there answers, a queued fill at the cursor.
    async fn get_history_run(
        &self,
        channel: ChannelId,
        request: PageRequest,
    ) -> Result<Loaded, DbError> {
        let fill = FillKey::Channel(channel, What::History(request));
        if !self.tiers.presence.likely(fill) {
            return Ok(self.tiers.skip_redis(fill));
        }
        let read = self.tiers.redis.read_history(channel, request.cursor);
        let Some(Some(found)) = self.tiers.redis_call("read_history", read).await else {
            return Ok(Loaded::Unavailable);
        };
        match found.run {
            Some(run) if run.page(request).is_some() => {
                bump(&self.tiers.stats.history_redis_hits);
                let held = match self.tiers.l1.peek(Key::History(channel)) {
                    Some(Entry::History(held)) => held.with(Arc::new(run), RUNS_KEPT),
                    _ => History::default().with(Arc::new(run), RUNS_KEPT),
                };
                Ok(Loaded::Found(Entry::History(Arc::new(held)), Path::Redis))
            }
            // No run covers the cursor, or the one that does ends too soon: a new run
            // starts at the cursor; unless the page goes up past a run that already
            // reached the newest message (a new one would end there too).
            found_run => {
                bump(&self.tiers.stats.history_misses);
                let at_newest =
                    matches!(request.cursor, Cursor::After(_)) && found_run.is_some_and(|r| r.open);
                if !at_newest {
                    self.tiers.queue_fill(fill, Some(found.version));
                }
                Ok(Loaded::Missed)
            }
        }
    }
}
