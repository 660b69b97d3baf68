//! What one cache invalidation covers: the unit that the dirty set, the notices through
//! Postgres and the repair of Redis all speak of.

use super::feed::EventId;
use super::{ChannelId, UserId};

/// What a write changed, as the cache sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Everything cached (a flush, or too many entries to name one by one).
    Everything,
    /// A channel's window, member set and deep history.
    Channel(ChannelId),
    /// A user's hot feed.
    Feed(UserId),
    /// One event's body, shared by every feed that shows it.
    Event(EventId),
}

impl Scope {
    /// `*`, `<channel id>`, `f:<user id>` or `e:<event id>`.
    pub fn encode(&self) -> String {
        match self {
            Scope::Everything => "*".to_owned(),
            Scope::Channel(c) => c.to_string(),
            Scope::Feed(u) => format!("f:{u}"),
            Scope::Event(e) => format!("e:{}", e.0),
        }
    }

    /// The inverse of [`Scope::encode`]; `None` for text it never makes.
    pub fn parse(text: &str) -> Option<Scope> {
        Some(match text.split_once(':') {
            _ if text == "*" => Scope::Everything,
            Some(("f", user)) => Scope::Feed(UserId::parse(user).ok()?),
            Some(("e", event)) => Scope::Event(EventId::parse(event).ok()?),
            Some(_) => return None,
            None => Scope::Channel(ChannelId::parse(text).ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn scopes_round_trip_through_their_text() {
        for scope in [
            Scope::Everything,
            Scope::Channel(ChannelId(Uuid::new_v4())),
            Scope::Feed(UserId(Uuid::new_v4())),
            Scope::Event(EventId(42)),
        ] {
            assert_eq!(Scope::parse(&scope.encode()), Some(scope));
        }
        for bad in ["", "not-a-uuid", "f:nope", "e:x", "x:1"] {
            assert_eq!(Scope::parse(bad), None, "{bad}");
        }
    }
}
