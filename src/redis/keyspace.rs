//! Operations over many keys, which a cluster spreads over slots and primaries: `MGET`
//! grouped by slot, `SCAN` of every primary, `DEL` slot by slot.

use fred::prelude::{ClientLike, KeysInterface};
use fred::types::Value;
use futures::TryStreamExt;

use super::{Redis, RedisError};

impl Redis {
    /// `MGET` of keys that may sit in different slots. On a cluster the keys are grouped
    /// by slot and the groups go out in one pipeline (one `MGET` per slot, each routed
    /// to its primary); the values come back in the order of `keys`.
    pub(super) async fn mget(&self, keys: Vec<String>) -> Result<Vec<Value>, RedisError> {
        let client = self.client.next();
        if !client.is_clustered() {
            return self.bounded(client.mget(keys)).await;
        }
        let groups = by_slot(keys.iter().map(String::as_str));
        if groups.len() == 1 {
            return self.bounded(client.mget(keys)).await;
        }
        let pipeline = client.pipeline();
        for positions in groups.values() {
            let group: Vec<&str> = positions.iter().map(|&i| keys[i].as_str()).collect();
            let () = pipeline.mget(group).await?;
        }
        let answers: Vec<Value> = self.bounded(pipeline.all()).await?;
        let mut values = vec![Value::Null; keys.len()];
        for (positions, answer) in groups.values().zip(answers) {
            for (&i, value) in positions.iter().zip(answer.into_array()) {
                values[i] = value;
            }
        }
        Ok(values)
    }

    /// Every key under `pattern`: on a cluster, from every primary.
    fn scan(
        &self,
        pattern: String,
        page: u32,
    ) -> futures::stream::BoxStream<'_, Result<fred::types::Key, fred::error::Error>> {
        let client = self.client.next_connected();
        if client.is_clustered() {
            Box::pin(client.scan_cluster_buffered(pattern, Some(page), None))
        } else {
            Box::pin(client.scan_buffered(pattern, Some(page), None))
        }
    }

    /// Deletes these keys, one `DEL` per slot (a cluster refuses a `DEL` across slots).
    pub(super) async fn delete(&self, keys: Vec<fred::types::Key>) -> Result<u64, RedisError> {
        let client = self.client.next_connected();
        if !client.is_clustered() {
            let link = self.link_epoch();
            let deleted = client.del::<u64, _>(keys).await?;
            self.replicated(client, 0, link).await?;
            return Ok(deleted);
        }
        let groups = by_slot(keys.iter().map(|k| k.as_bytes()));
        let link = self.link_epoch();
        let deletes = groups.into_iter().map(|(slot, positions)| {
            let group: Vec<fred::types::Key> =
                positions.into_iter().map(|i| keys[i].clone()).collect();
            async move {
                let deleted = client.del::<u64, _>(group).await?;
                self.replicated(client, slot, link).await?;
                Ok::<_, RedisError>(deleted)
            }
        });
        Ok(futures::future::try_join_all(deletes)
            .await?
            .into_iter()
            .sum())
    }

    /// Deletes every key under the prefix (SCAN every primary, then DEL in batches, slot
    /// by slot). Versions are deleted too: a missing version is replaced by a fresh
    /// random one, never reused.
    pub async fn delete_prefix(&self) -> Result<u64, RedisError> {
        let pattern = format!("{}:*", self.settings.prefix);
        let mut deleted = 0;
        let mut pages = self.scan(pattern, 500);
        let mut batch = Vec::new();
        let deadline = self.settings.timeout * 50;
        let scan = async {
            while let Some(key) = pages.try_next().await? {
                batch.push(key);
                if batch.len() == 500 {
                    deleted += self.delete(std::mem::take(&mut batch)).await?;
                }
            }
            if !batch.is_empty() {
                deleted += self.delete(batch).await?;
            }
            Ok::<_, RedisError>(deleted)
        };
        match tokio::time::timeout(deadline, scan).await {
            Ok(result) => result,
            Err(_) => Err(RedisError::Timeout),
        }
    }

    /// How many channel windows are held under the prefix (a SCAN of every primary: for
    /// the admin view).
    pub async fn count_windows(&self) -> Result<u64, RedisError> {
        let pattern = format!("{}:*:meta", self.settings.prefix);
        let count = self
            .scan(pattern, 1000)
            .try_fold(0u64, |n, _| async move { Ok(n + 1) });
        match tokio::time::timeout(self.settings.timeout * 20, count).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(RedisError::Timeout),
        }
    }
}

/// Positions of `keys` grouped by their cluster slot.
fn by_slot<'k, K: AsRef<[u8]> + ?Sized + 'k>(
    keys: impl Iterator<Item = &'k K>,
) -> std::collections::BTreeMap<u16, Vec<usize>> {
    let mut groups = std::collections::BTreeMap::<u16, Vec<usize>>::new();
    for (i, key) in keys.enumerate() {
        let slot = fred::util::redis_keyslot(key.as_ref());
        groups.entry(slot).or_default().push(i);
    }
    groups
}
