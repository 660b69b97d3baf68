//! Channel and membership queries.

use super::outbox::{outbox_cte, Ticket};
use super::rows::{self, CHANNEL_COLUMNS, MEMBER_COLUMNS};
use super::{Db, DbError};
use crate::domain::{
    Channel, ChannelId, ChannelName, ChannelType, Member, MemberSummary, Role, Scope, UserId,
};

/// What a membership lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberLookup {
    NoChannel,
    NotMember,
    Member(Member),
}

/// What removing a member did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberRemoval {
    NoChannel,
    NotMember,
    /// Removed; the change's row in the cache outbox.
    Removed(Ticket),
}

impl Db {
    /// Creates a channel and its members in one transaction. `None` when `id` is taken.
    pub async fn create_channel(
        &self,
        id: Option<ChannelId>,
        kind: ChannelType,
        name: Option<&ChannelName>,
        members: &[UserId],
    ) -> Result<Option<Channel>, DbError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let sql = format!(
            "INSERT INTO channels AS c (id, type, name)
             VALUES (COALESCE($1, gen_random_uuid()), $2, $3)
             ON CONFLICT (id) DO NOTHING
             RETURNING {CHANNEL_COLUMNS}"
        );
        let id = id.map(|c| c.0);
        let row = tx
            .query_opt(&sql, &[&id, &kind.as_str(), &name.map(ChannelName::as_str)])
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let channel = rows::channel(&row);
        let member_ids: Vec<uuid::Uuid> = members.iter().map(|u| u.0).collect();
        tx.execute(
            "INSERT INTO channel_members (channel_id, user_id, role)
             SELECT $1, u, 'member' FROM unnest($2::uuid[]) AS u
             ON CONFLICT DO NOTHING",
            &[&channel.id.0, &member_ids],
        )
        .await?;
        tx.commit().await?;
        Ok(Some(channel))
    }

    pub async fn load_channel(&self, id: ChannelId) -> Result<Option<Channel>, DbError> {
        let client = self.read_client(&[Scope::Channel(id)]).await?;
        let sql = format!("SELECT {CHANNEL_COLUMNS} FROM channels c WHERE c.id = $1");
        let stmt = client.prepare_cached(&sql).await?;
        Ok(client
            .query_opt(&stmt, &[&id.0])
            .await?
            .map(|r| rows::channel(&r)))
    }

    /// The members of a channel sorted by user id; `None` when the channel does not exist.
    pub async fn load_members(&self, id: ChannelId) -> Result<Option<Vec<MemberSummary>>, DbError> {
        let client = self.read_client(&[Scope::Channel(id)]).await?;
        // The LEFT JOIN tells "no channel" (no row) from "no members" (one row of NULLs).
        let stmt = client
            .prepare_cached(
                "SELECT cm.user_id, cm.role FROM channels c
                 LEFT JOIN channel_members cm ON cm.channel_id = c.id
                 WHERE c.id = $1 ORDER BY cm.user_id",
            )
            .await?;
        let found = client.query(&stmt, &[&id.0]).await?;
        if found.is_empty() {
            return Ok(None);
        }
        let members = found
            .iter()
            .filter_map(|row| {
                let user: Option<uuid::Uuid> = row.get(0);
                Some(MemberSummary {
                    user_id: UserId(user?),
                    role: row.get::<_, Option<String>>(1).unwrap_or_default(),
                })
            })
            .collect();
        Ok(Some(members))
    }

    pub async fn load_member(
        &self,
        channel: ChannelId,
        user: UserId,
    ) -> Result<MemberLookup, DbError> {
        let client = self.read_client(&[Scope::Channel(channel)]).await?;
        let sql = format!(
            "SELECT {MEMBER_COLUMNS}, cm.channel_id IS NOT NULL FROM channels c
             LEFT JOIN channel_members cm ON cm.channel_id = c.id AND cm.user_id = $2
             WHERE c.id = $1"
        );
        let stmt = client.prepare_cached(&sql).await?;
        let row = client.query_opt(&stmt, &[&channel.0, &user.0]).await?;
        Ok(match row {
            None => MemberLookup::NoChannel,
            Some(row) if !row.get::<_, bool>(4) => MemberLookup::NotMember,
            Some(row) => MemberLookup::Member(rows::member(&row)),
        })
    }

    /// Adds a member, or changes the role of an existing one. Without a role, a new member
    /// gets "member" and an existing one keeps its role. `None` when there is no channel;
    /// else the member, and the change's row in the cache outbox.
    pub async fn upsert_member(
        &self,
        channel: ChannelId,
        user: UserId,
        role: Option<&Role>,
    ) -> Result<Option<(Member, Ticket)>, DbError> {
        let client = self.client().await?;
        let sql = format!(
            "WITH cm AS (
               INSERT INTO channel_members AS cm (channel_id, user_id, role)
               SELECT c.id, $2, COALESCE($3, 'member') FROM channels c WHERE c.id = $1
               ON CONFLICT (channel_id, user_id)
               DO UPDATE SET role = COALESCE($3, cm.role)
               RETURNING {MEMBER_COLUMNS}),
             {}
             SELECT cm.*, (SELECT id FROM outbox) FROM cm",
            outbox_cte("cm", 4)
        );
        let stmt = client.prepare_cached(&sql).await?;
        let role = role.map(Role::as_str);
        let scopes = self.outbox_scopes(&[Scope::Channel(channel)]);
        let row = client
            .query_opt(&stmt, &[&channel.0, &user.0, &role, &scopes])
            .await?;
        Ok(row.map(|r| (rows::member(&r), Ticket(r.get(r.len() - 1)))))
    }

    pub async fn remove_member(
        &self,
        channel: ChannelId,
        user: UserId,
    ) -> Result<MemberRemoval, DbError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "WITH gone AS (
                   DELETE FROM channel_members WHERE channel_id = $1 AND user_id = $2
                   RETURNING 1),
                 {}
                 SELECT EXISTS (SELECT 1 FROM channels WHERE id = $1),
                        EXISTS (SELECT 1 FROM gone),
                        (SELECT id FROM outbox)",
                outbox_cte("gone", 3)
            ))
            .await?;
        let scopes = self.outbox_scopes(&[Scope::Channel(channel)]);
        let row = client
            .query_one(&stmt, &[&channel.0, &user.0, &scopes])
            .await?;
        Ok(match (row.get(0), row.get(1)) {
            (false, _) => MemberRemoval::NoChannel,
            (true, false) => MemberRemoval::NotMember,
            (true, true) => MemberRemoval::Removed(Ticket(row.get(2))),
        })
    }
}

impl Db {
    /// This database's identity (migration 3), for the cache's key prefix.
    pub async fn identity(&self) -> Result<uuid::Uuid, DbError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT id FROM hotchan_identity ORDER BY created_at LIMIT 1",
                &[],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Whether any channel exists (the demo loader's "is the database empty").
    pub async fn has_channels(&self) -> Result<bool, DbError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT EXISTS (SELECT 1 FROM channels)", &[])
            .await?;
        Ok(row.get(0))
    }
}
