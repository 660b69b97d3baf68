//! A channel's cached window and member set, and the answers they can give without
//! Postgres. Pure functions: every method either answers exactly as the Postgres query
//! would, or says `None` (the answer needs rows outside the window).

use crate::domain::{
    Channel, Cursor, Member, MemberSummary, Message, MessageId, Page, PageRequest, SyncChannel,
    UserId,
};

/// The newest messages of a channel by id, tombstones included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The channel, with `last_seq` equal to [`Window::seq`].
    pub channel: Channel,
    /// Newest first. Every message of the channel with an id at or above the oldest one
    /// here is here.
    pub messages: Vec<Message>,
    /// Every message whose `seq` is above `floor` is in `messages`.
    pub floor: i64,
    /// `messages` reaches back to the channel's oldest message.
    pub complete: bool,
}

impl Window {
    /// The channel seq this window reflects.
    pub fn seq(&self) -> i64 {
        self.channel.last_seq
    }

    fn oldest_id(&self) -> Option<MessageId> {
        self.messages.last().map(|m| m.id)
    }

    fn live(&self) -> impl DoubleEndedIterator<Item = &Message> {
        self.messages.iter().filter(|m| !m.is_deleted())
    }

    /// Whether every live message with an id above `id` is in the window.
    fn covers_after(&self, id: MessageId) -> bool {
        self.complete || self.oldest_id().is_some_and(|oldest| id.0 >= oldest.0 - 1)
    }

    /// A page, when the window holds all it needs.
    pub fn page(&self, request: PageRequest) -> Option<Page> {
        let limit = request.limit as usize;
        let rows: Vec<Message> = match request.cursor {
            Cursor::Latest => self.live().take(limit + 1).cloned().collect(),
            Cursor::Before(x) => self
                .live()
                .filter(|m| m.id < x)
                .take(limit + 1)
                .cloned()
                .collect(),
            Cursor::After(x) => {
                if !self.covers_after(x) {
                    return None;
                }
                let rows = self.live().rev().filter(|m| m.id > x).take(limit + 1);
                return Some(Page::from_rows(rows.cloned().collect(), limit));
            }
        };
        // Newest first: short of limit + 1 rows, only a complete window knows there are
        // no older ones.
        if rows.len() > limit || self.complete {
            Some(Page::from_rows(rows, limit))
        } else {
            None
        }
    }

    /// One message by id, tombstones included, when it is in the window.
    pub fn message(&self, id: MessageId) -> Option<&Message> {
        self.messages.iter().find(|m| m.id == id)
    }

    /// Unread count of a member: live messages of others after the marker.
    pub fn unread(&self, member: &Member) -> Option<i64> {
        let marker = member.last_read_message_id.unwrap_or(MessageId(0));
        if !self.covers_after(marker) {
            return None;
        }
        let count = self
            .live()
            .filter(|m| m.id > marker && m.sender_id != member.user_id)
            .count();
        Some(count as i64)
    }

    /// The sync answer for a client at `since`, when the window holds it. `unread_count`
    /// is left for the caller.
    pub fn sync(
        &self,
        since: i64,
        reset_threshold: i64,
        reset_messages: usize,
    ) -> Option<SyncChannel> {
        let last_seq = self.seq();
        let reset = since > last_seq || last_seq - since > reset_threshold;
        let changes = if reset {
            let newest: Vec<&Message> = self.live().take(reset_messages).collect();
            if newest.len() < reset_messages && !self.complete {
                return None;
            }
            newest.into_iter().rev().cloned().collect()
        } else {
            if since < self.floor {
                return None;
            }
            let mut changes: Vec<Message> = self
                .messages
                .iter()
                .filter(|m| m.seq > since)
                .cloned()
                .collect();
            changes.sort_by_key(|m| m.seq);
            changes
        };
        Some(SyncChannel {
            changes,
            last_seq,
            reset,
            missed: (last_seq - since).max(0),
            unread_count: None,
        })
    }

    /// This window with `post` on top, when the window is the one just before it (its
    /// seq is the post's less one); at most `hot_window` messages, the oldest leaving as
    /// `append.lua` drops it in Redis. `None` when the window cannot tell.
    pub fn with_post(&self, post: &Message, hot_window: usize) -> Option<Window> {
        if post.seq != self.seq() + 1 || post.channel_id != self.channel.id {
            return None;
        }
        let mut next = Window {
            channel: Channel {
                last_seq: post.seq,
                ..self.channel.clone()
            },
            messages: Vec::with_capacity((self.messages.len() + 1).min(hot_window)),
            floor: self.floor,
            complete: self.complete,
        };
        next.messages.push(post.clone());
        let kept = self.messages.len().min(hot_window.saturating_sub(1));
        next.messages.extend(self.messages[..kept].iter().cloned());
        for gone in &self.messages[kept..] {
            // Changes at or below its seq are no longer all here.
            next.complete = false;
            next.floor = next.floor.max(gone.seq);
        }
        Some(next)
    }

