//! WAL positions beside the fences (`lua/raise_position.lua`): a write raises its scope's
//! position before its write-through bumps the fence, so a fill that took the fence after
//! the write also finds the position, and reads Postgres where it has been replayed.

use fred::prelude::KeysInterface;
use fred::types::Value;

use super::{hash_tag, Redis, RedisError};
use crate::domain::{Lsn, Scope};

impl Redis {
    /// The key of a scope's position; `None` for [`Scope::Everything`], which has none.
    fn position_key(&self, scope: Scope) -> Option<String> {
        let p = &self.settings.prefix;
        hash_tag(scope).map(|tag| format!("{p}:{{{tag}}}:lsn"))
    }

    /// Raises the position of each of `scopes` to `at` (never lowers it), one call per
    /// scope, all at once.
    pub async fn raise_positions(&self, scopes: &[Scope], at: Lsn) -> Result<(), RedisError> {
        let calls = scopes
            .iter()
            .filter_map(|&scope| self.position_key(scope))
            .map(|key| {
                let args = vec![Value::from(at.hex()), self.ttl_ms()];
                async move {
                    self.eval_write(&self.scripts.raise_position, vec![key], args)
                        .await
                }
            });
        futures::future::try_join_all(calls).await?;
        Ok(())
    }

    /// The position of the newest write to `scope` that Redis was told of, if any.
    pub async fn position(&self, scope: Scope) -> Result<Option<Lsn>, RedisError> {
        let Some(key) = self.position_key(scope) else {
            return Ok(None);
        };
        let node = self.nodes.for_key(key.as_bytes());
        let text: Option<String> = self.bounded(node.client().get(key)).await?;
        Ok(text.as_deref().and_then(Lsn::parse_hex))
    }
}
