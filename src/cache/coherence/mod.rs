//! Coherence: how every instance learns of what another one wrote, and how the cache
//! recovers what Redis missed.
//!
//! - [`invalidation`]: the wire format of invalidations on Redis pub/sub, the listener
//!   that applies other instances' invalidations to L1 (with its own heartbeat, so lost
//!   messages bypass L1 until they arrive again), and the repair task that drops dirty
//!   scopes from Redis once it answers.
//! - [`notices`]: the second path, through Postgres, for writes that could not reach
//!   Redis: the announcement in the write's wake, and the `LISTEN`ing connection that
//!   hears other instances' announcements and catches up after a disconnection.
//!
//! The dirty set itself lives with the breaker ([`super::health`]); the tasks are started
//! in [`crate::tasks`].

pub mod invalidation;
pub mod notices;
