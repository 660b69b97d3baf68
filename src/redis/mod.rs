//! The only module that imports `fred`. Until the cache tiers land, hotchan uses Redis for
//! its readiness report only; reads and writes never wait on it.

use std::time::Duration;

use fred::prelude::{Builder, ClientLike, Config, ReconnectPolicy};

/// A Redis connection that reconnects by itself and bounds every call by a timeout.
#[derive(Clone)]
pub struct Redis {
    client: fred::clients::Client,
    timeout: Duration,
}

/// Redis could not be set up (a bad URL); being unreachable is not an error here.
#[derive(Debug, thiserror::Error)]
#[error("bad Redis configuration")]
pub struct RedisConfigError(#[source] fred::error::Error);

/// Reconnect back-off: from 100 ms doubling to 2 s, forever (0 = no attempt limit).
const RECONNECT_MIN_MS: u32 = 100;
const RECONNECT_MAX_MS: u32 = 2_000;
/// How long opening one connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

impl Redis {
    /// Starts connecting in the background; returns at once, reachable or not.
    pub fn connect(url: &str, timeout: Duration) -> Result<Redis, RedisConfigError> {
        let config = Config::from_url(url).map_err(RedisConfigError)?;
        let client = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = CONNECT_TIMEOUT;
                c.internal_command_timeout = timeout;
            })
            .with_performance_config(|p| p.default_command_timeout = timeout)
            .set_policy(ReconnectPolicy::new_exponential(
                0,
                RECONNECT_MIN_MS,
                RECONNECT_MAX_MS,
                2,
            ))
            .build()
            .map_err(RedisConfigError)?;
        // The connection task runs until `quit`; it reconnects by the policy above.
        let _task = client.connect();
        Ok(Redis { client, timeout })
    }

    /// True when Redis answers a PING within the call timeout.
    pub async fn is_up(&self) -> bool {
        let ping = self.client.ping::<String>(None);
        matches!(tokio::time::timeout(self.timeout, ping).await, Ok(Ok(_)))
    }

    /// Closes the connection.
    pub async fn close(&self) {
        let _ = tokio::time::timeout(self.timeout, self.client.quit()).await;
    }
}
