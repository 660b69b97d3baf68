//! Tests of the cache tiers against real Redis and Postgres: the Lua scripts directly,
//! races ordered by hooks, several instances, and Redis faults (through a proxy or a
//! private server).

#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;
mod support;

mod audit;
mod crash;
mod faults;
mod feed_outages;
mod feeds;
mod history;
mod instances;
mod partition;
mod paths;
mod races;
mod scripts;
