//! The benchmark's dataset (`hotchan bench`): channels, members and messages with fixed
//! ids derived from their index, so a second run reuses what the first seeded. Seeding
//! only ever adds rows to channels of its own; it never deletes or changes anything else.
//! Its statements live here, with every other statement hotchan sends.

use uuid::Uuid;

use super::{connect_config, tls, DbError, PgSettings};
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

/// A connection of the benchmark's own, outside the pool, without a statement timeout
/// (seeding and its VACUUM take longer than a request's).
pub struct Seeder {
    client: tokio_postgres::Client,
}

impl Seeder {
    pub async fn connect(settings: &PgSettings) -> Result<Seeder, DbError> {
        let (client, connection) = connect_config(settings, &settings.url)
            .connect(tls(&settings.url)?)
            .await?;
        tokio::spawn(connection);
        client.batch_execute("SET statement_timeout = 0").await?;
        Ok(Seeder { client })
    }

    /// Seeds what is missing of `shape`, showing progress, and reads back what the
    /// workload needs. `shape.users` must be at least `shape.members_per_channel`.
    pub async fn seed(&self, shape: Shape) -> Result<Dataset, DbError> {
        seed(&self.client, shape).await
    }

    /// A new group channel with `audience` members of random ids (`bench --feeds`).
    pub async fn audience_channel(&self, audience: i64) -> Result<ChannelId, DbError> {
        let channel: Uuid = self
            .client
            .query_one(
                "INSERT INTO channels (type, name) VALUES ('group', 'feed bench') RETURNING id",
                &[],
            )
            .await?
            .get(0);
        self.client
            .execute(
                "INSERT INTO channel_members (channel_id, user_id)
                 SELECT $1, gen_random_uuid() FROM generate_series(1, $2::bigint)",
                &[&channel, &audience],
            )
            .await?;
        Ok(ChannelId(channel))
    }

    /// Background fan-outs not finished yet.
    pub async fn fanouts_left(&self) -> Result<i64, DbError> {
        let row = self
            .client
            .query_one("SELECT count(*) FROM fanouts", &[])
            .await?;
        Ok(row.get(0))
    }

    /// `events` events, and `per_reader` feed items for each of `readers` spread over
    /// them; then VACUUM (ANALYZE), so that every contender's page queries scan the index
    /// only, instead of whichever runs first paying for it (or for autovacuum).
    pub async fn seed_feed_readers(
        &self,
        readers: &[Uuid],
        events: i64,
        per_reader: i64,
    ) -> Result<(), DbError> {
        let base: i64 = self
            .client
            .query_one(
                "WITH made AS (
                   INSERT INTO events (id, created_at, actor_id, verb, object_type, object_id,
                                       data, recipients)
                   SELECT nextval('events_id_seq'), now(), gen_random_uuid(), 'comment', 'task',
                          'Task-' || g, '{\"excerpt\": \"looks good\"}', 0
                   FROM generate_series(1, $1::bigint) g RETURNING id)
                 SELECT min(id) FROM made",
                &[&events],
            )
            .await?
            .get(0);
        self.client
            .execute(
                "INSERT INTO feed_items (user_id, event_id, created_at)
                 SELECT u.r, e.id, e.created_at
                 FROM unnest($1::uuid[]) WITH ORDINALITY AS u(r, o)
                 CROSS JOIN generate_series(0, $4::bigint - 1) j
                 JOIN events e ON e.id = $2 + ((u.o * 7 + j * ($3 / $4)) % $3)
                 ON CONFLICT DO NOTHING",
                &[&readers, &base, &events, &per_reader],
            )
            .await?;
        self.client
            .batch_execute("VACUUM (ANALYZE) events, feed_items")
            .await?;
        Ok(())
    }

    /// A group channel with `messages` messages (seq 1..=messages).
    pub async fn hot_channel(&self, messages: i64) -> Result<ChannelId, DbError> {
        let channel: Uuid = self
            .client
            .query_one(
                "WITH c AS (INSERT INTO channels (type, name, last_seq)
                            VALUES ('group', 'hot', $1) RETURNING id),
                      m AS (INSERT INTO messages (channel_id, sender_id, content, seq)
                            SELECT c.id, gen_random_uuid(), 'message ' || s, s
                            FROM c, generate_series(1, $1) s)
                 SELECT id FROM c",
                &[&messages],
            )
            .await?
            .get(0);
        Ok(ChannelId(channel))
    }
}

async fn seed(client: &tokio_postgres::Client, shape: Shape) -> Result<Dataset, DbError> {
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
) -> Result<(), DbError> {
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
