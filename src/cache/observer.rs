//! What the cache reports as it works, to whoever watches it (the Prometheus registry in
//! [`crate::metrics`] implements it): the cache never imports the layer above it.

use std::time::Duration;

use super::paths::Path;

/// Told of every Redis and Postgres call the cache makes and of every read it answers.
/// Called on the request path: an implementation must not block.
pub trait Observer: Send + Sync {
    fn redis_call(&self, operation: &'static str, elapsed: Duration);
    fn postgres_call(&self, operation: &'static str, elapsed: Duration);
    fn read(&self, path: Path, elapsed: Duration);
}
