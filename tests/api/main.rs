//! hotchan's integration tests: one binary, every test on its own database, Redis key
//! prefix and port, against real Postgres and Redis.

mod helpers;

mod channels;
mod cli;
mod concurrency;
mod hostile;
mod messages;
mod ops;
mod paging;
mod partition;
mod reads;
mod sync;
