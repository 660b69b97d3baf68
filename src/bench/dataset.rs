//! The benchmark's dataset: channels, members and messages with fixed ids derived from
//! their index, so a second run reuses what the first seeded. Seeding only ever adds
//! rows to channels of its own; it never deletes or changes anything else.

use uuid::Uuid;

use crate::domain::{ChannelId, UserId};
use crate::progress::Progress;

/// Channels seeded per statement.
const BATCH: usize = 50;
/// Batches between two ANALYZEs while seeding.
const ANALYZE_EVERY: usize = 100;

/// Sizes of the dataset.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub channels: usize,
    pub members_per_channel: usize,
    pub messages_per_channel: usize,
    pub users: usize,
    pub markers: Markers,
}

/// Where members' read markers are seeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Markers {
    /// In the newest 100 messages of the channel, as active members' are.
    Recent,
    /// 90% in the newest 100, 10% anywhere in the channel's history (the scale profile).
    MostlyRecent,
}

/// The seeded dataset, as the workload needs it.
pub struct Dataset {
    pub shape: Shape,
    pub channels: Vec<ChannelId>,
    pub members: Vec<Vec<UserId>>,
    /// The smallest and largest message id of each channel at seeding.
    pub id_ranges: Vec<(i64, i64)>,
    /// The channels (indexes into `channels`) of each user.
    pub user_channels: std::collections::HashMap<UserId, Vec<usize>>,
}

fn channel_id(i: usize) -> ChannelId {
    ChannelId(Uuid::from_u128(
        0xbe9c_0000_0000_4000_8000_0000_0000_0000 | i as u128,
    ))
}

fn user_id(j: usize) -> UserId {
    UserId(Uuid::from_u128(
        0xbe9c_0001_0000_4000_8000_0000_0000_0000 | j as u128,
    ))
}

/// Members of channel `i`: distinct users spread over the pool.
fn members_of(i: usize, shape: &Shape) -> Vec<UserId> {
    let stride = (shape.users / shape.members_per_channel).max(1);
    (0..shape.members_per_channel)
        .map(|k| user_id((i + k * stride) % shape.users))
        .collect()
}

/// Seeds what is missing, showing progress, and reads back what the workload needs.
pub async fn seed(client: &tokio_postgres::Client, shape: Shape) -> anyhow::Result<Dataset> {
    anyhow::ensure!(
        shape.users >= shape.members_per_channel,
        "--users must be at least --members"
    );
    // Seeding and its VACUUM take longer than a request's statement timeout.
    client.batch_execute("SET statement_timeout = 0").await?;
    let channels: Vec<ChannelId> = (0..shape.channels).map(channel_id).collect();
    let members: Vec<Vec<UserId>> = (0..shape.channels).map(|i| members_of(i, &shape)).collect();
    let ids: Vec<Uuid> = channels.iter().map(|c| c.0).collect();
    let existing: std::collections::HashSet<Uuid> = client
        .query("SELECT id FROM channels WHERE id = ANY($1)", &[&ids])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let missing: Vec<usize> = (0..shape.channels)
        .filter(|&i| !existing.contains(&channels[i].0))
        .collect();
    if !missing.is_empty() {
        let mut progress = Progress::new("seeding channels", missing.len() as u64);
        for (n, batch) in missing.chunks(BATCH).enumerate() {
            seed_batch(client, batch, &channels, &members, &shape).await?;
            progress.add(batch.len() as u64);
            if n % ANALYZE_EVERY == ANALYZE_EVERY - 1 {
                // Statistics as the tables grow: with those of an empty table the marker
                // update below scans all of messages, and seeding 100m slowed 3-fold.
                client
                    .batch_execute("ANALYZE messages, channel_members")
                    .await?;
            }
        }
        progress.finish();
        // Sets the visibility map, so unread counts are index-only as in a vacuumed
        // production table, and gives the planner statistics.
        eprintln!("==> VACUUM ANALYZE after seeding");
        client.batch_execute("VACUUM ANALYZE").await?;
    }
    let rows = client
        .query(
            // The seeded messages only (seqs 1..=n): posts of earlier runs come after them.
            "SELECT channel_id, min(id), max(id) FROM messages
             WHERE channel_id = ANY($1) AND seq <= $2 GROUP BY channel_id",
            &[&ids, &(shape.messages_per_channel as i64)],
        )
        .await?;
    let ranges: std::collections::HashMap<Uuid, (i64, i64)> = rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let id_ranges = channels
        .iter()
        .map(|c| ranges.get(&c.0).copied().unwrap_or((0, 0)))
        .collect();
    let mut user_channels: std::collections::HashMap<UserId, Vec<usize>> = Default::default();
    for (i, ms) in members.iter().enumerate() {
        for &m in ms {
            user_channels.entry(m).or_default().push(i);
        }
    }
    Ok(Dataset {
        shape,
        channels,
        members,
        id_ranges,
        user_channels,
    })
}

