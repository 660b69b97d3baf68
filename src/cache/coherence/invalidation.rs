//! Cross-instance coherence of L1 (the repair of what Redis missed is in `super::repair`).
//!
//! Every instance publishes its invalidations on `<prefix>:invalidate`, and a heartbeat of
//! its own every [`HEARTBEAT_INTERVAL`]. Hearing its own heartbeat proves that messages
//! reach it. When the subscription reports lost messages, or no own heartbeat came for
//! [`HEARTBEAT_STALE`], L1 is bypassed; the next own heartbeat flushes L1 and ends the
//! bypass. So an L1 entry is never served more than [`HEARTBEAT_STALE`] after an
//! invalidation it missed, well inside the contract's 1 second.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::Coherence;
use crate::cache::l1::Key;
use crate::cache::stats::bump;
use crate::cache::tiers::Tiers;
use crate::domain::feed::EventId;
use crate::domain::{ChannelId, Lsn, Scope, UserId};
use crate::redis::SubscriptionEvent;

/// How often each instance publishes its heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);
/// Without an own heartbeat for this long, L1 is bypassed.
pub const HEARTBEAT_STALE: Duration = Duration::from_millis(500);

/// What an invalidation drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidation {
    Key(Key),
    Channel(ChannelId),
    Everything,
}

/// A message on the invalidation channel.
#[derive(Debug, PartialEq, Eq)]
enum Notice {
    Invalidate {
        from: String,
        what: Invalidation,
    },
    /// The feeds of these users (one message for a whole delivery).
    Feeds {
        from: String,
        users: Vec<UserId>,
    },
    Heartbeat {
        from: String,
    },
}

/// Users named in one feeds message: about 7 KB of text.
pub const FEEDS_PER_MESSAGE: usize = 200;

/// `inv <instance> F <user> <user> …`.
pub fn encode_feeds(instance: &str, users: &[UserId]) -> String {
    let mut text = format!("inv {instance} F");
    for u in users {
        text.push(' ');
        text.push_str(&u.to_string());
    }
    text
}

impl Invalidation {
    /// What a write that could not be told to Redis leaves dirty.
    pub fn scope(&self) -> Scope {
        match *self {
            Invalidation::Key(Key::Feed(u)) => Scope::Feed(u),
            Invalidation::Key(Key::Event(e)) => Scope::Event(e),
            Invalidation::Key(
                Key::Window(c) | Key::LatestPage(c, _) | Key::Members(c) | Key::History(c),
            )
            | Invalidation::Channel(c) => Scope::Channel(c),
            Invalidation::Everything => Scope::Everything,
        }
    }

    /// What a scope covers in L1.
    pub fn covering(scope: Scope) -> Invalidation {
        match scope {
            Scope::Everything => Invalidation::Everything,
            Scope::Channel(c) => Invalidation::Channel(c),
            Scope::Feed(u) => Invalidation::Key(Key::Feed(u)),
            Scope::Event(e) => Invalidation::Key(Key::Event(e)),
        }
    }

    /// `inv <instance> w|m|c <channel>` or `inv <instance> *`.
    pub fn encode(&self, instance: &str) -> String {
        match self {
            Invalidation::Key(Key::Window(c) | Key::LatestPage(c, _)) => {
                format!("inv {instance} w {c}")
            }
            Invalidation::Key(Key::Members(c)) => format!("inv {instance} m {c}"),
            Invalidation::Key(Key::History(c)) => format!("inv {instance} h {c}"),
            Invalidation::Key(Key::Feed(u)) => format!("inv {instance} f {u}"),
            Invalidation::Key(Key::Event(e)) => format!("inv {instance} e {}", e.0),
            Invalidation::Channel(c) => format!("inv {instance} c {c}"),
            Invalidation::Everything => format!("inv {instance} *"),
        }
    }
}

/// A message with the WAL position of its write appended (` @<16 hex digits>`), when
/// read replicas are set: what the hearer needs a replica to have replayed (promise 8).
fn with_position(message: String, at: Option<Lsn>) -> String {
    match at {
        Some(at) => format!("{message} @{}", at.hex()),
        None => message,
    }
}

/// A message's text and the write position it carries, if any.
fn split_position(text: &str) -> (&str, Option<Lsn>) {
    match text.rsplit_once(" @") {
        Some((rest, hex)) => match Lsn::parse_hex(hex) {
            Some(at) => (rest, Some(at)),
            None => (text, None),
        },
        None => (text, None),
    }
}

