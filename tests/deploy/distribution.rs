//! Every statement hotchan sends, checked against the distribution plan of
//! docs/scale-out.md (issue #26, part 3): on a private Postgres with `pg_stat_statements`,
//! two instances (one with the whole cache, one with none, so that every read reaches
//! Postgres) take every route of the contract; then each statement that reads or writes a
//! distributed table must filter by that table's distribution key, unless it names itself
//! one of the plan's fan-out queries (`/* fan-out: <name> */`).

use std::collections::BTreeSet;

use hotchan::config::CacheMode;
use hotchan::postgres::parse_database_url;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{spawn_with_settings, test_settings, users, TestApp};
use crate::postgres_servers::Postgres;
use crate::servers::PrivateRedis;

/// The distributed tables and their keys, as docs/scale-out.md has them.
const DISTRIBUTED: [(&str, &str); 7] = [
    ("messages", "channel_id"),
    ("channel_members", "channel_id"),
    ("channel_events", "channel_id"),
    ("channels", "id"),
    ("feed_items", "user_id"),
    ("feed_seen", "user_id"),
    ("events", "id"),
];

/// The fan-out queries the plan names (docs/scale-out.md, "Queries that fan out").
const FAN_OUTS: [&str; 3] = ["message by id", "all-channel unread", "event by client id"];

/// Words after a table name that are not its alias.
const NOT_ALIASES: [&str; 16] = [
    "where",
    "join",
    "left",
    "right",
    "inner",
    "cross",
    "on",
    "set",
    "order",
    "group",
    "limit",
    "returning",
    "for",
    "values",
    "using",
    "(",
];

