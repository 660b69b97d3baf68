//! What L1 holds: its keys, its entries and their weights, the encoded pages kept beside
//! a window, and the spread of entries' lifetimes.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::feed::{Event, EventId, FeedRequest, FeedWindow};
use crate::domain::history::History;
use crate::domain::window::{allocation, Members, Window};
use crate::domain::{ChannelId, UserId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    Window(ChannelId),
    /// A channel's latest page of n messages, read without L1 (`--cache redis`): the
    /// page Redis keeps beside the window, else from the newest messages of the window
    /// (fetching the whole window for one page would cost more than it saves). Shares
    /// loads, never kept.
    LatestPage(ChannelId, u32),
    Members(ChannelId),
    /// Runs of deep history ([`crate::domain::history`]), in their own budget.
    History(ChannelId),
    /// A user's hot feed: event ids ([`super::feeds`]).
    Feed(UserId),
    /// An event's body, shared by the feeds that hold its id.
    Event(EventId),
}

#[derive(Clone, Debug)]
pub enum Entry {
    Window(Arc<CachedWindow>),
    Members(Arc<Members>),
    History(Arc<History>),
    Feed(Arc<CachedFeed>),
    Event(Arc<Event>),
    /// An encoded page, answered and never kept ([`Key::LatestPage`]).
    Page(bytes::Bytes),
}

/// Most encoded pages remembered per window (the first ones asked for). An entry is
/// weighed with room for the JSON of one page of the default size ([`page_room`]); the
/// pages it remembers may take half as much again, so L1's capacity bounds them too,
/// within the weigher's margin.
const ENCODED_PAGES: usize = 8;

/// A window as the tiers hold it, with the pages already encoded from it. A window never
/// changes once loaded (a write replaces it), so an encoded page stays right for its life.
#[derive(Debug)]
pub struct CachedWindow {
    pub window: Window,
    /// A `std::sync::RwLock`: held for a scan of at most [`ENCODED_PAGES`] entries.
    pages: std::sync::RwLock<Vec<(crate::domain::PageRequest, bytes::Bytes)>>,
    /// The bytes of encoded pages this entry is weighed for ([`page_room`]).
    page_room: usize,
}

/// The room an entry keeps for encoded pages: about the JSON of one latest page of the
/// default size (or of the whole window, when smaller).
fn page_room(window: &Window) -> usize {
    window.page_json_estimate(crate::domain::DEFAULT_PAGE_LIMIT as usize)
}

impl CachedWindow {
    pub fn new(window: Window) -> CachedWindow {
        CachedWindow {
            page_room: page_room(&window),
            window,
            pages: std::sync::RwLock::new(Vec::new()),
        }
    }

    /// The heap bytes of this entry, as [`allocation`] counts them: its own allocation,
    /// the window's, and the room for its encoded pages.
    pub fn weight(&self) -> u32 {
        let own = allocation(std::mem::size_of::<CachedWindow>() + 16);
        let pages =
            allocation(4 * std::mem::size_of::<(crate::domain::PageRequest, bytes::Bytes)>());
        let room = allocation(self.page_room) + pages;
        (own + room).min(u32::MAX as usize) as u32 + self.window.weight()
    }

    /// The page encoded by `encode`, remembered for the next caller; `None` when the page
    /// needs rows outside the window.
    pub fn encoded_page(
        &self,
        request: crate::domain::PageRequest,
        encode: impl FnOnce(&crate::domain::Page) -> bytes::Bytes,
    ) -> Option<bytes::Bytes> {
        let cached = self.pages.read().unwrap_or_else(|e| e.into_inner());
        if let Some((_, body)) = cached.iter().find(|(r, _)| *r == request) {
            return Some(body.clone());
        }
        drop(cached);
        let body = encode(&self.window.page(request)?);
        let mut cached = self.pages.write().unwrap_or_else(|e| e.into_inner());
        let used: usize = cached.iter().map(|(_, b)| b.len()).sum();
        if cached.len() < ENCODED_PAGES
            && used + body.len() <= self.page_room + self.page_room / 2
            && !cached.iter().any(|(r, _)| *r == request)
        {
            cached.push((request, body.clone()));
        }
        Some(body)
    }
}

impl std::ops::Deref for CachedWindow {
    type Target = Window;
    fn deref(&self) -> &Window {
        &self.window
    }
}

/// The `Arc` allocation of a `T`: its counts and the value.
fn shared<T>() -> u32 {
    allocation(std::mem::size_of::<T>() + 16) as u32
}

impl Entry {
    /// The heap bytes this entry holds (L1's weigher): within ±20% of what its
    /// allocations take, as `tests/memory.rs` measures with a counting allocator.
    pub fn weight(&self) -> u32 {
        match self {
            Entry::Window(w) => CachedWindow::weight(w),
            Entry::Members(m) => shared::<Members>() + m.weight(),
            Entry::History(h) => shared::<History>() + h.weight(),
            Entry::Feed(f) => f.window.weight() + FEED_PAGE_BYTES as u32,
            Entry::Page(body) => allocation(body.len()) as u32,
            Entry::Event(e) => {
                let text = e.verb.len() + e.object_type.len() + e.object_id.len();
                let more = e.target_id.as_ref().map_or(0, String::len)
                    + e.data.as_ref().map_or(0, String::len)
                    + e.channel_ids.len() * 16;
                (200 + text + more) as u32
            }
        }
    }
}

/// Bytes of encoded pages kept beside a hot feed (about one page of 50 events); an entry
/// is weighed for them whether it has them yet or not.
const FEED_PAGE_BYTES: usize = 16 * 1024;

/// One encoded feed page, right while no event body was invalidated since (`generation`)
/// and none of its events expired (`oldest`).
struct FeedMemo {
    request: FeedRequest,
    body: bytes::Bytes,
    generation: u64,
    oldest: Option<chrono::DateTime<chrono::Utc>>,
}