async fn seed_batch(
    client: &tokio_postgres::Client,
    batch: &[usize],
    channels: &[ChannelId],
    members: &[Vec<UserId>],
    shape: &Shape,
) -> anyhow::Result<()> {
    let ids: Vec<Uuid> = batch.iter().map(|&i| channels[i].0).collect();
    let names: Vec<String> = batch.iter().map(|i| format!("bench-{i}")).collect();
    let flat_members: Vec<Uuid> = batch
        .iter()
        .flat_map(|&i| members[i].iter().map(|u| u.0))
        .collect();
    let per = shape.members_per_channel as i64;
    let messages = shape.messages_per_channel as i64;
    client
        .execute(
            "INSERT INTO channels (id, type, name, last_seq)
             SELECT c, 'group', n, $3 FROM unnest($1::uuid[], $2::text[]) AS t(c, n)
             ON CONFLICT (id) DO NOTHING",
            &[&ids, &names, &messages],
        )
        .await?;
    client
        .execute(
            "INSERT INTO channel_members (channel_id, user_id, role)
             SELECT c, ($2::uuid[])[((o - 1) * $3::bigint + k)::int], 'member'
             FROM unnest($1::uuid[]) WITH ORDINALITY AS t(c, o), generate_series(1, $3::bigint) k
             ON CONFLICT DO NOTHING",
            &[&ids, &flat_members, &per],
        )
        .await?;
    client
        .execute(
            "INSERT INTO messages (channel_id, sender_id, content, seq, created_at)
             SELECT c, ($2::uuid[])[((o - 1) * $3::bigint + 1 + (s % $3::bigint))::int],
                    'bench message ' || s || ' ' || repeat('lorem ipsum ', 6), s,
                    now() - make_interval(secs => ($4 - s)::float8)
             FROM unnest($1::uuid[]) WITH ORDINALITY AS t(c, o), generate_series(1, $4::bigint) s",
            &[&ids, &flat_members, &per, &messages],
        )
        .await?;
    // Members have read up to somewhere in the newest 100 messages, as active members do
    // (a marker far back makes an unread count that no hot window can answer); with
    // `MostlyRecent`, one membership in ten has its marker anywhere in the history.
    let anywhere = shape.markers == Markers::MostlyRecent;
    client
        .execute(
            "UPDATE channel_members cm SET last_read_message_id = CASE
               WHEN $2 AND (hashtext(cm.channel_id::text || cm.user_id::text) & 1023) % 10 = 0
                 THEN r.oldest + (hashtext(cm.user_id::text || cm.channel_id::text) & 1048575)
                                 % (r.newest - r.oldest + 1)
               ELSE r.newest - (hashtext(cm.user_id::text) & 127) % 100 END
             FROM (SELECT channel_id, min(id) AS oldest, max(id) AS newest FROM messages
                   WHERE channel_id = ANY($1) GROUP BY channel_id) r
             WHERE cm.channel_id = r.channel_id",
            &[&ids, &anywhere],
        )
        .await?;
    Ok(())
}
