//! The Lua scripts, called directly through `hotchan::redis::Redis` against real Redis,
//! each test under a key prefix of its own.

use std::time::Duration;

use chrono::Utc;
use fred::prelude::{ClientLike, KeysInterface, ListInterface};
use hotchan::domain::window::{Members, Window};
use hotchan::domain::{Channel, ChannelId, ChannelType, Member, Message, MessageId, UserId};
use hotchan::redis::{MembersRead, PageRead, Redis, RedisSettings, WindowRead};
use uuid::Uuid;

use crate::helpers::redis_url;

async fn redis() -> Redis {
    Redis::connect(RedisSettings {
        url: redis_url(),
        ca_file: None,
        wait_replicas: None,
        prefix: format!("hct_{}", Uuid::new_v4().simple()),
        timeout: Duration::from_secs(2),
        ttl: Duration::from_secs(60),
        connections: 1,
    })
    .await
    .unwrap()
}

/// A raw client, to look at and damage keys behind the scripts' back.
async fn raw() -> fred::clients::Client {
    let client =
        fred::prelude::Builder::from_config(fred::prelude::Config::from_url(&redis_url()).unwrap())
            .build()
            .unwrap();
    client.init().await.unwrap();
    client
}

/// Now, at the microsecond precision Postgres (and the codec) keeps.
fn now() -> chrono::DateTime<Utc> {
    chrono::DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap()
}

fn message(channel: ChannelId, id: i64, seq: i64) -> Message {
    Message {
        id: MessageId(id),
        channel_id: channel,
        sender_id: UserId(Uuid::from_u128(7)),
        content: Some(format!("m{id}")),
        reply_to_id: None,
        created_at: now(),
        updated_at: None,
        deleted_at: None,
        seq,
    }
}

/// A window of messages `ids` (seq = id), newest first; older messages exist.
fn window(channel: ChannelId, ids: std::ops::RangeInclusive<i64>) -> Window {
    let last = *ids.end();
    Window {
        channel: Channel {
            id: channel,
            kind: ChannelType::Group,
            name: Some("g".into()),
            created_at: now(),
            last_seq: last,
        },
        messages: ids.rev().map(|id| message(channel, id, id)).collect(),
        floor: 0,
        complete: false,
    }
}

async fn read(redis: &Redis, channel: ChannelId) -> Option<Window> {
    match redis.read_window(channel).await.unwrap() {
        WindowRead::Hit(w) => Some(w),
        WindowRead::Miss(_) => None,
    }
}

async fn version(redis: &Redis, channel: ChannelId) -> String {
    match redis.read_window(channel).await.unwrap() {
        WindowRead::Miss(v) => v,
        WindowRead::Hit(_) => panic!("expected a miss"),
    }
}

fn seqs(w: &Window) -> Vec<i64> {
    w.messages.iter().map(|m| m.seq).collect()
}

#[tokio::test]
async fn a_fill_installs_with_the_version_it_read_and_is_refused_after_a_write() {
    let redis = redis().await;
    let c = ChannelId(Uuid::new_v4());
    let w = window(c, 1..=3);

    let v = version(&redis, c).await;
    assert_eq!(
        version(&redis, c).await,
        v,
        "a miss hands out the same version until a write"
    );
    // A write (here: an append onto no window) bumps the version.
    assert_eq!(redis.append(&message(c, 4, 4), 200).await.unwrap(), 0);
    assert!(
        !redis.fill_window(&v, &w).await.unwrap(),
        "refused: the version moved"
    );
    assert!(read(&redis, c).await.is_none());

    let v = version(&redis, c).await;
    assert!(redis.fill_window(&v, &w).await.unwrap());
    assert_eq!(read(&redis, c).await, Some(w.clone()));
    // A replayed fill (same version) is harmless: it installs the same window again.
    assert!(redis.fill_window(&v, &w).await.unwrap());
    assert_eq!(read(&redis, c).await, Some(w));
}