fn parse(text: &str) -> Option<Notice> {
    let mut words = text.split(' ');
    let (kind, from) = (words.next()?, words.next()?.to_owned());
    match kind {
        "hb" => Some(Notice::Heartbeat { from }),
        "inv" if text.split(' ').nth(2) == Some("F") => {
            let users = words
                .skip(1)
                .map(|u| UserId::parse(u).ok())
                .collect::<Option<Vec<_>>>()?;
            Some(Notice::Feeds { from, users })
        }
        "inv" => {
            let what = match (words.next()?, words.next()) {
                ("*", None) => Invalidation::Everything,
                ("f", Some(u)) => Invalidation::Key(Key::Feed(UserId::parse(u).ok()?)),
                ("e", Some(e)) => Invalidation::Key(Key::Event(EventId::parse(e).ok()?)),
                (scope, Some(c)) => {
                    let channel = ChannelId::parse(c).ok()?;
                    match scope {
                        "w" => Invalidation::Key(Key::Window(channel)),
                        "m" => Invalidation::Key(Key::Members(channel)),
                        "h" => Invalidation::Key(Key::History(channel)),
                        "c" => Invalidation::Channel(channel),
                        _ => return None,
                    }
                }
                _ => return None,
            };
            Some(Notice::Invalidate { from, what })
        }
        _ => None,
    }
}

/// The pub/sub side of coherence: this instance's invalidations out, other instances'
/// in, and the repair of what Redis missed.
pub struct Invalidations {
    pub(super) tiers: Arc<Tiers>,
    /// This instance's name on the invalidation channel.
    pub(super) instance: Arc<str>,
    /// Invalidations heard and not yet applied.
    backlog: AtomicUsize,
}

impl Invalidations {
    pub(super) fn new(tiers: Arc<Tiers>, instance: Arc<str>) -> Invalidations {
        Invalidations {
            tiers,
            instance,
            backlog: AtomicUsize::new(0),
        }
    }

    /// Invalidations heard and not yet applied.
    pub fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Relaxed)
    }

    /// Drops what `what` names from L1 here.
    pub fn apply(&self, what: Invalidation) {
        match what {
            Invalidation::Key(key) => self.tiers.l1.invalidate(key),
            Invalidation::Channel(c) => self.tiers.l1.invalidate_channel(c),
            Invalidation::Everything => self.tiers.l1.flush(),
        }
    }

    /// Publishes these invalidations for the other instances (users' feeds a few hundred
    /// to a message); false when one could not be sent.
    pub(super) async fn publish_all(&self, changed: &[Invalidation], at: Option<Lsn>) -> bool {
        let feeds: Vec<UserId> = changed
            .iter()
            .filter_map(|what| match what {
                Invalidation::Key(Key::Feed(user)) => Some(*user),
                _ => None,
            })
            .collect();
        for &what in changed {
            if !matches!(what, Invalidation::Key(Key::Feed(_)))
                && !self
                    .publish_text(with_position(what.encode(&self.instance), at))
                    .await
            {
                return false;
            }
        }
        feeds.is_empty() || self.publish_feeds(&feeds, at).await
    }

    /// Publishes the invalidation of these users' feeds, a few hundred to a message.
    async fn publish_feeds(&self, users: &[UserId], at: Option<Lsn>) -> bool {
        let messages = users
            .chunks(FEEDS_PER_MESSAGE)
            .map(|chunk| self.publish_text(with_position(encode_feeds(&self.instance, chunk), at)));
        futures::future::join_all(messages)
            .await
            .into_iter()
            .all(|sent| sent)
    }

    async fn publish_text(&self, message: String) -> bool {
        let tiers = &self.tiers;
        let channel = tiers.redis.invalidation_channel();
        let call = tiers.redis.publish(&channel, message);
        // Any node may take a `PUBLISH` (on a cluster, a connected one does).
        let sent = tiers
            .redis_call(Scope::Everything, "publish", call)
            .await
            .is_some();
        if sent {
            bump(&tiers.stats.invalidations_sent);
        }
        sent
    }
}

