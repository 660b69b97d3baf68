//! Deep history: runs of a channel's live messages below (or past) its hot window, and the
//! pages they can answer without Postgres. Pure functions, like [`super::window`].
//!
//! # Why runs and not blocks of global ids
//! Message ids are global: a fixed block of 4,096 ids holds a few messages of a quiet
//! channel and thousands of a busy one, so no block size suits both. A run is a fixed
//! range of ids too, `(low, top)`, that never moves once made; but it is cut by message
//! count: every live message of the channel with an id in the range is in it, up to
//! [`RUN_MESSAGES`] of them, whatever the channel's density. A pager going down a channel
//! reads about five 50-message pages from one run before it needs the next.
//!
//! # What makes a run right
//! - Every live message of the channel with `low < id < top` is in `messages`.
//! - `low` is the newest live message below them when the fill read it (or `0` with
//!   `complete`: nothing live lies below). A delete of `low` changes `has_more`, so an edit
//!   or delete of any id in `low ..= top - 1` invalidates the run.
//! - `top` is at most one past the channel's newest committed message when the run was
//!   read: ids of one channel commit in order, so a later post always lands at `top` or
//!   above and never changes a run.

use super::{Cursor, Message, MessageId, Page, PageRequest};

/// Live messages one run holds at most: a full page (200) and the row past it, and room
/// for a few more pages of the usual 50.
pub const RUN_MESSAGES: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// One past the newest id the run answers for.
    pub top: MessageId,
    /// The newest live message below the run, or 0 when `complete`.
    pub low: MessageId,
    /// No live message lies below the run.
    pub complete: bool,
    /// `top` was one past the channel's newest message when the run was read: what lies
    /// above is the hot window's, and a new run would end at the same place.
    pub open: bool,
    /// Live messages with `low < id < top`, newest first.
    pub messages: Vec<Message>,
}

impl Run {
    /// Whether `id` lies where an edit or delete changes this run.
    pub fn touches(&self, id: MessageId) -> bool {
        self.low.0 <= id.0 && id.0 < self.top.0
    }

    /// A page, when the run holds all of it.
    pub fn page(&self, request: PageRequest) -> Option<Page> {
        let limit = request.limit as usize;
        match request.cursor {
            Cursor::Latest => None,
            Cursor::Before(x) => {
                if !(self.low.0 < x.0 && x.0 <= self.top.0) {
                    return None;
                }
                let rows: Vec<Message> = self
                    .messages
                    .iter()
                    .filter(|m| m.id < x)
                    .take(limit + 1)
                    .cloned()
                    .collect();
                // Short of limit + 1 rows, only a complete run knows no older ones exist.
                (rows.len() > limit || self.complete).then(|| Page::from_rows(rows, limit))
            }
            Cursor::After(x) => {
                if !(self.low.0 <= x.0 && x.0 < self.top.0) {
                    return None;
                }
                // Oldest first; what lies at `top` or above is unknown, so the run answers
                // only when it holds the row past the page.
                let rows: Vec<Message> = self
                    .messages
                    .iter()
                    .rev()
                    .filter(|m| m.id > x)
                    .take(limit + 1)
                    .cloned()
                    .collect();
                (rows.len() > limit).then(|| Page::from_rows(rows, limit))
            }
        }
    }

    /// The heap bytes of this run: its shared allocation and its messages.
    pub fn weight(&self) -> u32 {
        let own = super::window::allocation(std::mem::size_of::<Run>() + 16);
        (own + super::window::messages_heap(&self.messages)).min(u32::MAX as usize) as u32
    }
}

/// The runs of one channel that a tier holds, newest top first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub runs: Vec<std::sync::Arc<Run>>,
}

impl History {
    /// The first run that answers the page.
    pub fn page(&self, request: PageRequest) -> Option<Page> {
        self.runs.iter().find_map(|run| run.page(request))
    }

