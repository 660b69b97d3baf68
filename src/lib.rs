//! # hotchan
//!
//! A hot-channel cache sidecar for chat backends: an HTTP API (see `docs/api.md`) over
//! Postgres, the source of truth, with Redis and an in-process L1 in front of it.
//!
//! # Layout
//! Modules follow the data path of a request, outside in:
//! - [`cli`]: the command line (read by `main.rs` only).
//! - [`config`]: the settings of `hotchan serve`, as flags and environment variables with
//!   their defaults; each module's own settings type lives with it.
//! - [`app`]: wiring. Builds pools and clients, binds the listener, runs until shutdown.
//! - [`api`]: the only module that knows HTTP and JSON: routes, extractors, error mapping.
//! - [`service`]: the operations of the contract (post, page, sync, …) in domain types.
//! - [`cache`]: the tiers in front of Postgres. One engine (`cache::tiers`: L1, Redis,
//!   fenced fills, presence, the breaker) serves every kind of cached data through its
//!   `Source` trait; beside it coherence across instances (`cache::coherence`).
//! - [`domain`]: ids, messages, pages, cursors: validated types, no I/O.
//! - [`postgres`]: the only module that imports `tokio-postgres`/`deadpool`: queries and
//!   migrations.
//! - [`redis`]: the only module that imports `fred`: keys, Lua scripts, codec, pub/sub,
//!   cluster slot grouping, and `WAIT` for failover safety.
//! - [`tls`]: the only module that imports rustls: the TLS settings of Redis and Postgres.
//! - [`tasks`]: every background task, started in one place.
//! - [`crash`]: named crash points, armed only by the crash-safety tests.
//! - [`metrics`]: the per-instance Prometheus registry.
//! - [`progress`]: the progress bar of long operations (seeding, table conversion).
//! - [`demo`]: the small demo dataset loaded by `scripts/run`.
//! - [`bench`]: `hotchan bench`, the load benchmark and hit-rate study.
//!
//! # Glossary of cache verbs
//! - `get_*` looks in a cache (L1 or Redis); `load_*` reads Postgres; `fetch_*` reads
//!   through the tiers; `install` puts a fill in Redis through its fence; `invalidate_*`
//!   removes on purpose.
//! - An entry is *invalidated* (on purpose), *evicted* (capacity) or *expired* (time);
//!   the three words never mean the same thing.

pub mod api;
pub mod app;
pub mod bench;
pub mod cache;
pub mod cli;
pub mod config;
pub mod crash;
pub mod demo;
pub mod domain;
pub mod metrics;
pub mod postgres;
pub mod progress;
pub mod redis;
pub mod service;
pub mod tasks;
pub mod tls;
