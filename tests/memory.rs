//! L1's weigher against the heap the entries really take (#24: within ±20%): a counting
//! allocator measures what building an entry allocates, and what encoding and keeping
//! its latest page adds, in glibc's sizes (the weigher's
//! [`hotchan::domain::window::allocation`]).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use chrono::Utc;
use hotchan::cache::l1::{CachedWindow, Entry};
use hotchan::domain::window::{allocation, Members, Window};
use hotchan::domain::{
    Channel, ChannelId, ChannelType, Cursor, Member, Message, MessageId, PageRequest, UserId,
};
use uuid::Uuid;

/// Counts the bytes this thread allocates and frees while counting is on.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            LIVE.with(|live| live.set(live.get() + delta));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(allocation(layout.size()) as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(allocation(layout.size()) as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(allocation(new_size) as isize - allocation(layout.size()) as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What `f` leaves allocated on this thread (its result kept alive), and the result.
fn measured<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LIVE.with(|live| live.set(0));
    COUNTING.with(|on| on.set(true));
    let value = f();
    COUNTING.with(|on| on.set(false));
    (value, LIVE.with(Cell::get).max(0) as usize)
}

fn message(channel: ChannelId, id: i64, content: usize) -> Message {
    let now = Utc::now();
    Message {
        id: MessageId(id),
        channel_id: channel,
        sender_id: UserId(Uuid::new_v4()),
        content: Some("x".repeat(content)),
        reply_to_id: (id % 7 == 0).then_some(MessageId(id - 1)),
        created_at: now,
        updated_at: (id % 5 == 0).then_some(now),
        deleted_at: None,
        seq: id,
    }
}

fn window(messages: usize, content: usize) -> Window {
    let id = ChannelId(Uuid::new_v4());
    Window {
        channel: Channel {
            id,
            kind: ChannelType::Group,
            name: Some("a channel".to_owned()),
            created_at: Utc::now(),
            last_seq: messages as i64,
        },
        messages: (1..=messages as i64)
            .rev()
            .map(|i| message(id, i, content))
            .collect(),
        floor: 0,
        complete: true,
    }
}

fn assert_within(what: &str, weight: u32, heap: usize) {
    let ratio = f64::from(weight) / heap as f64;
    println!("{what}: weighed {weight} B, heap {heap} B, ratio {ratio:.3}");
    assert!(
        (0.8..=1.2).contains(&ratio),
        "{what}: weighed {weight} B against {heap} B of heap ({ratio:.3}×)"
    );
}

#[test]
fn l1_entries_are_weighed_within_a_fifth_of_their_heap() {
    let latest = PageRequest {
        limit: 50,
        cursor: Cursor::Latest,
    };
    // Short and long windows, short and long messages (the bench's are about 60 bytes).
    for (messages, content) in [(10, 20), (60, 60), (200, 60), (200, 500), (1000, 100)] {
        let what =
            format!("a window of {messages} messages of {content} bytes, its latest page kept");
        let (entry, heap) = measured(|| {
            let entry = Entry::Window(Arc::new(CachedWindow::new(window(messages, content))));
            if let Entry::Window(w) = &entry {
                // A hit: the latest page, encoded once and kept.
                let body = w.encoded_page(latest, hotchan::api::encode_json).unwrap();
                assert_eq!(w.encoded_page(latest, |_| unreachable!()), Some(body));
            }
            entry
        });
        assert_within(&what, entry.weight(), heap);
    }
    for members in [2, 5, 100, 1000] {
        let (entry, heap) = measured(|| {
            let mut list: Vec<Member> = (0..members)
                .map(|_| Member {
                    user_id: UserId(Uuid::new_v4()),
                    role: "member".to_owned(),
                    last_read_message_id: Some(MessageId(1)),
                    joined_at: Utc::now(),
                })
                .collect();
            list.sort_by_key(|m| m.user_id);
            Entry::Members(Arc::new(Members { members: list }))
        });
        assert_within(&format!("{members} members"), entry.weight(), heap);
    }
}