/// Lower-case tokens of a statement: names (with their qualifier), `$n`, and each other
/// character that is not a space; comments are gone.
fn tokens(sql: &str) -> Vec<String> {
    let mut text = sql.to_lowercase();
    while let Some(start) = text.find("/*") {
        let end = text[start..]
            .find("*/")
            .map_or(text.len(), |e| start + e + 2);
        text.replace_range(start..end, " ");
    }
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() || c == '_' || c == '$' {
            let mut word = c.to_string();
            while let Some(&n) = chars.peek() {
                if n.is_alphanumeric() || n == '_' || n == '.' {
                    word.push(n);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(word);
        } else if !c.is_whitespace() {
            out.push(c.to_string());
        }
    }
    out
}

/// Why a statement touches a distributed table without its key (`None`: it does not):
/// each use of a distributed table must be pinned to shards, by its key compared with a
/// value (`= $n`, `= ANY(...)`, `IN (...)`), with a column of a table that is not
/// distributed (a parameter unnested), or with a column of a use that is pinned (a join);
/// an `INSERT` is pinned when it names the key among its columns.
fn unpinned(sql: &str) -> Option<String> {
    let t = tokens(sql);
    let first = t.first()?.as_str();
    if !["select", "insert", "update", "delete", "with"].contains(&first) {
        return None;
    }
    // Each use of a distributed table: its alias (or its name) and its key.
    let mut uses: Vec<(String, &str, bool)> = Vec::new();
    for (i, word) in t.iter().enumerate() {
        let Some(&(table, key)) = DISTRIBUTED.iter().find(|(name, _)| name == word) else {
            continue;
        };
        let before = i.checked_sub(1).map(|j| t[j].as_str());
        if !matches!(before, Some("from" | "join" | "update" | "into")) {
            continue;
        }
        if before == Some("into") {
            // `INSERT INTO t [AS a] (columns)`.
            let open = if t.get(i + 1).map(String::as_str) == Some("as") {
                i + 3
            } else {
                i + 1
            };
            let columns: Vec<&str> = t[open + 1..]
                .iter()
                .take_while(|w| *w != ")")
                .map(String::as_str)
                .collect();
            uses.push((table.to_owned(), key, columns.contains(&key)));
            continue;
        }
        let mut alias = t.get(i + 1).map(String::as_str).unwrap_or(table);
        if alias == "as" {
            alias = t.get(i + 2).map(String::as_str).unwrap_or(table);
        }
        if NOT_ALIASES.contains(&alias) || !alias.chars().all(|c| c.is_alphanumeric() || c == '_') {
            alias = table;
        }
        uses.push((alias.to_owned(), key, false));
    }
    let is_use = |word: &str, uses: &[(String, &str, bool)]| {
        uses.iter()
            .any(|(alias, _, _)| word.split_once('.').is_some_and(|(a, _)| a == alias))
    };
    // Pin to a fixpoint: keys compared with values, then joins onto pinned uses.
    loop {
        let mut changed = false;
        for n in 0..uses.len() {
            if uses[n].2 {
                continue;
            }
            let (alias, key) = (uses[n].0.clone(), uses[n].1);
            let qualified = format!("{alias}.{key}");
            let names_key = |w: &str| {
                w == qualified || (w == key && uses.iter().filter(|u| u.1 == key).count() >= 1)
            };
            let pinned = t.windows(3).any(|w| {
                let (a, op, b) = (w[0].as_str(), w[1].as_str(), w[2].as_str());
                let side = |mine: &str, other: &str| {
                    names_key(mine)
                        && (other.starts_with('$')
                            || other == "any"
                            || other == "("
                            || (other.contains('.') && !is_use(other, &uses))
                            || uses.iter().any(|(a2, _, p)| {
                                *p && other.split_once('.').is_some_and(|(x, _)| x == a2)
                            }))
                };
                (op == "=" && (side(a, b) || side(b, a))) || (op == "in" && names_key(a))
            });
            if pinned {
                uses[n].2 = true;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let loose: Vec<String> = uses
        .iter()
        .filter(|(_, _, pinned)| !pinned)
        .map(|(alias, key, _)| format!("{alias} (by {key})"))
        .collect();
    (!loose.is_empty()).then(|| loose.join(", "))
}

/// The fan-out a statement names itself as, if any.
fn fan_out(sql: &str) -> Option<&str> {
    let start = sql.find("/* fan-out: ")? + "/* fan-out: ".len();
    let end = sql[start..].find(" */")? + start;
    Some(&sql[start..end])
}

#[test]
fn the_checker_tells_a_keyed_statement_from_one_that_fans_out() {
    let keyed = [
        "SELECT $2 FROM channels WHERE id = $1",
        "SELECT DISTINCT user_id FROM channel_members WHERE channel_id = ANY($1)",
        "INSERT INTO feed_items (user_id, event_id) SELECT * FROM unnest($1, $2)",
        "SELECT cm.user_id FROM channels c LEFT JOIN channel_members cm ON cm.channel_id = c.id WHERE c.id = $1",
        "SELECT m.id FROM unnest($1::uuid[]) AS s(channel_id) CROSS JOIN LATERAL (SELECT * FROM messages WHERE channel_id = s.channel_id) AS m",
        "SELECT e.id FROM feed_items i JOIN events e ON e.id = i.event_id WHERE i.user_id = $2",
    ];
    for sql in keyed {
        assert_eq!(unpinned(sql), None, "{sql}");
    }
    let loose = [
        ("SELECT channel_id FROM messages WHERE id = $1", "messages"),
        ("SELECT cm.channel_id FROM channel_members cm CROSS JOIN LATERAL (SELECT count(*) FROM messages m WHERE m.channel_id = cm.channel_id) AS u WHERE cm.user_id = $1", "cm"),
        ("SELECT count(*) FROM events e WHERE e.actor_id = $2", "e"),
        ("INSERT INTO messages (sender_id) VALUES ($1)", "messages"),
        ("INSERT INTO messages AS m (sender_id) VALUES ($1)", "messages"),
    ];
    for (sql, which) in loose {
        let why = unpinned(sql).unwrap_or_else(|| panic!("{sql} fans out"));
        assert!(why.contains(which), "{sql}: {why}");
    }
    assert_eq!(fan_out("SELECT /* fan-out: sync */ 1"), Some("sync"));
    assert_eq!(fan_out("SELECT 1"), None);
}

async fn instance(
    pg: &Postgres,
    db: &str,
    mode: CacheMode,
    redis: &PrivateRedis,
    prefix: &str,
) -> TestApp {
    let mut settings = test_settings();
    settings.db.database_url = parse_database_url(&pg.url_of(db, "")).unwrap();
    settings.redis_url = format!("redis://127.0.0.1:{}", redis.port);
    settings.redis_prefix = prefix.to_owned();
    settings.cache = mode;
    spawn_with_settings(settings).await
}

/// Every route of the contract, once or more, on `app`.
async fn every_route(app: &TestApp) {
    let [a, b, c] = users::<3>();
    let cid = app.group(&[a, b]).await;
    app.get(&format!("/v1/channels/{cid}")).await.expect(200);
    app.put(&format!("/v1/channels/{cid}/members/{c}"), None)
        .await;
    app.get(&format!("/v1/channels/{cid}/members"))
        .await
        .expect(200);
    app.get(&format!("/v1/channels/{cid}/members/{c}"))
        .await
        .expect(200);
    let mut ids = Vec::new();
    for i in 0..30 {
        let m = app
            .post(
                &format!("/v1/channels/{cid}/messages"),
                json!({"sender_id": a, "content": format!("m{i}"), "client_msg_id": format!("c{i}")}),
            )
            .await
            .expect(201);
        ids.push(m["id"].as_i64().unwrap());
    }
    app.post(
        &format!("/v1/channels/{cid}/messages"),
        json!({"sender_id": a, "content": "again", "client_msg_id": "c0"}),
    )
    .await;
    app.get(&format!("/v1/channels/{cid}/messages"))
        .await
        .expect(200);
    app.get(&format!(
        "/v1/channels/{cid}/messages?limit=5&before={}",
        ids[3]
    ))
    .await
    .expect(200);
    app.get(&format!(
        "/v1/channels/{cid}/messages?limit=5&after={}",
        ids[3]
    ))
    .await
    .expect(200);
    app.get(&format!("/v1/messages/{}", ids[1]))
        .await
        .expect(200);
    app.patch(
        &format!("/v1/messages/{}", ids[2]),
        json!({"content": "edited"}),
    )
    .await
    .expect(200);
    app.delete(&format!("/v1/messages/{}", ids[4])).await;
    app.post(
        &format!("/v1/channels/{cid}/read"),
        json!({"user_id": b, "message_id": ids[5]}),
    )
    .await;
    app.get(&format!("/v1/channels/{cid}/unread?user_id={b}"))
        .await
        .expect(200);
    app.get(&format!("/v1/users/{b}/unread")).await.expect(200);
    app.post(
        "/v1/sync",
        json!({"channels": {cid.to_string(): 3}, "user_id": b}),
    )
    .await
    .expect(200);
    let event = app
        .post(
            "/v1/events",
            json!({"actor_id": a, "verb": "comment", "object_type": "task", "object_id": "T-1",
                   "channel_ids": [cid], "user_ids": [c], "client_event_id": "e1"}),
        )
        .await
        .expect(201);
    let eid = event["event"]["id"].as_i64().unwrap();
    app.get(&format!("/v1/events/{eid}")).await.expect(200);
    app.get(&format!("/v1/users/{b}/feed")).await.expect(200);
    app.get(&format!("/v1/users/{b}/feed?after=0")).await;
    app.get(&format!("/v1/channels/{cid}/events"))
        .await
        .expect(200);
    app.post(
        &format!("/v1/users/{b}/feed/seen"),
        json!({"event_id": eid}),
    )
    .await
    .expect(200);
    app.get(&format!("/v1/users/{b}/feed/unseen"))
        .await
        .expect(200);
    app.delete(&format!("/v1/events/{eid}")).await;
    app.delete(&format!("/v1/channels/{cid}/members/{c}")).await;
    app.post("/v1/admin/cache/flush", json!({"channel_id": cid}))
        .await;
    app.metrics_text().await;
    for path in ["/readyz", "/v1/admin/cache", "/v1/admin/cache/advice"] {
        app.get(path).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_statement_on_a_distributed_table_filters_by_its_key_or_is_a_named_fan_out() {
    let pg = Postgres::start(
        "shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.max = 5000",
    )
    .await;
    let redis = PrivateRedis::start(&[]).await;
    let prefix = format!("hct_{}", Uuid::new_v4().simple());
    let db = format!("hctest_{prefix}");
    let full = instance(&pg, &db, CacheMode::Full, &redis, &prefix).await;
    let off = instance(&pg, &db, CacheMode::Off, &redis, &format!("{prefix}_off")).await;
    let admin = pg.connect("postgres").await;
    admin
        .batch_execute("CREATE EXTENSION pg_stat_statements")
        .await
        .unwrap();
    admin
        .batch_execute("SELECT pg_stat_statements_reset()")
        .await
        .unwrap();
    every_route(&full).await;
    every_route(&off).await;
    // Background work: fills, the outbox, the auditor, feed upkeep.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let statements: BTreeSet<String> = admin
        .query(
            "SELECT query FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid \
             WHERE d.datname = $1",
            &[&db],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut failures = Vec::new();
    let mut named = BTreeSet::new();
    let mut checked = 0;
    for sql in &statements {
        if let Some(name) = fan_out(sql) {
            assert!(
                FAN_OUTS.contains(&name),
                "an unnamed fan-out {name:?}: {sql}"
            );
            named.insert(name);
            continue;
        }
        checked += 1;
        if let Some(why) = unpinned(sql) {
            failures.push(format!("{why}: {sql}"));
        }
    }
    assert!(checked > 30, "the routes ran: {checked} statements");
    assert!(
        failures.is_empty(),
        "statements on distributed tables without their key:\n{}",
        failures.join("\n")
    );
    // Each named fan-out ran, so the list in the plan is not stale.
    assert_eq!(named.len(), FAN_OUTS.len(), "fan-outs seen: {named:?}");
    println!(
        "{checked} statements keyed, {} fan-outs named: {named:?}",
        named.len()
    );
    for mut app in [full, off] {
        app.stop().await;
    }
}