#[tokio::test]
async fn append_takes_only_the_next_seq_and_a_replay_changes_nothing() {
    let redis = redis().await;
    let c = ChannelId(Uuid::new_v4());
    let v = version(&redis, c).await;
    assert!(redis.fill_window(&v, &window(c, 1..=3)).await.unwrap());

    assert_eq!(redis.append(&message(c, 4, 4), 200).await.unwrap(), 1);
    assert_eq!(
        redis.append(&message(c, 4, 4), 200).await.unwrap(),
        2,
        "replay"
    );
    let w = read(&redis, c).await.unwrap();
    assert_eq!((seqs(&w), w.seq()), (vec![4, 3, 2, 1], 4));

    // A gap (seq 6 while the window is at 4): the window is dropped, never guessed.
    assert_eq!(redis.append(&message(c, 6, 6), 200).await.unwrap(), -1);
    assert!(read(&redis, c).await.is_none());
    assert_eq!(
        redis.append(&message(c, 7, 7), 200).await.unwrap(),
        0,
        "no window to append to"
    );
    assert!(
        read(&redis, c).await.is_none(),
        "never recreated by an append"
    );
}

#[tokio::test]
async fn append_keeps_the_hot_window_size_and_raises_the_floor() {
    let redis = redis().await;
    let c = ChannelId(Uuid::new_v4());
    let mut w = window(c, 1..=3);
    // Message 1 was edited last (seq 4): the channel is at seq 4.
    w.messages[2].seq = 4;
    w.channel.last_seq = 4;
    w.complete = true;
    let v = version(&redis, c).await;
    assert!(redis.fill_window(&v, &w).await.unwrap());

    assert_eq!(redis.append(&message(c, 5, 5), 3).await.unwrap(), 1);

    let after = read(&redis, c).await.unwrap();
    let ids: Vec<i64> = after.messages.iter().map(|m| m.id.0).collect();
    assert_eq!(ids, vec![5, 3, 2], "the oldest left");
    assert_eq!(
        after.floor, 4,
        "the change at seq 4 is no longer in the window"
    );
    assert!(!after.complete);
}

#[tokio::test]
async fn rewrite_replaces_in_place_and_an_older_message_raises_the_floor() {
    let redis = redis().await;
    let c = ChannelId(Uuid::new_v4());
    let v = version(&redis, c).await;
    assert!(redis.fill_window(&v, &window(c, 5..=7)).await.unwrap());

    let mut edited = message(c, 6, 8);
    edited.content = Some("edited".into());
    edited.updated_at = Some(now());
    assert_eq!(redis.rewrite(&edited).await.unwrap(), 1);
    assert_eq!(redis.rewrite(&edited).await.unwrap(), 2, "replay");
    let mut tombstone = message(c, 2, 9);
    tombstone.content = None;
    tombstone.deleted_at = Some(now());
    assert_eq!(redis.rewrite(&tombstone).await.unwrap(), 1);

    let w = read(&redis, c).await.unwrap();
    assert_eq!(
        w.message(MessageId(6)).unwrap().content.as_deref(),
        Some("edited")
    );
    assert_eq!(w.messages.len(), 3);
    assert_eq!(
        (w.seq(), w.floor),
        (9, 9),
        "message 2 is older than the window"
    );
}

#[tokio::test]
async fn a_partly_evicted_window_is_a_miss_and_is_dropped_by_the_next_write() {
    let redis = redis().await;
    let raw = raw().await;
    let c = ChannelId(Uuid::new_v4());
    let v = version(&redis, c).await;
    assert!(redis.fill_window(&v, &window(c, 1..=3)).await.unwrap());

    // Lose one element, as if part of the window were gone.
    let _: fred::types::Value = raw.rpop(redis.keys(c).msgs, None).await.unwrap();
    assert!(
        read(&redis, c).await.is_none(),
        "count and list length differ: a miss"
    );
    assert_eq!(redis.append(&message(c, 4, 4), 200).await.unwrap(), -1);
    let meta: bool = raw.exists(redis.keys(c).meta).await.unwrap();
    assert!(!meta, "the partial window was dropped, not appended to");

    // The list gone entirely, the meta left: also a miss.
    let v = version(&redis, c).await;
    assert!(redis.fill_window(&v, &window(c, 1..=4)).await.unwrap());
    let _: i64 = raw.del(redis.keys(c).msgs).await.unwrap();
    assert!(read(&redis, c).await.is_none());
    let _: () = raw.quit().await.unwrap();
}