/// A hot feed as L1 holds it, with the pages already encoded from it. The ids never
/// change once loaded (a delivery replaces the entry); a page depends on its events'
/// bodies too, so a remembered page is used only while no body was invalidated since it
/// was encoded and none of its events has expired.
pub struct CachedFeed {
    pub window: FeedWindow,
    pages: std::sync::RwLock<Vec<FeedMemo>>,
}

impl std::fmt::Debug for CachedFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedFeed")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl CachedFeed {
    pub fn new(window: FeedWindow) -> CachedFeed {
        CachedFeed {
            window,
            pages: std::sync::RwLock::new(Vec::new()),
        }
    }

    /// The remembered page for `request`, if still right at `generation` with events
    /// expiring at or before `cutoff`.
    pub fn page(
        &self,
        request: FeedRequest,
        generation: u64,
        cutoff: chrono::DateTime<chrono::Utc>,
    ) -> Option<bytes::Bytes> {
        let pages = self.pages.read().unwrap_or_else(|e| e.into_inner());
        pages
            .iter()
            .find(|m| {
                m.request == request
                    && m.generation == generation
                    && m.oldest.is_none_or(|t| t > cutoff)
            })
            .map(|m| m.body.clone())
    }

    /// Remembers a page encoded at `generation`; `oldest` is the creation time of the
    /// oldest event it depends on. Kept within [`FEED_PAGE_BYTES`].
    pub fn remember(
        &self,
        request: FeedRequest,
        body: bytes::Bytes,
        generation: u64,
        oldest: Option<chrono::DateTime<chrono::Utc>>,
    ) {
        let mut pages = self.pages.write().unwrap_or_else(|e| e.into_inner());
        pages.retain(|m| m.generation == generation && m.request != request);
        let used: usize = pages.iter().map(|m| m.body.len()).sum();
        if used + body.len() <= FEED_PAGE_BYTES {
            pages.push(FeedMemo {
                request,
                body,
                generation,
                oldest,
            });
        }
    }
}

/// Each entry lives the TTL less up to a quarter of it, by its key's hash, from its last
/// write: entries loaded together (a warm-up, the recovery after a flush) then do not all
/// expire at the same instant and reload from Redis at once, which showed as a tail of
/// slow reads ten seconds after a warm-up.
pub(super) struct JitteredTtl(pub(super) Duration);

impl JitteredTtl {
    fn of(&self, key: &Key) -> Duration {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let hash = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .hash_one(key);
        self.0 - self.0.mul_f64((hash % 1024) as f64 / 4096.0)
    }
}

impl moka::Expiry<Key, Entry> for JitteredTtl {
    fn expire_after_create(
        &self,
        key: &Key,
        _value: &Entry,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(self.of(key))
    }

    fn expire_after_update(
        &self,
        key: &Key,
        _value: &Entry,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.of(key))
    }
}

/// An empty, complete window of a nil channel at `seq`, for tests.
#[cfg(test)]
pub(super) fn empty_window(seq: i64) -> Arc<CachedWindow> {
    use crate::domain::{Channel, ChannelType};
    Arc::new(CachedWindow::new(Window {
        channel: Channel {
            id: ChannelId(uuid::Uuid::nil()),
            kind: ChannelType::Group,
            name: None,
            created_at: chrono::Utc::now(),
            last_seq: seq,
        },
        messages: vec![],
        floor: 0,
        complete: true,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn ttls_are_spread_over_the_last_quarter() {
        let ttl = JitteredTtl(Duration::from_secs(10));
        let ttls: std::collections::BTreeSet<Duration> = (0..100)
            .map(|_| ttl.of(&Key::Window(ChannelId(uuid::Uuid::new_v4()))))
            .collect();
        assert!(ttls.len() > 50, "{} distinct TTLs of 100", ttls.len());
        assert!(ttls.iter().all(|t| *t > Duration::from_millis(7_500)));
        assert!(ttls.iter().all(|t| *t <= Duration::from_secs(10)));
        let key = Key::Members(ChannelId(uuid::Uuid::new_v4()));
        assert_eq!(ttl.of(&key), ttl.of(&key), "one key, one TTL");
    }

    #[test]
    fn a_window_encodes_each_page_once_and_declines_pages_past_it() {
        use crate::domain::{Cursor, MessageId, PageRequest};
        let w = empty_window(3);
        let calls = AtomicUsize::new(0);
        let encode = |page: &crate::domain::Page| {
            calls.fetch_add(1, Ordering::SeqCst);
            bytes::Bytes::from(format!("{} messages", page.messages.len()))
        };
        let latest = PageRequest {
            limit: 50,
            cursor: Cursor::Latest,
        };
        assert_eq!(w.encoded_page(latest, encode).unwrap(), "0 messages");
        assert_eq!(w.encoded_page(latest, encode).unwrap(), "0 messages");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "the second answer was remembered"
        );

        let big = |_: &crate::domain::Page| {
            calls.fetch_add(1, Ordering::SeqCst);
            bytes::Bytes::from(vec![b' '; w.page_room * 3 / 2 + 1])
        };
        let before_newest = PageRequest {
            limit: 10,
            cursor: Cursor::Before(MessageId(i64::MAX)),
        };
        w.encoded_page(before_newest, big).unwrap();
        w.encoded_page(before_newest, big).unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "a page past the room the entry is weighed for is not kept"
        );

        let mut partial = w.window.clone();
        partial.complete = false;
        let partial = CachedWindow::new(partial);
        let before = PageRequest {
            limit: 5,
            cursor: Cursor::Before(MessageId(1)),
        };
        assert_eq!(partial.encoded_page(before, encode), None);
    }
}
