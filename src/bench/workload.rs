//! The workload: a sequence of operations drawn from a seeded generator, with Zipf
//! channel popularity. The same settings and seed give every contender the same sequence.

use super::dataset::Dataset;
use super::rng::{Rng, Zipf};
use crate::domain::{ChannelId, MessageId, UserId};

/// Page size of every page the workload asks for.
pub const PAGE_LIMIT: u32 = 50;

#[derive(Debug, Clone, Copy)]
pub enum Op {
    /// The newest page.
    Latest {
        channel: ChannelId,
    },
    /// A page before a cursor, `depth` messages below the newest (as seeded).
    Before {
        channel: ChannelId,
        cursor: MessageId,
        depth: u32,
    },
    Unread {
        channel: ChannelId,
        user: UserId,
    },
    /// Sync of one channel from `back` changes before the seeded seq.
    Sync {
        channel: ChannelId,
        since: i64,
        user: UserId,
    },
    Post {
        channel: ChannelId,
        user: UserId,
    },
}

impl Op {
    pub fn channel(&self) -> ChannelId {
        match *self {
            Op::Latest { channel }
            | Op::Before { channel, .. }
            | Op::Unread { channel, .. }
            | Op::Sync { channel, .. }
            | Op::Post { channel, .. } => channel,
        }
    }

    pub fn is_read(&self) -> bool {
        !matches!(self, Op::Post { .. })
    }

    /// How far back from the newest message a read needs (for the hot-window sweep).
    pub fn depth(&self) -> u32 {
        match *self {
            Op::Latest { .. } => PAGE_LIMIT,
            Op::Before { depth, .. } => depth + PAGE_LIMIT,
            Op::Unread { .. } | Op::Sync { .. } => PAGE_LIMIT,
            Op::Post { .. } => 0,
        }
    }
}

/// What share of the operations each kind gets.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub writes: f64,
    pub latest: f64,
    pub before: f64,
    pub unread: f64,
    pub sync: f64,
}

impl Mix {
    /// Only latest pages: the cached-page throughput scenario.
    pub const LATEST_ONLY: Mix = Mix {
        writes: 0.0,
        latest: 1.0,
        before: 0.0,
        unread: 0.0,
        sync: 0.0,
    };

    /// Reads split 60 / 15 / 15 / 10 between latest, before, unread and sync.
    pub fn mixed(writes: f64) -> Mix {
        Mix {
            writes,
            latest: 0.60,
            before: 0.15,
            unread: 0.15,
            sync: 0.10,
        }
    }
}

pub fn generate(
    dataset: &Dataset,
    zipf_exponent: f64,
    mix: Mix,
    count: usize,
    seed: u64,
) -> Vec<Op> {
    let mut rng = Rng::new(seed);
    let zipf = Zipf::new(dataset.channels.len(), zipf_exponent);
    let per_channel = dataset.shape.messages_per_channel as i64;
    (0..count)
        .map(|_| {
            let i = zipf.sample(&mut rng);
            let channel = dataset.channels[i];
            let members = &dataset.members[i];
            let user = members[rng.below(members.len())];
            if rng.unit() < mix.writes {
                return Op::Post { channel, user };
            }
            let r = rng.unit() * (mix.latest + mix.before + mix.unread + mix.sync);
            if r < mix.latest {
                Op::Latest { channel }
            } else if r < mix.latest + mix.before {
                // Anywhere in the seeded history: about a third lies past a 200-message window.
                let (oldest, newest) = dataset.id_ranges[i];
                let depth = rng.below((newest - oldest).max(1) as usize) as i64;
                let cursor = MessageId(newest - depth);
                let depth = (depth * per_channel / (newest - oldest + 1).max(1)) as u32;
                Op::Before {
                    channel,
                    cursor,
                    depth,
                }
            } else if r < mix.latest + mix.before + mix.unread {
                Op::Unread { channel, user }
            } else {
                let since = (per_channel - rng.below(20) as i64).max(0);
                Op::Sync {
                    channel,
                    since,
                    user,
                }
            }
        })
        .collect()
}
