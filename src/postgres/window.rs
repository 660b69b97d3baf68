//! The reads behind cache fills: a channel's window and its member set.

use std::collections::HashSet;

use super::rows::{self, CHANNEL_COLUMNS, MEMBER_COLUMNS, MESSAGE_COLUMNS};
use super::{Db, DbError};
use crate::domain::window::{Members, Window};
use crate::domain::{ChannelId, Scope};

impl Db {
    /// The newest `size` messages of a channel by id (tombstones too), read in one
    /// snapshot with the channel row; `None` when there is no channel.
    pub async fn load_window(
        &self,
        channel: ChannelId,
        size: usize,
    ) -> Result<Option<Window>, DbError> {
        let mut client = self.read_client(&[Scope::Channel(channel)]).await?;
        let tx = super::snapshot(&mut client).await?;
        let stmt = tx
            .prepare_cached(&format!(
                "SELECT {CHANNEL_COLUMNS} FROM channels c WHERE c.id = $1"
            ))
            .await?;
        let Some(row) = tx.query_opt(&stmt, &[&channel.0]).await? else {
            return Ok(None);
        };
        let info = rows::channel(&row);
        let size = size as i64;
        let stmt = tx
            .prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.channel_id = $1 ORDER BY m.id DESC LIMIT $2"
            ))
            .await?;
        let mut messages: Vec<_> = tx
            .query(&stmt, &[&channel.0, &(size + 1)])
            .await?
            .iter()
            .map(rows::message)
            .collect();
        let complete = messages.len() as i64 <= size;
        messages.truncate(size as usize);
        // The most recently changed messages tell the floor: every message whose seq is
        // above it is in the window.
        let stmt = tx
            .prepare_cached(
                "SELECT id, seq FROM messages WHERE channel_id = $1 ORDER BY seq DESC LIMIT $2",
            )
            .await?;
        let recent: Vec<(i64, i64)> = tx
            .query(&stmt, &[&channel.0, &size])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        tx.commit().await?;
        let held: HashSet<i64> = messages.iter().map(|m| m.id.0).collect();
        Ok(Some(Window {
            channel: info,
            messages,
            floor: floor(&recent, &held, size as usize),
            complete,
        }))
    }

    /// Every member of a channel with its read marker; `None` when there is no channel.
    pub async fn load_member_set(&self, channel: ChannelId) -> Result<Option<Members>, DbError> {
        let client = self.read_client(&[Scope::Channel(channel)]).await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {MEMBER_COLUMNS}, cm.channel_id IS NOT NULL FROM channels c
                 LEFT JOIN channel_members cm ON cm.channel_id = c.id
                 WHERE c.id = $1 ORDER BY cm.user_id"
            ))
            .await?;
        let found = client.query(&stmt, &[&channel.0]).await?;
        if found.is_empty() {
            return Ok(None);
        }
        let members = found
            .iter()
            .filter(|row| row.get::<_, bool>(4))
            .map(rows::member)
            .collect();
        Ok(Some(Members { members }))
    }
}

/// The highest seq such that every message changed after it is held, from the `size` most
/// recently changed messages (seq descending).
fn floor(recent: &[(i64, i64)], held: &HashSet<i64>, size: usize) -> i64 {
    for &(id, seq) in recent {
        if !held.contains(&id) {
            return seq;
        }
    }
    match recent.last() {
        // All of the `size` most recent changes are held; older changes may not be.
        Some(&(_, oldest_seq)) if recent.len() == size => oldest_seq - 1,
        // Fewer messages than `size`: every message is held.
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::floor;
    use std::collections::HashSet;

    #[test]
    fn the_floor_is_the_newest_change_outside_the_window() {
        let held: HashSet<i64> = [10, 9, 8].into();
        // Message 3 was edited at seq 12, after the posts of 8..10 (seqs 8..10).
        assert_eq!(floor(&[(3, 12), (10, 11), (9, 9)], &held, 3), 12);
        assert_eq!(floor(&[(10, 10), (9, 9), (8, 8)], &held, 3), 7);
        assert_eq!(floor(&[(10, 10), (9, 9)], &held, 3), 0);
        assert_eq!(floor(&[], &HashSet::new(), 3), 0);
    }
}
