//! hotchan's integration tests: one binary, every test on its own database, Redis key
//! prefix and port, against real Postgres and Redis.

mod helpers;

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
mod overload;
mod paging;
mod partition;
mod reads;
mod sync;
