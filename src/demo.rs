//! The small demo dataset `scripts/run` loads into an empty database: four users, three
//! channels and a few hundred messages, with fixed ids so the README's curl examples work.
//! It goes through the same write path as the API.

use tracing::info;
use uuid::{uuid, Uuid};

use crate::domain::{ChannelId, ChannelName, ChannelType, Content, MessageId, UserId};
use crate::postgres::{Db, DbError, NewMessage, PostOutcome};

pub const ALICE: Uuid = uuid!("a11ce000-0000-4000-8000-000000000001");
pub const BOB: Uuid = uuid!("b0b00000-0000-4000-8000-000000000002");
pub const CAROL: Uuid = uuid!("ca201000-0000-4000-8000-000000000003");
pub const DAVE: Uuid = uuid!("da7e0000-0000-4000-8000-000000000004");
pub const GENERAL: Uuid = uuid!("c0000000-0000-4000-8000-000000000001");
pub const RANDOM: Uuid = uuid!("c0000000-0000-4000-8000-000000000002");
pub const ALICE_BOB: Uuid = uuid!("c0000000-0000-4000-8000-000000000003");

const PHRASES: &[&str] = &[
    "morning all",
    "did the deploy go out?",
    "yes, 10 minutes ago",
    "p99 looks flat 👍",
    "who has the on-call pager this week?",
    "lunch at noon?",
    "I'll review the PR after standup",
    "the flaky test is fixed on main",
    "can someone look at the billing alert",
    "shipping it",
];

/// Seeds the demo data when the database has no channel; returns whether it did.
pub async fn seed(db: &Db) -> Result<bool, DbError> {
    if db.has_channels().await? {
        info!("the database already has channels: no demo data loaded");
        return Ok(false);
    }
    let users = [ALICE, BOB, CAROL, DAVE].map(UserId);
    let channels = [
        (
            GENERAL,
            ChannelType::Group,
            Some("general"),
            &users[..],
            300,
        ),
        (
            RANDOM,
            ChannelType::Group,
            Some("random"),
            &[users[0], users[2], users[3]][..],
            60,
        ),
        (ALICE_BOB, ChannelType::Direct, None, &users[..2], 40),
    ];
    let total: usize = channels.iter().map(|c| c.4).sum();
    let mut posted = 0;
    for (id, kind, name, members, count) in channels {
        let name = name.map(|n| ChannelName::parse(n.into()).expect("a short demo name"));
        db.create_channel(Some(ChannelId(id)), kind, name.as_ref(), members)
            .await?;
        let mut first = None;
        for i in 0..count {
            let new = NewMessage {
                sender: members[i % members.len()],
                content: Content::parse(PHRASES[i % PHRASES.len()].into(), 16384)
                    .expect("short demo content"),
                reply_to: None,
                client_msg_id: None,
            };
            if let PostOutcome::Created(m, _) = db.post_message(ChannelId(id), &new).await? {
                first.get_or_insert(m.id);
            }
            posted += 1;
            if posted % 100 == 0 || posted == total {
                info!(posted, total, "loading demo messages");
            }
        }
        if let Some(first) = first {
            // Some history for sync: an edit and a soft delete; alice has read a little.
            let edited = Content::parse("morning all (edited)".into(), 16384).expect("short");
            db.edit_message(first, &edited).await?;
            db.delete_message(MessageId(first.0 + 1)).await?;
            db.mark_read(ChannelId(id), UserId(ALICE), MessageId(first.0 + 9))
                .await?;
        }
    }
    let events = seed_events(db).await?;
    info!(channels = 3, messages = total, events, "demo data loaded");
    Ok(true)
}

/// A few activity events: to `#general` (a team feed) and to named users.
async fn seed_events(db: &Db) -> Result<usize, DbError> {
    use crate::domain::feed::{EventFields, NewEvent};
    use crate::postgres::Retention;
    let retention = Retention {
        keep: std::time::Duration::from_secs(90 * 86_400),
        span: std::time::Duration::from_secs(86_400),
    };
    // Partitions first: a publish that finds none makes them and retries, but its first
    // try has drawn an id, and the README's examples expect the ids 1 to 5.
    db.feed_upkeep(retention, true).await?;
    let events = [
        (
            ALICE,
            "comment",
            "Task-42",
            Some(vec![GENERAL]),
            None,
            r#"{"excerpt": "looks good"}"#,
        ),
        (
            BOB,
            "close",
            "Task-42",
            Some(vec![GENERAL]),
            None,
            r#"{"reason": "done"}"#,
        ),
        (
            CAROL,
            "mention",
            "Doc-7",
            None,
            Some(vec![DAVE]),
            r#"{"excerpt": "@dave can you check?"}"#,
        ),
        (
            DAVE,
            "assign",
            "Task-43",
            None,
            Some(vec![ALICE, CAROL]),
            r#"{"due": "friday"}"#,
        ),
        (
            ALICE,
            "release",
            "v1.4.0",
            Some(vec![GENERAL, RANDOM]),
            None,
            r#"{"notes": "faster feeds"}"#,
        ),
    ];
    for (i, (actor, verb, object, channels, users, data)) in events.iter().enumerate() {
        let fields = EventFields {
            actor_id: actor.to_string(),
            verb: (*verb).into(),
            object_type: if object.starts_with('v') {
                "release"
            } else {
                "task"
            }
            .into(),
            object_id: (*object).into(),
            target_type: Some("project".into()),
            target_id: Some("P-7".into()),
            data: serde_json::from_str(data).ok(),
            channel_ids: channels
                .as_ref()
                .map(|c| c.iter().map(Uuid::to_string).collect()),
            user_ids: users
                .as_ref()
                .map(|u| u.iter().map(Uuid::to_string).collect()),
            client_event_id: Some(format!("demo-{i}")),
        };
        let new = NewEvent::parse(fields, 4096).expect("valid demo events");
        db.publish_event(&new, retention).await?;
    }
    Ok(events.len())
}
