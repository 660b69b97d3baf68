//! The check at startup that the Redis user may run what hotchan runs (Redis ACLs): each
//! command family is tried once, harmlessly, on a probe key under the prefix. A refusal
//! (`NOPERM`) stops startup with a message naming the command and carrying the server's
//! own words; any other failure is left to the breaker, as at run time.

use fred::prelude::KeysInterface;
use fred::types::Expiration;

use super::{Redis, RedisConfigError, RedisError};
use crate::domain::ChannelId;

/// Whether Redis refused a command for want of an ACL permission.
fn refused(error: &RedisError) -> bool {
    error.to_string().contains("NOPERM")
}

impl Redis {
    /// Tries every command family hotchan needs; `Err` naming the first one refused.
    pub(super) async fn check_permissions(&self) -> Result<(), RedisConfigError> {
        let probe = format!("{}:{{probe}}:acl", self.settings.prefix);
        let node = self.nodes.for_key(probe.as_bytes());
        let client = node.client();
        let checks: [(&str, Result<(), RedisError>); 7] = [
            ("SCRIPT LOAD", self.load_scripts().await),
            (
                "EVALSHA (a read script on the prefix's keys)",
                self.read_members(ChannelId(uuid::Uuid::nil()))
                    .await
                    .map(drop),
            ),
            (
                "SET",
                self.bounded(client.set::<(), _, _>(
                    &probe,
                    "1",
                    Some(Expiration::PX(1_000)),
                    None,
                    false,
                ))
                .await,
            ),
            (
                "GET",
                self.bounded(client.get::<Option<String>, _>(&probe))
                    .await
                    .map(drop),
            ),
            ("MGET", self.mget(vec![probe.clone()]).await.map(drop)),
            (
                "DEL",
                self.delete(vec![probe.clone().into()]).await.map(drop),
            ),
            (
                "PUBLISH (on the invalidation channel)",
                self.publish(&self.invalidation_channel(), "probe acl".into())
                    .await,
            ),
        ];
        for (command, outcome) in checks {
            if let Err(error) = outcome {
                if refused(&error) {
                    return Err(RedisConfigError(format!(
                        "the Redis user of --redis-url may not run {command}, which hotchan needs (grant it, e.g. +@all on ~{prefix}:* and &{prefix}:*): {error}",
                        prefix = self.settings.prefix
                    )));
                }
            }
        }
        Ok(())
    }
}
