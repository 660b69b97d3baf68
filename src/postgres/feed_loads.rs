//! The feed queries of the cache tiers: a hot feed to fill, event bodies, and the
//! predecessor a write-through checks a cached feed against.

use uuid::Uuid;

use super::feeds::{event, EVENT_COLUMNS, LIVE};
use super::{snapshot, Db, DbError, Retention};
use crate::domain::feed::{Event, EventId, FeedWindow};
use crate::domain::{Scope, UserId};

impl Db {
    /// A user's newest `hot` unexpired feed ids, the unseen marker, and the bodies of
    /// those events, from one snapshot.
    pub async fn load_feed_window(
        &self,
        user: UserId,
        hot: usize,
        retention: Retention,
    ) -> Result<(FeedWindow, Vec<Event>), DbError> {
        let mut client = self.read_client(&[Scope::Feed(user)]).await?;
        let tx = snapshot(&mut client).await?;
        let keep = retention.keep_secs();
        let stmt = tx
            .prepare_cached(
                "SELECT event_id FROM feed_items
                 WHERE user_id = $2 AND created_at > now() - make_interval(secs => $1)
                 ORDER BY event_id DESC LIMIT $3",
            )
            .await?;
        let mut ids: Vec<i64> = tx
            .query(&stmt, &[&keep, &user.0, &(hot as i64 + 1)])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let complete = ids.len() <= hot;
        ids.truncate(hot);
        let stmt = tx
            .prepare_cached("SELECT last_seen_event_id FROM feed_seen WHERE user_id = $1")
            .await?;
        let seen = tx
            .query_opt(&stmt, &[&user.0])
            .await?
            .map(|r| EventId(r.get(0)));
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events e WHERE {LIVE} AND e.id = ANY($2)");
        let stmt = tx.prepare_cached(&sql).await?;
        let bodies = tx
            .query(&stmt, &[&keep, &ids])
            .await?
            .iter()
            .map(event)
            .collect();
        tx.commit().await?;
        let window = FeedWindow {
            ids: ids.into_iter().map(EventId).collect(),
            complete,
            seen,
        };
        Ok((window, bodies))
    }

    /// The unexpired events among `ids` (tombstones included).
    pub async fn load_events(
        &self,
        ids: &[EventId],
        retention: Retention,
    ) -> Result<Vec<Event>, DbError> {
        let events: Vec<Scope> = ids.iter().map(|&id| Scope::Event(id)).collect();
        let client = self.read_client(&events).await?;
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events e WHERE {LIVE} AND e.id = ANY($2)");
        let stmt = client.prepare_cached(&sql).await?;
        let ids: Vec<i64> = ids.iter().map(|id| id.0).collect();
        let rows = client.query(&stmt, &[&retention.keep_secs(), &ids]).await?;
        Ok(rows.iter().map(event).collect())
    }

    /// For each (user, id): the newest unexpired id of the user's feed below it, 0 for
    /// none. Every item below a committed delivery is committed with or before it (the
    /// pull-forward), so the answer is final once the delivery has committed.
    pub async fn feed_prevs(
        &self,
        below: &[(UserId, EventId)],
        retention: Retention,
    ) -> Result<Vec<i64>, DbError> {
        let client = self.read_primary().await?;
        let stmt = client
            .prepare_cached(
                "SELECT COALESCE((SELECT max(f.event_id) FROM feed_items f
                                  WHERE f.user_id = t.u AND f.event_id < t.m
                                    AND f.created_at > now() - make_interval(secs => $3)), 0)
                 FROM unnest($1::uuid[], $2::bigint[]) WITH ORDINALITY AS t(u, m, o)
                 ORDER BY t.o",
            )
            .await?;
        let users: Vec<Uuid> = below.iter().map(|(u, _)| u.0).collect();
        let ids: Vec<i64> = below.iter().map(|(_, id)| id.0).collect();
        let rows = client
            .query(&stmt, &[&users, &ids, &retention.keep_secs()])
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
