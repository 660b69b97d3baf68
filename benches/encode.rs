//! Smoke benchmark: encoding a 50-message page as the API sends it. The cache-path
//! benchmarks come with the cache tiers.

use chrono::Utc;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use hotchan::domain::{ChannelId, Message, MessageId, Page, UserId};
use uuid::Uuid;

fn page_of(n: i64) -> Page {
    let channel = ChannelId(Uuid::new_v4());
    let sender = UserId(Uuid::new_v4());
    let messages = (0..n)
        .rev()
        .map(|i| Message {
            id: MessageId(1000 + i),
            channel_id: channel,
            sender_id: sender,
            content: Some(format!(
                "message number {i}, with a little text to weigh it"
            )),
            reply_to_id: None,
            created_at: Utc::now(),
            updated_at: None,
            deleted_at: None,
            seq: 1000 + i,
        })
        .collect();
    Page::from_rows(messages, n as usize)
}

fn encode_page(c: &mut Criterion) {
    let page = page_of(50);
    c.bench_function("serde_json encode of a 50-message page", |b| {
        b.iter(|| serde_json::to_vec(black_box(&page)).unwrap())
    });
}

criterion_group!(benches, encode_page);
criterion_main!(benches);