#[tokio::test]
async fn drop_channel_forgets_everything_and_fences_fills() {
    let redis = redis().await;
    let c = ChannelId(Uuid::new_v4());
    let v = version(&redis, c).await;
    assert!(redis.fill_window(&v, &window(c, 1..=2)).await.unwrap());

    redis.drop_channel(c).await.unwrap();
    redis.drop_channel(c).await.unwrap();

    assert!(read(&redis, c).await.is_none());
    assert!(
        !redis.fill_window(&v, &window(c, 1..=2)).await.unwrap(),
        "a fill begun before is refused"
    );
}

fn member(user: u128, marker: Option<i64>, joined_us: i64) -> Member {
    Member {
        user_id: UserId(Uuid::from_u128(user)),
        role: "member".into(),
        last_read_message_id: marker.map(MessageId),
        joined_at: chrono::DateTime::from_timestamp_micros(joined_us).unwrap(),
    }
}

async fn members(redis: &Redis, c: ChannelId) -> Result<Members, String> {
    match redis.read_members(c).await.unwrap() {
        MembersRead::Hit(m) => Ok(m),
        MembersRead::Miss(v) => Err(v),
    }
}

#[tokio::test]
async fn members_fill_read_drop_and_markers_only_move_forward() {
    let redis = redis().await;
    let c = ChannelId(Uuid::new_v4());
    let set = Members {
        members: vec![member(1, None, 1_000), member(2, Some(5), 2_000)],
    };
    let v = members(&redis, c).await.unwrap_err();
    assert!(redis.fill_members(c, &v, &set).await.unwrap());
    assert_eq!(members(&redis, c).await.unwrap(), set);

    assert_eq!(
        redis
            .mark_read(c, &member(2, Some(9), 2_000))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        redis
            .mark_read(c, &member(2, Some(7), 2_000))
            .await
            .unwrap(),
        1,
        "late, lower"
    );
    let now = members(&redis, c).await.unwrap();
    assert_eq!(
        now.get(UserId(Uuid::from_u128(2)))
            .unwrap()
            .last_read_message_id,
        Some(MessageId(9))
    );

    // A marker of an earlier membership (another joined_at) drops the hash.
    assert_eq!(
        redis.mark_read(c, &member(1, Some(3), 999)).await.unwrap(),
        -1
    );
    let v = members(&redis, c).await.unwrap_err();
    assert!(
        !redis.fill_members(c, "0", &set).await.unwrap(),
        "a stale version is refused"
    );

    // An empty member set is cached as such.
    assert!(redis
        .fill_members(c, &v, &Members { members: vec![] })
        .await
        .unwrap());
    assert_eq!(members(&redis, c).await.unwrap().members, vec![]);
    redis.drop_members(c).await.unwrap();
    assert!(members(&redis, c).await.is_err());
}

#[tokio::test]
async fn every_key_of_a_channel_shares_its_hash_tag() {
    let redis = redis().await;
    let c = ChannelId(Uuid::new_v4());
    let k = redis.keys(c);
    for key in [k.msgs, k.meta, k.ver, k.members, k.mver] {
        assert!(key.starts_with(redis.prefix()), "{key}");
        assert!(key.contains(&format!("{{{c}}}")), "{key}");
    }
}

#[tokio::test]
async fn a_head_read_is_the_newest_messages_and_claims_nothing_about_older_ones() {
    let redis = redis().await;
    let c = ChannelId(Uuid::new_v4());
    let mut w = window(c, 1..=10);
    w.complete = true;
    w.floor = 0;
    let v = version(&redis, c).await;
    assert!(redis.fill_window(&v, &w).await.unwrap());

    let WindowRead::Hit(head) = redis.read_window_head(c, Some(3)).await.unwrap() else {
        panic!("a hit")
    };
    assert_eq!(seqs(&head), vec![10, 9, 8]);
    assert!(!head.complete, "older messages exist below a head");
    assert_eq!(
        head.floor,
        head.seq(),
        "a head answers no sync of older changes"
    );

    let WindowRead::Hit(all) = redis.read_window_head(c, Some(50)).await.unwrap() else {
        panic!("a hit")
    };
    assert_eq!(all, w, "a head past the window's end is the whole window");
}

