//! The workload: a sequence of operations drawn from a seeded generator, with Zipf
//! channel popularity. The same settings and seed give every contender the same sequence.

use super::dataset::Dataset;
use super::rng::{Rng, Zipf};
use crate::domain::{ChannelId, MessageId, UserId};

/// Page size of every page the workload asks for.
pub const PAGE_LIMIT: u32 = 50;
/// Channels in one sync request of the scale profile's sync scenario.
pub const SYNC_CHANNELS: usize = 20;
/// Deep `before` pages start at least this many messages below the newest: past the
/// default hot window of 200.
pub const DEEP: usize = 250;

// `SyncUser` makes every operation about 500 bytes; a workload of 20,000 is 10 MB, built
// before the clock starts. Boxing it would cost an allocation per operation and `Copy`.
#[allow(clippy::large_enum_variant)]
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
    /// A page after a cursor, `depth` messages below the newest (as seeded).
    After {
        channel: ChannelId,
        cursor: MessageId,
        depth: u32,
    },
    /// The user's unread counts in all of their channels.
    UserUnread {
        user: UserId,
    },
    /// Sync of [`SYNC_CHANNELS`] of the user's channels, each from a few changes back.
    SyncUser {
        user: UserId,
        channels: [(ChannelId, i64); SYNC_CHANNELS],
    },
}

impl Op {
    pub fn channel(&self) -> ChannelId {
        match *self {
            Op::Latest { channel }
            | Op::Before { channel, .. }
            | Op::Unread { channel, .. }
            | Op::Sync { channel, .. }
            | Op::Post { channel, .. }
            | Op::After { channel, .. } => channel,
            Op::SyncUser { channels, .. } => channels[0].0,
            Op::UserUnread { .. } => ChannelId(uuid::Uuid::nil()),
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
            Op::Unread { .. } | Op::Sync { .. } | Op::SyncUser { .. } | Op::UserUnread { .. } => {
                PAGE_LIMIT
            }
            Op::After { depth, .. } => depth,
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

/// Draws a channel by Zipf popularity and one of its members.
struct Picker {
    rng: Rng,
    zipf: Zipf,
}

impl Picker {
    fn new(dataset: &Dataset, zipf_exponent: f64, seed: u64) -> Picker {
        Picker {
            rng: Rng::new(seed),
            zipf: Zipf::new(dataset.channels.len(), zipf_exponent),
        }
    }

    /// The channel's index, the channel, and a member.
    fn pick(&mut self, dataset: &Dataset) -> (usize, ChannelId, UserId) {
        let i = self.zipf.sample(&mut self.rng);
        let members = &dataset.members[i];
        (
            i,
            dataset.channels[i],
            members[self.rng.below(members.len())],
        )
    }
}

pub fn generate(
    dataset: &Dataset,
    zipf_exponent: f64,
    mix: Mix,
    count: usize,
    seed: u64,
) -> Vec<Op> {
    let mut picker = Picker::new(dataset, zipf_exponent, seed);
    let per_channel = dataset.shape.messages_per_channel as i64;
    (0..count)
        .map(|_| {
            let (i, channel, user) = picker.pick(dataset);
            let rng = &mut picker.rng;
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

/// The scenarios of the scale profile (`hotchan bench --scale`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scenario {
    Latest,
    /// `before` pages below the hot window.
    DeepBefore,
    /// `after` pages from anywhere in the history.
    After,
    ChannelUnread,
    /// All of a user's channels.
    UserUnread,
    /// [`SYNC_CHANNELS`] channels with the user's unread counts.
    SyncUser,
    /// The mixed workload with this share of posts.
    Mix(f64),
}

impl Scenario {
    pub fn name(self) -> String {
        match self {
            Scenario::Latest => "latest page".into(),
            Scenario::DeepBefore => format!("deep before (≥ {DEEP} back)"),
            Scenario::After => "after page".into(),
            Scenario::ChannelUnread => "channel unread".into(),
            Scenario::UserUnread => "all-channel unread".into(),
            Scenario::SyncUser => format!("sync, {SYNC_CHANNELS} channels + user"),
            Scenario::Mix(w) => format!("mix, {:.0}% posts", w * 100.0),
        }
    }
}

/// A message `depth` below the newest of channel `i`, by position in its seeded id range.
fn at_depth(dataset: &Dataset, i: usize, depth: usize) -> MessageId {
    let (oldest, newest) = dataset.id_ranges[i];
    let span = (newest - oldest).max(0) as usize;
    MessageId(newest - depth.min(span) as i64)
}

/// `count` operations of one scale scenario, channels drawn by Zipf popularity.
pub fn scenario(
    dataset: &Dataset,
    zipf_exponent: f64,
    kind: Scenario,
    count: usize,
    seed: u64,
) -> Vec<Op> {
    if let Scenario::Mix(writes) = kind {
        return generate(dataset, zipf_exponent, Mix::mixed(writes), count, seed);
    }
    let mut picker = Picker::new(dataset, zipf_exponent, seed);
    let per_channel = dataset.shape.messages_per_channel;
    (0..count)
        .map(|_| {
            let (i, channel, user) = picker.pick(dataset);
            let rng = &mut picker.rng;
            match kind {
                Scenario::Latest => Op::Latest { channel },
                Scenario::DeepBefore => {
                    let depth = DEEP + rng.below(per_channel.saturating_sub(DEEP).max(1));
                    Op::Before {
                        channel,
                        cursor: at_depth(dataset, i, depth),
                        depth: depth as u32,
                    }
                }
                Scenario::After => {
                    let depth = rng.below(per_channel.max(1));
                    Op::After {
                        channel,
                        cursor: at_depth(dataset, i, depth),
                        depth: depth as u32,
                    }
                }
                Scenario::ChannelUnread => Op::Unread { channel, user },
                Scenario::UserUnread => Op::UserUnread { user },
                Scenario::SyncUser => {
                    let theirs = &dataset.user_channels[&user];
                    let start = rng.below(theirs.len());
                    let channels = std::array::from_fn(|k| {
                        let c = theirs[(start + k) % theirs.len()];
                        let since = (per_channel - rng.below(20)) as i64;
                        (dataset.channels[c], since.max(0))
                    });
                    Op::SyncUser { user, channels }
                }
                Scenario::Mix(_) => unreachable!("mixes are generated above"),
            }
        })
        .collect()
}