    /// The heap bytes this window's own allocations take (its messages and the channel's
    /// name), as [`allocation`] counts them; the struct itself is wherever it is kept.
    pub fn weight(&self) -> u32 {
        let name = self
            .channel
            .name
            .as_ref()
            .map_or(0, |n| allocation(n.capacity()));
        (messages_heap(&self.messages) + name).min(u32::MAX as usize) as u32
    }

    /// About the bytes of the JSON of a page of the newest `limit` messages (what L1
    /// keeps beside a window once its latest page was asked for).
    pub fn page_json_estimate(&self, limit: usize) -> usize {
        PAGE_JSON
            + self
                .messages
                .iter()
                .take(limit)
                .map(message_json)
                .sum::<usize>()
    }
}

/// The heap bytes glibc's malloc takes for a request of `n` bytes: the request and an
/// 8-byte header, rounded up to 16, at least 32. The L1 weigher counts allocations so; the
/// counting allocator of `tests/memory.rs` checks it against what the entries really
/// allocate.
pub fn allocation(n: usize) -> usize {
    match n {
        0 => 0,
        n => ((n + 8 + 15) & !15).max(32),
    }
}

/// The heap of a list of messages: the list's buffer and each message's content.
pub(super) fn messages_heap(messages: &Vec<Message>) -> usize {
    let contents: usize = messages
        .iter()
        .map(|m| m.content.as_ref().map_or(0, |c| allocation(c.capacity())))
        .sum();
    allocation(messages.capacity() * std::mem::size_of::<Message>()) + contents
}

/// About the bytes of one message in JSON: its keys, two UUIDs, a timestamp, the numbers,
/// nulls or timestamps for the optional fields, and its content.
fn message_json(m: &Message) -> usize {
    const FIXED: usize = 215;
    const TIMESTAMP: usize = 28;
    let optional = |present: bool| if present { TIMESTAMP } else { 4 };
    FIXED
        + m.content.as_ref().map_or(4, |c| c.len() + 2)
        + if m.reply_to_id.is_some() { 16 } else { 4 }
        + optional(m.updated_at.is_some())
        + optional(m.deleted_at.is_some())
        + 2 * 12
}

/// The JSON of a page around its messages (`next_cursor`, `has_more`).
const PAGE_JSON: usize = 64;

/// Every member of a channel, sorted by user id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    pub members: Vec<Member>,
}

impl Members {
    pub fn get(&self, user: UserId) -> Option<&Member> {
        self.members
            .binary_search_by_key(&user, |m| m.user_id)
            .ok()
            .map(|i| &self.members[i])
    }

    pub fn summaries(&self) -> Vec<MemberSummary> {
        self.members
            .iter()
            .map(|m| MemberSummary {
                user_id: m.user_id,
                role: m.role.clone(),
            })
            .collect()
    }

    /// The heap bytes of the member list (its buffer and each member's role), as
    /// [`allocation`] counts them.
    pub fn weight(&self) -> u32 {
        let roles: usize = self
            .members
            .iter()
            .map(|m| allocation(m.role.capacity()))
            .sum();
        let list = allocation(self.members.capacity() * std::mem::size_of::<Member>());
        (list + roles).min(u32::MAX as usize) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ChannelId, ChannelType};
    use chrono::Utc;
    use uuid::Uuid;

    const ALICE: UserId = UserId(Uuid::from_u128(1));
    const BOB: UserId = UserId(Uuid::from_u128(2));

    fn message(id: i64, seq: i64, deleted: bool, sender: UserId) -> Message {
        Message {
            id: MessageId(id),
            channel_id: ChannelId(Uuid::nil()),
            sender_id: sender,
            content: (!deleted).then(|| format!("m{id}")),
            reply_to_id: None,
            created_at: Utc::now(),
            updated_at: None,
            deleted_at: deleted.then(Utc::now),
            seq,
        }
    }

    /// Messages 11..=20 (seq = id), 15 deleted at seq 21; older messages exist unless
    /// `complete`.
    fn window(complete: bool) -> Window {
        let messages = (11..=20)
            .rev()
            .map(|id| match id {
                15 => message(15, 21, true, BOB),
                id => message(id, id, false, if id % 2 == 0 { BOB } else { ALICE }),
            })
            .collect();
        Window {
            channel: Channel {
                id: ChannelId(Uuid::nil()),
                kind: ChannelType::Group,
                name: None,
                created_at: Utc::now(),
                last_seq: 21,
            },
            messages,
            floor: 10,
            complete,
        }
    }

    fn ids(page: &Page) -> Vec<i64> {
        page.messages.iter().map(|m| m.id.0).collect()
    }

    fn request(limit: u32, cursor: Cursor) -> PageRequest {
        PageRequest { limit, cursor }
    }

