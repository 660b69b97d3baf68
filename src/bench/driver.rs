//! Runs one workload against one contender: a pool of tasks takes the next operation from
//! the shared sequence until it is done, each recording latencies in its own histogram.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::workload::{Op, PAGE_LIMIT};
use crate::domain::{ClientMsgId, Content, Cursor, PageRequest, SyncRequest};
use crate::postgres::NewMessage;
use crate::progress::Progress;
use crate::service::Service;

/// How a contender is reached.
#[derive(Clone)]
pub enum Target {
    /// Calls into the service, no HTTP.
    InProcess(Arc<Service>),
    /// Over HTTP, to a hotchan listening at the base URL.
    Http {
        client: reqwest::Client,
        base: String,
    },
    /// Over HTTP, every operation a GET of one fixed page held in memory.
    Ceiling {
        client: reqwest::Client,
        url: String,
    },
}

/// What one run measured.
pub struct Run {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Microseconds.
    pub latency: Histogram<u64>,
}

impl Run {
    pub fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// A latency quantile in milliseconds.
    pub fn ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// `req/s | p50 ms | p99 ms | p99.9 ms | errors`, as report table cells.
    pub fn cells(&self) -> String {
        format!(
            "{:.0} | {:.2} | {:.2} | {:.2} | {}",
            self.throughput(),
            self.ms(0.5),
            self.ms(0.99),
            self.ms(0.999),
            self.errors
        )
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn encode(page: &crate::domain::Page) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(page).expect("a page serializes"))
}

async fn call(target: &Target, op: &Op, n: u64) -> Result<(), String> {
    match target {
        Target::InProcess(service) => in_process(service, op, n).await,
        Target::Http { client, base } => over_http(client, base, op, n).await,
        Target::Ceiling { client, url } => {
            let response = client.get(url).send().await.map_err(|e| e.to_string())?;
            let ok = response.status().is_success();
            response.bytes().await.map_err(|e| e.to_string())?;
            ok.then_some(())
                .ok_or_else(|| "ceiling answered an error".into())
        }
    }
}

async fn in_process(service: &Service, op: &Op, n: u64) -> Result<(), String> {
    let page = |cursor| PageRequest {
        limit: PAGE_LIMIT,
        cursor,
    };
    let result = match *op {
        Op::Latest { channel } => service
            .reads
            .page(channel, page(Cursor::Latest), encode)
            .await
            .map(drop),
        Op::Before {
            channel, cursor, ..
        } => service
            .reads
            .page(channel, page(Cursor::Before(cursor)), encode)
            .await
            .map(drop),
        Op::After {
            channel, cursor, ..
        } => service
            .reads
            .page(channel, page(Cursor::After(cursor)), encode)
            .await
            .map(drop),
        Op::Unread { channel, user } => service.reads.unread(channel, user).await.map(drop),
        Op::UserUnread { user } => service.reads.user_unread(user).await.map(drop),
        Op::SyncUser { user, channels } => {
            let request = SyncRequest {
                channels: channels.into_iter().collect(),
                user_id: Some(user),
            };
            service.reads.sync(request).await.map(drop)
        }
        Op::Sync {
            channel,
            since,
            user,
        } => {
            let request = SyncRequest {
                channels: [(channel, since)].into(),
                user_id: Some(user),
            };
            service.reads.sync(request).await.map(drop)
        }
        Op::Post { channel, user } => {
            let new = NewMessage {
                sender: user,
                content: Content::parse(format!("bench post {n}"), 16384).expect("short content"),
                reply_to: None,
                client_msg_id: Some(ClientMsgId::parse(format!("bench-{n}")).expect("short id")),
            };
            service.post(channel, new).await.map(drop)
        }
    };
    result.map_err(|e| e.to_string())
}

/// An operation as an HTTP request: method, path and body. A post's `client_msg_id` is
/// `bench-<id>`.
pub fn http_form(op: &Op, id: &str) -> (&'static str, String, Option<String>) {
    let page = |channel, cursor: &str| {
        format!("/v1/channels/{channel}/messages?limit={PAGE_LIMIT}{cursor}")
    };
    match *op {
        Op::Latest { channel } => ("GET", page(channel, ""), None),
        Op::Before {
            channel, cursor, ..
        } => ("GET", page(channel, &format!("&before={}", cursor.0)), None),
        Op::After {
            channel, cursor, ..
        } => ("GET", page(channel, &format!("&after={}", cursor.0)), None),
        Op::Unread { channel, user } => (
            "GET",
            format!("/v1/channels/{channel}/unread?user_id={user}"),
            None,
        ),
        Op::UserUnread { user } => ("GET", format!("/v1/users/{user}/unread"), None),
        Op::SyncUser { user, channels } => {
            let list: Vec<String> = channels
                .iter()
                .map(|(c, since)| format!(r#""{c}": {since}"#))
                .collect();
            let body = format!(
                r#"{{"channels": {{{}}}, "user_id": "{user}"}}"#,
                list.join(", ")
            );
            ("POST", "/v1/sync".into(), Some(body))
        }
        Op::Sync {
            channel,
            since,
            user,
        } => {
            let body = format!(r#"{{"channels": {{"{channel}": {since}}}, "user_id": "{user}"}}"#);
            ("POST", "/v1/sync".into(), Some(body))
        }
        Op::Post { channel, user } => {
            let body = format!(
                r#"{{"sender_id": "{user}", "content": "bench post {id}", "client_msg_id": "bench-{id}"}}"#
            );
            (
                "POST",
                format!("/v1/channels/{channel}/messages"),
                Some(body),
            )
        }
    }
}

async fn over_http(client: &reqwest::Client, base: &str, op: &Op, n: u64) -> Result<(), String> {
    let (method, path, body) = http_form(op, &n.to_string());
    let url = format!("{base}{path}");
    let mut request = match method {
        "GET" => client.get(url),
        _ => client.post(url),
    };
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    response.bytes().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}

/// Runs `ops` against `target` with `concurrency` tasks; `label` names the progress bar.
/// `salt` makes this run's posts new messages (their `client_msg_id`s are its own).
pub async fn run(
    target: &Target,
    ops: Arc<Vec<Op>>,
    concurrency: usize,
    label: &str,
    salt: u64,
) -> Run {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let progress = Arc::new(std::sync::Mutex::new(Progress::new(
        label,
        ops.len() as u64,
    )));
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (target, ops, next, progress) =
                (target.clone(), ops.clone(), next.clone(), progress.clone());
            tokio::spawn(async move {
                let (mut latency, mut errors, mut first_error) = (histogram(), 0u64, None);
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let Some(op) = ops.get(n) else { break };
                    let t = Instant::now();
                    if let Err(e) = call(&target, op, salt * 1_000_000_000 + n as u64).await {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                    latency.saturating_record(t.elapsed().as_micros() as u64);
                    if n % 1000 == 0 {
                        progress
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .add(1000.min(ops.len() as u64));
                    }
                }
                (latency, errors, first_error)
            })
        })
        .collect();
    let mut run = Run {
        requests: ops.len() as u64,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: histogram(),
    };
    for task in tasks {
        let (latency, errors, first_error) = task.await.expect("a driver task does not panic");
        run.latency
            .add(latency)
            .expect("histograms of the same bounds add");
        run.errors += errors;
        if let Some(e) = first_error {
            tracing::warn!(error = %e, "a benchmark request failed");
        }
    }
    run.elapsed = started.elapsed();
    if let Ok(progress) = Arc::try_unwrap(progress) {
        let mut progress = progress.into_inner().unwrap_or_else(|e| e.into_inner());
        progress.add(run.requests);
        progress.finish();
    }
    run
}
