//! Operations over many keys, which a cluster spreads over slots and primaries: `MGET`
//! grouped by slot, `SCAN` of every primary, `DEL` slot by slot.

use std::collections::BTreeMap;
use std::sync::Arc;

use fred::prelude::KeysInterface;
use fred::types::Value;
use futures::{StreamExt, TryStreamExt};

use super::nodes::Node;
use super::{NodeName, Redis, RedisError};

impl Redis {
    /// `MGET` of keys that may sit in different slots. On a cluster the keys are grouped
    /// by slot, and each node gets one pipeline of its slots' `MGET`s, all at once; the
    /// values come back in the order of `keys`.
    pub(super) async fn mget(&self, keys: Vec<String>) -> Result<Vec<Value>, RedisError> {
        if !self.nodes.is_cluster() {
            let node = self.nodes.any(None);
            return self.bounded(node.client().mget(keys)).await;
        }
        let mut by_node = BTreeMap::<NodeName, (Arc<Node>, Vec<Vec<usize>>)>::new();
        for (slot, positions) in by_slot(keys.iter().map(String::as_str)) {
            let node = self.nodes.for_slot(slot);
            by_node
                .entry(node.name.clone())
                .or_insert_with(|| (node, Vec::new()))
                .1
                .push(positions);
        }
        let keys = &keys;
        let calls = by_node.into_values().map(|(node, groups)| async move {
            let pipeline = node.client().pipeline();
            for positions in &groups {
                let group: Vec<&str> = positions.iter().map(|&i| keys[i].as_str()).collect();
                let () = pipeline.mget(group).await?;
            }
            let answers: Vec<Value> = self.bounded(pipeline.all()).await?;
            Ok::<_, RedisError>(groups.into_iter().zip(answers).collect::<Vec<_>>())
        });
        let mut values = vec![Value::Null; keys.len()];
        for (positions, answer) in futures::future::try_join_all(calls)
            .await?
            .into_iter()
            .flatten()
        {
            for (i, value) in positions.into_iter().zip(answer.into_array()) {
                values[i] = value;
            }
        }
        Ok(values)
    }

    /// Every key under `pattern`, from every node; an error at once for a node that is
    /// not connected.
    fn scan(
        &self,
        pattern: String,
        page: u32,
    ) -> futures::stream::BoxStream<'static, Result<fred::types::Key, fred::error::Error>> {
        let scans = self.nodes.all().into_iter().map(move |node| {
            if !node.is_connected() {
                // Fail at once rather than wait for a node that is down.
                let kind = fred::error::ErrorKind::IO;
                let error =
                    fred::error::Error::new(kind, format!("{} is not connected", node.name));
                return futures::stream::once(async move { Err(error) }).boxed();
            }
            node.client()
                .scan_buffered(pattern.clone(), Some(page), None)
                .boxed()
        });
        Box::pin(futures::stream::iter(scans).flatten())
    }

    /// Deletes these keys, one `DEL` per slot (a cluster refuses a `DEL` across slots),
    /// each at its slot's node.
    pub(super) async fn delete(&self, keys: Vec<fred::types::Key>) -> Result<u64, RedisError> {
        let groups = by_slot(keys.iter().map(|k| k.as_bytes()));
        let link = self.link_epoch();
        let deletes = groups.into_values().map(|positions| {
            let group: Vec<fred::types::Key> =
                positions.into_iter().map(|i| keys[i].clone()).collect();
            let node = self.nodes.for_key(group[0].as_bytes());
            async move {
                let client = node.client();
                let deleted = self.bounded(client.del::<u64, _>(group)).await?;
                self.replicated(&node, client, link).await?;
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