mod feeds {
    use super::*;
    use hotchan::domain::feed::{Event, EventId, FeedWindow};
    use hotchan::redis::{FeedRead, FeedState};

    fn event(id: i64) -> Event {
        Event {
            id: EventId(id),
            actor_id: UserId(Uuid::from_u128(7)),
            verb: "comment".into(),
            object_type: "task".into(),
            object_id: format!("Task-{id}"),
            target_type: None,
            target_id: None,
            data: Some(r#"{"n":1}"#.into()),
            channel_ids: vec![],
            created_at: now(),
            deleted_at: None,
        }
    }

    fn window(ids: &[i64]) -> FeedWindow {
        FeedWindow {
            ids: ids.iter().map(|&i| EventId(i)).collect(),
            complete: true,
            seen: None,
        }
    }

    async fn miss(r: &Redis, user: UserId) -> String {
        match r.read_feed(user).await.unwrap() {
            FeedRead::Miss(version) => version,
            FeedRead::Hit(w) => panic!("a hit: {w:?}"),
        }
    }

    #[tokio::test]
    async fn a_fill_that_read_postgres_before_a_delivery_is_refused() {
        let r = redis().await;
        let user = UserId(Uuid::new_v4());
        let version = miss(&r, user).await;
        // A delivery commits and reaches Redis while the fill reads Postgres.
        assert_eq!(r.feed_tops(&[user]).await.unwrap(), [FeedState::Uncached]);
        let bodies = [event(2), event(1)];
        assert!(!r
            .fill_feed(user, &version, &window(&[2, 1]), &bodies)
            .await
            .unwrap());
        // The next reader's fill goes in, and the feed is a hit with its bodies.
        let version = miss(&r, user).await;
        assert!(r
            .fill_feed(user, &version, &window(&[2, 1]), &bodies)
            .await
            .unwrap());
        match r.read_feed(user).await.unwrap() {
            FeedRead::Hit(w) => assert_eq!(w, window(&[2, 1])),
            FeedRead::Miss(_) => panic!("a miss after the fill"),
        }
        let found = r.bodies(&[EventId(1), EventId(3)]).await.unwrap();
        assert_eq!(found, [Some(bodies[1].clone()), None]);
    }

    #[tokio::test]
    async fn deliveries_append_only_onto_the_predecessor_they_name() {
        let r = redis().await;
        let user = UserId(Uuid::new_v4());
        let version = miss(&r, user).await;
        assert!(r
            .fill_feed(user, &version, &window(&[5, 3]), &[])
            .await
            .unwrap());
        assert_eq!(r.feed_tops(&[user]).await.unwrap(), [FeedState::Cached(5)]);
        // Appended: the feed's newest id is the predecessor named.
        assert_eq!(
            r.feed_deliver(user, 5, &[EventId(7), EventId(8)], 3)
                .await
                .unwrap(),
            1
        );
        match r.read_feed(user).await.unwrap() {
            // Trimmed to the hot size, and no longer the whole feed.
            FeedRead::Hit(w) => assert_eq!(
                (w.ids, w.complete),
                (vec![EventId(8), EventId(7), EventId(5)], false)
            ),
            FeedRead::Miss(_) => panic!("a miss after an append"),
        }
        // A delivery whose predecessor (9) never landed here: the feed is dropped.
        assert_eq!(
            r.feed_deliver(user, 9, &[EventId(10)], 3).await.unwrap(),
            -1
        );
        assert!(matches!(
            r.read_feed(user).await.unwrap(),
            FeedRead::Miss(_)
        ));
        // A user with nothing cached: nothing to do.
        let idle = UserId(Uuid::new_v4());
        assert_eq!(
            r.feed_deliver(idle, 0, &[EventId(10)], 3).await.unwrap(),
            -2
        );
    }

    #[tokio::test]
    async fn a_feed_whose_version_is_gone_is_a_miss() {
        // Writers skip users with no version, so such a feed may lack deliveries.
        let r = redis().await;
        let user = UserId(Uuid::new_v4());
        let version = miss(&r, user).await;
        assert!(r
            .fill_feed(user, &version, &window(&[1]), &[])
            .await
            .unwrap());
        let key = format!("{}:{{u:{user}}}:fver", r.prefix());
        let _: i64 = raw().await.del(&key).await.unwrap();
        assert_eq!(r.feed_tops(&[user]).await.unwrap(), [FeedState::NoVersion]);
        assert!(matches!(
            r.read_feed(user).await.unwrap(),
            FeedRead::Miss(_)
        ));
    }

    #[tokio::test]
    async fn a_tombstone_is_never_replaced_by_an_older_live_body() {
        let r = redis().await;
        let mut tombstone = event(4);
        tombstone.data = None;
        tombstone.deleted_at = Some(now());
        r.put_body(&tombstone).await.unwrap();
        r.put_body_if_absent(&event(4)).await.unwrap();
        assert_eq!(r.bodies(&[EventId(4)]).await.unwrap(), [Some(tombstone)]);
    }
}

/// What `read_window_page` found: the kept page, or `None` for a window or a miss.
async fn kept(redis: &Redis, c: ChannelId, limit: u32) -> Option<bytes::Bytes> {
    match redis
        .read_window_page(c, Some(4), Some(limit))
        .await
        .unwrap()
    {
        PageRead::Kept(body) => Some(body),
        PageRead::Window(_) => None,
    }
}

/// A page kept beside the window is served only while the window is as it was when the
/// page was made: a post, an edit, a refill or a drop of the channel retires it, and a
/// page made from a window a write has changed since is not kept.
#[tokio::test]
async fn a_kept_page_is_served_only_for_the_window_it_was_made_from() {
    let redis = redis().await;
    let c = ChannelId(Uuid::new_v4());
    let v = version(&redis, c).await;
    assert!(redis.fill_window(&v, &window(c, 1..=3)).await.unwrap());
    assert_eq!(kept(&redis, c, 2).await, None, "nothing kept yet");

    assert!(redis.store_page(c, 3, 2, b"page at 3").await.unwrap());
    assert_eq!(kept(&redis, c, 2).await.as_deref(), Some(&b"page at 3"[..]));
    assert_eq!(kept(&redis, c, 5).await, None, "kept per limit");
    let PageRead::Window(WindowRead::Hit(head)) =
        redis.read_window_page(c, Some(2), Some(5)).await.unwrap()
    else {
        panic!("the window answers a page not kept");
    };
    assert_eq!(seqs(&head), vec![3, 2]);

    // A post moves the window on: the page of seq 3 is not served, nor kept again.
    assert_eq!(redis.append(&message(c, 4, 4), 200).await.unwrap(), 1);
    assert_eq!(kept(&redis, c, 2).await, None);
    assert!(!redis.store_page(c, 3, 2, b"page at 3").await.unwrap());
    assert_eq!(kept(&redis, c, 2).await, None);

    // An edit, likewise.
    assert!(redis.store_page(c, 4, 2, b"page at 4").await.unwrap());
    let mut edited = message(c, 4, 5);
    edited.content = Some("edited".into());
    assert_eq!(redis.rewrite(&edited).await.unwrap(), 1);
    assert_eq!(kept(&redis, c, 2).await, None);

    // A refill and a drop delete the hash the page is kept in.
    assert!(redis.store_page(c, 5, 2, b"page at 5").await.unwrap());
    redis.drop_channel(c).await.unwrap();
    assert_eq!(kept(&redis, c, 2).await, None);
    assert!(
        !redis.store_page(c, 5, 2, b"page at 5").await.unwrap(),
        "no window"
    );
    let v = version(&redis, c).await;
    assert!(redis.fill_window(&v, &window(c, 1..=5)).await.unwrap());
    assert_eq!(
        kept(&redis, c, 2).await,
        None,
        "a refill keeps no older page"
    );
}
