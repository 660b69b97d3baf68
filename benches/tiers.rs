//! Micro benchmarks of the cache tiers:
//! - the L1 hit path: a cached window found in L1 and its latest page as bytes;
//! - the same page encoded with serde_json on every request (what the memo avoids);
//! - the Redis codec on a 50-message window;
//! - each Lua script against a local Redis (`HOTCHAN_BENCH_REDIS_URL`, default
//!   redis://127.0.0.1:6379), skipped with a message when Redis does not answer.
//!
//! Run: `cargo bench --bench tiers`.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use hotchan::cache::l1::{CachedWindow, Entry, Key, Loaded, L1};
use hotchan::cache::paths::Path;
use hotchan::domain::window::{Members, Window};
use hotchan::domain::{
    Channel, ChannelId, ChannelType, Cursor, Member, Message, MessageId, PageRequest, UserId,
};
use hotchan::redis::{codec, Redis, RedisSettings, WindowRead};
use uuid::Uuid;

fn now() -> chrono::DateTime<Utc> {
    chrono::DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap()
}

fn message(channel: ChannelId, id: i64) -> Message {
    Message {
        id: MessageId(id),
        channel_id: channel,
        sender_id: UserId(Uuid::from_u128(id as u128 % 5)),
        content: Some(format!(
            "message {id}: lorem ipsum dolor sit amet, consectetur adipiscing elit"
        )),
        reply_to_id: None,
        created_at: now(),
        updated_at: None,
        deleted_at: None,
        seq: id,
    }
}

/// A window of `n` messages, newest first.
fn window(n: i64) -> Window {
    let channel = ChannelId(Uuid::new_v4());
    Window {
        channel: Channel {
            id: channel,
            kind: ChannelType::Group,
            name: Some("bench".into()),
            created_at: now(),
            last_seq: n,
        },
        messages: (1..=n).rev().map(|id| message(channel, id)).collect(),
        floor: 0,
        complete: true,
    }
}

fn encode(page: &hotchan::domain::Page) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(page).unwrap())
}

const LATEST: PageRequest = PageRequest {
    limit: 50,
    cursor: Cursor::Latest,
};

fn l1_hit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let l1 = L1::new(64 << 20, 0, Duration::from_secs(600));
    l1.resume();
    let w = window(200);
    let key = Key::Window(w.channel.id);
    let entry = Entry::Window(Arc::new(CachedWindow::new(w)));
    rt.block_on(l1.fetch(key, || async {
        Ok::<_, ()>(Loaded::Found(entry, Path::Redis))
    }))
    .unwrap();

    let mut group = c.benchmark_group("l1");
    group.throughput(Throughput::Elements(1));
    group.bench_function("hit: latest 50-message page as bytes (one core)", |b| {
        b.iter(|| {
            let (loaded, _) = rt
                .block_on(l1.fetch(key, || async { Err::<Loaded, ()>(()) }))
                .unwrap();
            let Loaded::Found(Entry::Window(w), _) = loaded else {
                panic!("an L1 hit")
            };
            black_box(w.encoded_page(LATEST, encode).unwrap())
        })
    });
    let w = window(200);
    group.bench_function("the same page cut and encoded with serde_json", |b| {
        b.iter(|| black_box(encode(&w.page(LATEST).unwrap())))
    });
    group.finish();
}

fn codec(c: &mut Criterion) {
    let w = window(50);
    let encoded: Vec<Vec<u8>> = w.messages.iter().map(codec::encode_message).collect();
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(50));
    group.bench_function("encode a 50-message window", |b| {
        b.iter(|| {
            black_box(
                w.messages
                    .iter()
                    .map(codec::encode_message)
                    .collect::<Vec<_>>(),
            )
        })
    });
    group.bench_function("decode a 50-message window", |b| {
        b.iter(|| {
            black_box(
                encoded
                    .iter()
                    .map(|e| codec::decode_message(w.channel.id, e).unwrap())
                    .collect::<Vec<_>>(),
            )
        })
    });
    group.finish();
}

fn lua(c: &mut Criterion) {
    let url = std::env::var("HOTCHAN_BENCH_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let prefix = format!("hcbench_{}", Uuid::new_v4().simple());
    let redis = rt.block_on(async {
        let redis = Redis::connect(RedisSettings {
            url: url.clone(),
            ca_file: None,
            wait_replicas: None,
            prefix,
            timeout: Duration::from_secs(1),
            ttl: Duration::from_secs(300),
            connections: 1,
        })
        .await
        .ok()?;
        for _ in 0..20 {
            if redis.is_up().await {
                return Some(redis);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    });
    let Some(redis) = redis else {
        eprintln!("lua: skipped, no Redis answers at {url} (set HOTCHAN_BENCH_REDIS_URL)");
        return;
    };
    let w = window(200);
    let id = w.channel.id;
    let fill = |redis: &Redis| {
        let v = match rt.block_on(redis.read_window(id)).unwrap() {
            WindowRead::Miss(v) => v,
            WindowRead::Hit(_) => unreachable!("dropped before"),
        };
        assert!(rt.block_on(redis.fill_window(&v, &w)).unwrap());
    };
    let mut group = c.benchmark_group("lua (local Redis, one round trip each)");
    group.bench_function("read_window: hit of 200 messages", |b| {
        rt.block_on(redis.drop_channel(id)).unwrap();
        fill(&redis);
        b.iter(|| black_box(rt.block_on(redis.read_window(id)).unwrap()))
    });
    group.bench_function("read_window miss + fill_window of 200 messages", |b| {
        b.iter(|| {
            rt.block_on(redis.drop_channel(id)).unwrap();
            fill(&redis)
        })
    });
    group.bench_function("append (trims at 200)", |b| {
        rt.block_on(redis.drop_channel(id)).unwrap();
        fill(&redis);
        let mut seq = w.seq();
        b.iter(|| {
            seq += 1;
            assert_eq!(
                rt.block_on(redis.append(&message(id, seq), 200)).unwrap(),
                1
            );
        })
    });
    group.bench_function("rewrite (edit in place)", |b| {
        rt.block_on(redis.drop_channel(id)).unwrap();
        fill(&redis);
        let mut seq = w.seq();
        b.iter(|| {
            seq += 1;
            let mut m = message(id, 150);
            m.seq = seq;
            assert_eq!(rt.block_on(redis.rewrite(&m)).unwrap(), 1);
        })
    });
    let members = Members {
        members: (0..5)
            .map(|i| Member {
                user_id: UserId(Uuid::from_u128(i)),
                role: "member".into(),
                last_read_message_id: None,
                joined_at: now(),
            })
            .collect(),
    };
    group.bench_function("mark_read", |b| {
        rt.block_on(redis.drop_members(id)).unwrap();
        let v = match rt.block_on(redis.read_members(id)).unwrap() {
            hotchan::redis::MembersRead::Miss(v) => v,
            hotchan::redis::MembersRead::Hit(_) => unreachable!(),
        };
        assert!(rt.block_on(redis.fill_members(id, &v, &members)).unwrap());
        let mut marker = 0;
        b.iter(|| {
            marker += 1;
            let mut m = members.members[1].clone();
            m.last_read_message_id = Some(MessageId(marker));
            rt.block_on(redis.mark_read(id, &m)).unwrap()
        })
    });
    group.finish();
    let _ = rt.block_on(redis.delete_prefix());
}

criterion_group!(benches, l1_hit, codec, lua);
criterion_main!(benches);
