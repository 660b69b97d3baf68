//! Pages of messages and of feed events: one request type and one cursor, generic over
//! the id they page by, parsed from the raw query values with the same rules.

use super::feed::EventId;
use super::input::{invalid, page_limit, InvalidInput};
use super::MessageId;

/// An id that pages run by.
pub trait PageId: Copy {
    /// What the ids are called in error messages ("message", "event").
    const NOUN: &'static str;
    fn from_raw(id: i64) -> Self;
}

impl PageId for MessageId {
    const NOUN: &'static str = "message";
    fn from_raw(id: i64) -> Self {
        MessageId(id)
    }
}

impl PageId for EventId {
    const NOUN: &'static str = "event";
    fn from_raw(id: i64) -> Self {
        EventId(id)
    }
}

/// Where a page starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageCursor<Id> {
    /// The newest, newest first.
    Latest,
    /// Those with `id < X`, newest first.
    Before(Id),
    /// Those with `id > X`, oldest first.
    After(Id),
}

/// A validated page request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Paging<Id> {
    pub limit: u32,
    pub cursor: PageCursor<Id>,
}

/// A page of live messages.
pub type PageRequest = Paging<MessageId>;
/// Where a page of messages starts.
pub type Cursor = PageCursor<MessageId>;
/// A page of a feed, or of a channel's events.
pub type FeedRequest = Paging<EventId>;
/// Where a page of events starts.
pub type FeedCursor = PageCursor<EventId>;

impl<Id: PageId> Paging<Id> {
    /// Parses the raw query values `limit`, `before` and `after`.
    pub fn parse(
        limit: Option<&str>,
        before: Option<&str>,
        after: Option<&str>,
    ) -> Result<Self, InvalidInput> {
        let limit = page_limit(limit)?;
        let id = |name: &str, s: &str| {
            s.parse::<i64>().map(Id::from_raw).or_else(|_| {
                invalid(format!(
                    "{name} must be an integer {} id, not '{s}'",
                    Id::NOUN
                ))
            })
        };
        let cursor = match (before, after) {
            (Some(_), Some(_)) => return invalid("give either before or after, not both"),
            (Some(b), None) => PageCursor::Before(id("before", b)?),
            (None, Some(a)) => PageCursor::After(id("after", a)?),
            (None, None) => PageCursor::Latest,
        };
        Ok(Paging { limit, cursor })
    }
}