    #[test]
    fn a_post_goes_on_top_of_the_window_just_before_it_and_the_oldest_leaves() {
        let w = window(true);
        let post = message(21, 22, false, ALICE);
        let next = w
            .with_post(&post, 10)
            .expect("the window just before the post");
        assert_eq!(next.seq(), 22);
        assert_eq!(next.messages.len(), 10);
        assert_eq!(next.messages[0], post);
        assert_eq!(next.messages[1..], w.messages[..9]);
        // Message 11 (seq 11) left: the window no longer reaches the channel's start.
        assert_eq!((next.floor, next.complete), (11, false));
        assert_eq!(
            next.page(PageRequest {
                limit: 1,
                cursor: Cursor::Latest
            })
            .unwrap()
            .messages,
            vec![post.clone()]
        );

        let roomy = w.with_post(&post, 200).unwrap();
        assert_eq!(roomy.messages.len(), 11);
        assert_eq!((roomy.floor, roomy.complete), (10, true));

        // A post that is not the next change (one was missed, or it is a replay).
        assert_eq!(w.with_post(&message(21, 23, false, ALICE), 10), None);
        assert_eq!(w.with_post(&message(20, 21, false, ALICE), 10), None);
    }

    #[test]
    fn latest_pages_inside_the_window_skip_tombstones() {
        let page = window(false).page(request(3, Cursor::Latest)).unwrap();
        assert_eq!(ids(&page), vec![20, 19, 18]);
        assert_eq!(
            (page.has_more, page.next_cursor),
            (true, Some(MessageId(18)))
        );

        let page = window(false).page(request(5, Cursor::Latest)).unwrap();
        assert_eq!(ids(&page), vec![20, 19, 18, 17, 16]);
        let page = window(false).page(request(6, Cursor::Latest)).unwrap();
        assert_eq!(
            ids(&page),
            vec![20, 19, 18, 17, 16, 14],
            "15 is a tombstone"
        );
    }

    #[test]
    fn a_page_reaching_past_the_window_needs_postgres_unless_the_window_is_complete() {
        assert_eq!(window(false).page(request(9, Cursor::Latest)), None);
        assert_eq!(
            window(false).page(request(2, Cursor::Before(MessageId(12)))),
            None
        );
        let page = window(true).page(request(9, Cursor::Latest)).unwrap();
        assert_eq!(page.messages.len(), 9);
        assert!(!page.has_more);
        let page = window(true)
            .page(request(5, Cursor::Before(MessageId(12))))
            .unwrap();
        assert_eq!((ids(&page), page.has_more), (vec![11], false));
    }

    #[test]
    fn after_pages_are_served_when_the_window_covers_the_cursor() {
        let page = window(false)
            .page(request(3, Cursor::After(MessageId(10))))
            .unwrap();
        assert_eq!(ids(&page), vec![11, 12, 13]);
        assert!(page.has_more);
        let page = window(false)
            .page(request(3, Cursor::After(MessageId(17))))
            .unwrap();
        assert_eq!((ids(&page), page.has_more), (vec![18, 19, 20], false));
        assert_eq!(
            window(false).page(request(3, Cursor::After(MessageId(9)))),
            None
        );
        assert!(window(true)
            .page(request(3, Cursor::After(MessageId(0))))
            .is_some());
    }

    #[test]
    fn unread_counts_others_live_messages_after_the_marker() {
        let member = |marker: Option<i64>| Member {
            user_id: ALICE,
            role: "member".into(),
            last_read_message_id: marker.map(MessageId),
            joined_at: Utc::now(),
        };
        // Bob sent the even ids; 15 is deleted. After 16: 18, 20.
        assert_eq!(window(false).unread(&member(Some(16))), Some(2));
        assert_eq!(window(false).unread(&member(Some(10))), Some(5));
        assert_eq!(window(false).unread(&member(Some(3))), None);
        assert_eq!(window(false).unread(&member(None)), None);
        assert_eq!(window(true).unread(&member(None)), Some(5));
    }

    #[test]
    fn sync_lists_changes_above_the_floor_in_seq_order() {
        let answer = window(false).sync(18, 200, 50).unwrap();
        let seqs: Vec<i64> = answer.changes.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, vec![19, 20, 21]);
        assert_eq!(
            (answer.last_seq, answer.missed, answer.reset),
            (21, 3, false)
        );
        assert_eq!(window(false).sync(9, 200, 50), None, "below the floor");
        assert!(window(false).sync(10, 200, 50).is_some());
    }

    #[test]
    fn sync_resets_from_the_window_when_it_holds_enough_live_messages() {
        let answer = window(false).sync(10, 5, 3).unwrap();
        assert!(answer.reset);
        let ids: Vec<i64> = answer.changes.iter().map(|m| m.id.0).collect();
        assert_eq!(ids, vec![18, 19, 20], "newest live, oldest first");
        assert_eq!(window(false).sync(0, 5, 20), None);
        assert!(
            window(false).sync(99, 200, 3).unwrap().reset,
            "a client ahead resets"
        );
    }
}
