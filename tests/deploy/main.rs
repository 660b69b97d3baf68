//! Deployment tests: hotchan against private servers these tests start on free ports and
//! stop — a Redis Cluster with a primary killed and restarted, Sentinel with a forced
//! failover, TLS Redis and TLS Postgres with certificates made in the test. Each test
//! owns its servers, so restarts and reconfiguration touch nothing else.

#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;
#[path = "../cache/support.rs"]
#[allow(dead_code)]
mod support;

mod acl;
mod cluster;
mod distribution;
mod node_outage;
mod pg_failover;
mod pg_replicas;
mod postgres_servers;
mod redis_cluster;
mod sentinel;
mod sentinel_tls;
mod servers;
mod tls;