impl Invalidations {
    /// Applies one message of another instance (learning the write position it carries);
    /// true when it is this instance's own heartbeat.
    fn hear(&self, text: &str) -> bool {
        let (text, at) = split_position(text);
        match parse(text) {
            Some(Notice::Heartbeat { from }) if *from == *self.instance => {
                if self.tiers.l1.is_bypassed() {
                    self.tiers.l1.resume();
                    info!("invalidations arrive: L1 flushed and serving");
                }
                return true;
            }
            Some(Notice::Invalidate { from, what }) if *from != *self.instance => {
                if let Some(at) = at {
                    self.tiers.db.heard(what.scope(), at);
                }
                self.apply(what);
                bump(&self.tiers.stats.invalidations_received);
            }
            Some(Notice::Feeds { from, users }) if *from != *self.instance => {
                for user in users {
                    if let Some(at) = at {
                        self.tiers.db.heard(Scope::Feed(user), at);
                    }
                    self.tiers.l1.invalidate(Key::Feed(user));
                }
                bump(&self.tiers.stats.invalidations_received);
            }
            _ => {}
        }
        false
    }
}

/// Applies other instances' invalidations and watches its own heartbeat.
pub async fn listen(coherence: Arc<Coherence>) {
    let cache = &coherence.invalidations;
    let channel = cache.tiers.redis.invalidation_channel();
    let mut subscription = loop {
        match cache.tiers.redis.subscribe(&channel).await {
            Ok(s) => break s,
            Err(error) => {
                warn!(%error, "cannot subscribe to invalidations yet; L1 stays bypassed");
                tokio::time::sleep(HEARTBEAT_INTERVAL).await;
            }
        }
    };
    let mut ticker = tokio::time::interval(HEARTBEAT_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heartbeat: Option<Instant> = None;
    let heartbeat = format!("hb {}", cache.instance);
    loop {
        cache
            .backlog
            .store(subscription.backlog(), Ordering::Relaxed);
        tokio::select! {
            event = subscription.next() => match event {
                None => {
                    // No more invalidations can arrive: never serve from L1 again.
                    cache.tiers.l1.bypass();
                    warn!("the invalidation subscription ended: L1 bypassed for good");
                    return;
                }
                Some(SubscriptionEvent::Lost) => {
                    if !cache.tiers.l1.is_bypassed() {
                        warn!("invalidations may have been lost: L1 bypassed until they arrive again");
                    }
                    cache.tiers.l1.bypass();
                    last_heartbeat = None;
                }
                Some(SubscriptionEvent::Message(text)) => {
                    if cache.hear(&text) {
                        last_heartbeat = Some(Instant::now());
                    }
                }
            },
            _ = ticker.tick() => {
                let stale = last_heartbeat.is_none_or(|t| t.elapsed() > HEARTBEAT_STALE);
                if stale && !cache.tiers.l1.is_bypassed() {
                    warn!("no heartbeat on the invalidation channel: L1 bypassed");
                    cache.tiers.l1.bypass();
                }
                let (redis, channel, beat) = (cache.tiers.redis.clone(), channel.clone(), heartbeat.clone());
                tokio::spawn(async move { let _ = redis.publish(&channel, beat).await; });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn invalidations_round_trip_through_their_text() {
        let c = ChannelId(Uuid::new_v4());
        for what in [
            Invalidation::Key(Key::Window(c)),
            Invalidation::Key(Key::Members(c)),
            Invalidation::Key(Key::History(c)),
            Invalidation::Key(Key::Feed(UserId(Uuid::new_v4()))),
            Invalidation::Key(Key::Event(EventId(42))),
            Invalidation::Channel(c),
            Invalidation::Everything,
        ] {
            assert_eq!(
                parse(&what.encode("i1")),
                Some(Notice::Invalidate {
                    from: "i1".into(),
                    what
                })
            );
        }
        let users = vec![UserId(Uuid::new_v4()), UserId(Uuid::new_v4())];
        assert_eq!(
            parse(&encode_feeds("i3", &users)),
            Some(Notice::Feeds {
                from: "i3".into(),
                users
            })
        );
        assert_eq!(
            parse("hb i2"),
            Some(Notice::Heartbeat { from: "i2".into() })
        );
        let at = Lsn(0x16_B374_D848);
        let text = with_position(Invalidation::Channel(c).encode("i4"), Some(at));
        let (rest, heard) = split_position(&text);
        assert_eq!(heard, Some(at));
        assert_eq!(
            parse(rest),
            Some(Notice::Invalidate {
                from: "i4".into(),
                what: Invalidation::Channel(c)
            })
        );
        assert_eq!(split_position("hb i2"), ("hb i2", None));
        assert_eq!(parse("inv i1 w not-a-uuid"), None);
        assert_eq!(parse("nonsense"), None);
    }
}
