//! hotchan's integration tests: one binary, every test on its own database, Redis key
//! prefix and port, against real Postgres and Redis.

mod helpers;

/// The contract holds as deployed: with the cost gate on, which sends some reads straight
/// to Postgres (`HOTCHAN_TEST_GATE=off` turns it off).
pub const GATE_BY_DEFAULT: bool = true;

mod admin;
mod advice;
mod channels;
mod cli;
mod concurrency;
mod docs;
mod feed_faults;
mod feeds;
mod hostile;
mod layers;
mod messages;
mod openapi;
mod ops;
mod paging;
mod partition;
mod reads;
mod sync;
