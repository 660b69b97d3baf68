//! Time partitions of the feed tables, and retention by dropping them whole.
//!
//! `events`, `feed_items` and `channel_events` are partitioned by range of `created_at`
//! (the event's time, in all three). A partition covers `[start, end)`, in epoch seconds,
//! and is named `<table>_p<start>_<end>`: the name carries its own bounds, so a changed
//! `--feed-partition` never mistakes an old partition's span. New partitions are aligned
//! to multiples of the span; where older ones already cover part of a span, only the
//! uncovered rest is made. The current span and the next two are covered at all times
//! (the periodic task, and a publish that finds no partition, make them). A partition is
//! dropped once its end is past the retention; reads filter on `created_at` too, so an
//! expired event never shows even before its partition goes.

use std::time::Duration;

use tracing::info;

use super::{Db, DbError};

/// The tables partitioned by time.
const FEED_TABLES: [&str; 3] = ["events", "feed_items", "channel_events"];

/// The partitions of the table named `$1`, by name.
const PARTITIONS_OF: &str = "SELECT c.relname::text FROM pg_inherits i
     JOIN pg_class c ON c.oid = i.inhrelid
     JOIN pg_class p ON p.oid = i.inhparent
     WHERE p.relname = $1 AND p.relnamespace = 'public'::regnamespace";

/// Partitions kept ahead of the current one.
const AHEAD: i64 = 2;

/// The advisory lock key of partition upkeep (ASCII "hcfeedpt").
const UPKEEP_LOCK_KEY: i64 = 0x6863_6665_6564_7074;

/// How long feed events live, and the span of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub keep: Duration,
    pub span: Duration,
}

impl Retention {
    /// The retention in seconds, as the queries take it (`now() - make_interval(secs => $n)`).
    pub fn keep_secs(&self) -> f64 {
        self.keep.as_secs_f64()
    }
    fn span_secs(&self) -> i64 {
        self.span.as_secs() as i64
    }
}

/// What one upkeep run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Upkeep {
    /// Partitions made, by name.
    pub created: Vec<String>,
    /// Partitions dropped, by name.
    pub dropped: Vec<String>,
}

/// The bounds (epoch seconds) of a partition, from its name.
fn bounds_of(table: &str, name: &str) -> Option<(i64, i64)> {
    let (start, end) = name
        .strip_prefix(table)?
        .strip_prefix("_p")?
        .split_once('_')?;
    Some((start.parse().ok()?, end.parse().ok()?))
}

/// The parts of `[start, end)` no range in `existing` covers.
fn uncovered(start: i64, end: i64, existing: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let mut sorted = existing.to_vec();
    sorted.sort_unstable();
    let mut gaps = Vec::new();
    let mut at = start;
    for (s, e) in sorted {
        if e <= at || s >= end {
            continue;
        }
        if s > at {
            gaps.push((at, s));
        }
        at = at.max(e);
    }
    if at < end {
        gaps.push((at, end));
    }
    gaps
}

impl Db {
    /// Makes the partitions from the current one to `AHEAD` past it, and drops those whose
    /// whole span is past the retention. With `wait`, waits for another instance's run
    /// (a publish that found no partition); else skips when one is running.
    pub async fn feed_upkeep(&self, retention: Retention, wait: bool) -> Result<Upkeep, DbError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.batch_execute("SET LOCAL statement_timeout = 0").await?;
        let locked = if wait {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&UPKEEP_LOCK_KEY])
                .await?;
            true
        } else {
            tx.query_one("SELECT pg_try_advisory_xact_lock($1)", &[&UPKEEP_LOCK_KEY])
                .await?
                .get(0)
        };
        if !locked {
            return Ok(Upkeep::default());
        }
        let now: i64 = tx
            .query_one("SELECT floor(extract(epoch FROM now()))::bigint", &[])
            .await?
            .get(0);
        let span = retention.span_secs();
        let current = now.div_euclid(span) * span;
        let expired_before = now - retention.keep.as_secs() as i64;
        let mut upkeep = Upkeep::default();
        for table in FEED_TABLES {
            let existing: Vec<String> = tx
                .query(PARTITIONS_OF, &[&table])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let mut ranges = Vec::new();
            for name in &existing {
                let Some((start, end)) = bounds_of(table, name) else {
                    continue;
                };
                if end <= expired_before {
                    tx.batch_execute(&format!("DROP TABLE IF EXISTS \"{name}\""))
                        .await?;
                    upkeep.dropped.push(name.clone());
                } else {
                    ranges.push((start, end));
                }
            }
            for k in 0..=AHEAD {
                let start = current + k * span;
                for (from, to) in uncovered(start, start + span, &ranges) {
                    let name = format!("{table}_p{from}_{to}");
                    tx.batch_execute(&format!(
                        "CREATE TABLE IF NOT EXISTS \"{name}\" PARTITION OF {table}
                         FOR VALUES FROM (to_timestamp({from})) TO (to_timestamp({to}))"
                    ))
                    .await?;
                    ranges.push((from, to));
                    upkeep.created.push(name);
                }
            }
        }
        // Background fan-outs of expired events have nowhere to deliver to.
        tx.execute(
            "DELETE FROM fanouts WHERE created_at <= now() - make_interval(secs => $1)",
            &[&retention.keep_secs()],
        )
        .await?;
        tx.commit().await?;
        if !upkeep.created.is_empty() || !upkeep.dropped.is_empty() {
            info!(created = ?upkeep.created, dropped = ?upkeep.dropped, "feed partitions");
        }
        Ok(upkeep)
    }
}

/// Whether an error says a row had no partition to go to (SQLSTATE 23514 with that text).
pub(super) fn is_missing_partition(error: &DbError) -> bool {
    match error {
        DbError::Query(e) => e
            .as_db_error()
            .is_some_and(|db| db.message().starts_with("no partition of relation")),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_carry_their_bounds() {
        assert_eq!(
            bounds_of("events", "events_p1700000000_1700086400"),
            Some((1_700_000_000, 1_700_086_400))
        );
        assert_eq!(bounds_of("events", "feed_items_p1_2"), None);
        assert_eq!(bounds_of("events", "events_p5"), None);
        assert_eq!(bounds_of("events", "events_px_y"), None);
    }

    #[test]
    fn only_the_uncovered_parts_of_a_span_are_made() {
        assert_eq!(uncovered(0, 10, &[]), [(0, 10)]);
        assert_eq!(uncovered(0, 10, &[(0, 10)]), []);
        // An older, longer partition covers the start; a shorter one sits inside.
        assert_eq!(uncovered(0, 10, &[(-5, 3), (6, 7)]), [(3, 6), (7, 10)]);
        assert_eq!(uncovered(0, 10, &[(10, 20), (-3, 0)]), [(0, 10)]);
    }
}
