//! The Lua scripts, called directly through `hotchan::redis::Redis` against real Redis,
//! each test under a key prefix of its own.

use std::time::Duration;

use chrono::Utc;
use fred::prelude::{ClientLike, KeysInterface, ListInterface};
use hotchan::domain::window::{Members, Window};
use hotchan::domain::{Channel, ChannelId, ChannelType, Member, Message, MessageId, UserId};
use hotchan::redis::{MembersRead, Redis, RedisSettings, WindowRead};
use uuid::Uuid;

use crate::helpers::redis_url;

fn redis() -> Redis {
    Redis::connect(RedisSettings {
        url: redis_url(),
        prefix: format!("hct_{}", Uuid::new_v4().simple()),
        timeout: Duration::from_secs(2),
        ttl: Duration::from_secs(60),
        connections: 1,
    })
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
    let redis = redis();
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
    let redis = redis();
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
    let redis = redis();
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
    let redis = redis();
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
    let redis = redis();
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
    let redis = redis();
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
    let redis = redis();
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
    let redis = redis();
    let c = ChannelId(Uuid::new_v4());
    let k = redis.keys(c);
    for key in [k.msgs, k.meta, k.ver, k.members, k.mver] {
        assert!(key.starts_with(redis.prefix()), "{key}");
        assert!(key.contains(&format!("{{{c}}}")), "{key}");
    }
}

#[tokio::test]
async fn a_head_read_is_the_newest_messages_and_claims_nothing_about_older_ones() {
    let redis = redis();
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