    /// This history with `run` added (replacing one with the same range), keeping at most
    /// `most` runs: those with the newest tops, where pagers start.
    pub fn with(&self, run: std::sync::Arc<Run>, most: usize) -> History {
        let mut runs: Vec<_> = self
            .runs
            .iter()
            .filter(|r| (r.top, r.low) != (run.top, run.low))
            .cloned()
            .collect();
        runs.push(run);
        runs.sort_by_key(|r| std::cmp::Reverse(r.top));
        runs.truncate(most.max(1));
        History { runs }
    }

    pub fn weight(&self) -> u32 {
        let list = super::window::allocation(self.runs.capacity() * std::mem::size_of::<usize>());
        self.runs
            .iter()
            .map(|r| r.weight())
            .fold(list as u32, u32::saturating_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ChannelId, UserId};
    use chrono::Utc;
    use uuid::Uuid;

    fn message(id: i64) -> Message {
        Message {
            id: MessageId(id),
            channel_id: ChannelId(Uuid::nil()),
            sender_id: UserId(Uuid::nil()),
            content: Some(format!("m{id}")),
            reply_to_id: None,
            created_at: chrono::DateTime::<Utc>::UNIX_EPOCH,
            updated_at: None,
            deleted_at: None,
            seq: id,
        }
    }

    /// Live ids 10, 20, ..., 300 in a channel; a run of those in `(low, top)`.
    fn run(low: i64, top: i64) -> Run {
        Run {
            top: MessageId(top),
            low: MessageId(low),
            complete: low == 0,
            open: false,
            messages: (1..=30)
                .rev()
                .map(|k| message(k * 10))
                .filter(|m| m.id.0 > low && m.id.0 < top)
                .collect(),
        }
    }

    /// The page Postgres would give over live ids 10, 20, ..., 300.
    fn truth(request: PageRequest) -> Page {
        let all: Vec<Message> = (1..=30).rev().map(|k| message(k * 10)).collect();
        let limit = request.limit as usize;
        let rows = match request.cursor {
            Cursor::Latest => all.into_iter().take(limit + 1).collect(),
            Cursor::Before(x) => all
                .into_iter()
                .filter(|m| m.id < x)
                .take(limit + 1)
                .collect(),
            Cursor::After(x) => all
                .into_iter()
                .rev()
                .filter(|m| m.id > x)
                .take(limit + 1)
                .collect(),
        };
        Page::from_rows(rows, limit)
    }

    proptest::proptest! {
        /// Whatever a run answers is what Postgres would answer.
        #[test]
        fn a_run_answers_exactly_or_not_at_all(
            low_k in 0i64..30, len in 1i64..30, x in 0i64..320, limit in 1u32..12, after: bool,
        ) {
            let low = low_k * 10;
            let top = (low + len * 10 + 1).min(301);
            let r = run(low, top);
            let cursor = if after { Cursor::After(MessageId(x)) } else { Cursor::Before(MessageId(x)) };
            let request = PageRequest { limit, cursor };
            if let Some(page) = r.page(request) {
                proptest::prop_assert_eq!(page, truth(request));
            }
        }
    }

    #[test]
    fn a_run_answers_inside_its_range_and_is_touched_by_its_low() {
        let r = run(100, 251);
        let before = |x, limit| PageRequest {
            limit,
            cursor: Cursor::Before(MessageId(x)),
        };
        assert_eq!(r.page(before(251, 5)), Some(truth(before(251, 5))));
        assert_eq!(r.page(before(160, 5)), None, "only 110..=150 below 160");
        assert_eq!(r.page(before(300, 5)), None, "above the run");
        assert!(r.touches(MessageId(100)) && r.touches(MessageId(250)));
        assert!(!r.touches(MessageId(90)) && !r.touches(MessageId(251)));

        let whole = run(0, 61);
        assert_eq!(whole.page(before(40, 50)), Some(truth(before(40, 50))));
        assert!(!whole.page(before(40, 50)).unwrap().has_more);
    }

    #[test]
    fn a_history_keeps_the_newest_runs() {
        let h = History::default()
            .with(run(0, 61).into(), 2)
            .with(run(100, 251).into(), 2)
            .with(run(50, 101).into(), 2);
        let tops: Vec<i64> = h.runs.iter().map(|r| r.top.0).collect();
        assert_eq!(tops, vec![251, 101]);
    }
}
