//! The per-instance Prometheus registry. Each instance owns its recorder (none is
//! installed globally), so two instances in one process, as in the tests, never mix their
//! counts. Histograms have explicit buckets: without them the exporter renders summaries.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::cache::paths::Path;
use crate::cache::{Bound, Snapshot};
use crate::postgres::PoolState;

/// How often recorded histogram samples are folded into their buckets ([`upkeep`]).
pub const UPKEEP: Duration = Duration::from_secs(5);

/// Latency buckets in seconds: 25 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0,
];

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// `hotchan_read_duration_seconds` per path, registered once: every read records
    /// here, so it skips the registry lookup the macro would do.
    reads: [metrics::Histogram; 4],
    /// The per-request counter and histogram, registered once per route, method and
    /// status: a request then records without allocating labels or looking them up in
    /// the registry. Keyed by the labels' hash, with the labels kept to tell collisions
    /// apart; the combinations are bounded by the router's routes.
    /// Routes outside the router's [`RouteTable`] (none today) and statuses outside
    /// [`STATUSES`]: looked up under a lock, the slower path.
    requests: std::sync::RwLock<HashMap<u64, Vec<RequestHandles>>>,
    hasher: std::hash::RandomState,
    /// Redis and Postgres call histograms by operation, resolved once per operation.
    redis_calls: Operations,
    postgres_calls: Operations,
}

struct RequestHandles {
    route: Box<str>,
    method: Box<str>,
    status: u16,
    count: metrics::Counter,
    duration: metrics::Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        let reads = metrics::with_local_recorder(&recorder, || {
            Path::ALL.map(|p| histogram!("hotchan_read_duration_seconds", "path" => p.as_str()))
        });
        let metrics = Metrics {
            recorder,
            handle,
            reads,
            requests: Default::default(),
            hasher: Default::default(),
            redis_calls: Operations::new("hotchan_redis_call_duration_seconds"),
            postgres_calls: Operations::new("hotchan_postgres_call_duration_seconds"),
        };
        metrics.with(|| {
            describe_counter!(
                "hotchan_http_requests_total",
                "HTTP requests answered, by route, method and status"
            );
            describe_histogram!(
                "hotchan_http_request_duration_seconds",
                metrics::Unit::Seconds,
                "HTTP request latency, by route and method"
            );
            describe_histogram!(
                "hotchan_read_duration_seconds",
                metrics::Unit::Seconds,
                "Read latency in the service, by the path that answered (l1, redis, fill, postgres)"
            );
            describe_histogram!(
                "hotchan_postgres_call_duration_seconds",
                metrics::Unit::Seconds,
                "Postgres call latency, by operation"
            );
            describe_gauge!(
                "hotchan_postgres_pool_connections",
                "Postgres pool connections, by state (max, open, idle)"
            );
            describe_gauge!(
                "hotchan_postgres_pool_waiting",
                "Requests waiting for a Postgres pool connection"
            );
            describe_gauge!(
                "hotchan_redis_node_breaker_open",
                "1 while the breaker of this Redis node (each primary of a cluster) is open"
            );
        });
        metrics
    }

    /// Folds the histogram samples recorded since the last upkeep (or render) into their
    /// buckets. The recorder keeps every sample until then.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }

    fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    pub fn record_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let hash = self.hasher.hash_one((route, method, status));
        let record = |h: &RequestHandles| {
            h.count.increment(1);
            h.duration.record(elapsed.as_secs_f64());
        };
        let matches =
            |h: &&RequestHandles| &*h.route == route && &*h.method == method && h.status == status;
        {
            let requests = self.requests.read().unwrap_or_else(|e| e.into_inner());
            if let Some(h) = requests.get(&hash).and_then(|v| v.iter().find(matches)) {
                return record(h);
            }
        }
        let (route, method) = (route.to_owned(), method.to_owned());
        let handles = self.with(|| RequestHandles {
            count: counter!("hotchan_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status.to_string()),
            duration: histogram!("hotchan_http_request_duration_seconds", "route" => route.clone(), "method" => method.clone()),
            route: route.into(),
            method: method.into(),
            status,
        });
        record(&handles);
        let mut requests = self.requests.write().unwrap_or_else(|e| e.into_inner());
        let same = requests.entry(hash).or_default();
        if !same.iter().any(|h| matches(&h)) {
            same.push(handles);
        }
    }

    pub fn record_postgres_call(&self, operation: &'static str, elapsed: Duration) {
        self.postgres_calls.record(self, operation, elapsed);
    }

    /// A read, by the path that answered it (l1, redis, fill, postgres).
    pub fn record_read(&self, path: Path, elapsed: Duration) {
        self.reads[path as usize].record(elapsed.as_secs_f64());
    }

    pub fn record_redis_call(&self, operation: &'static str, elapsed: Duration) {
        self.redis_calls.record(self, operation, elapsed);
    }

    /// Renders the Prometheus text, with the pool and cache state read at this moment.
    /// Renders every metric: the pool, the cache at one moment, every bounded table and
    /// queue (`bounds`), and the background fan-outs not finished with the recipients
    /// they still have to reach (`None` when Postgres did not answer in time).
    pub fn render(
        &self,
        pool: PoolState,
        cache: &Snapshot,
        bounds: &[Bound],
        fanouts: Option<(i64, i64)>,
    ) -> String {
        let s = &cache.stats;
        self.with(|| {
            counter!("hotchan_cache_hits_total", "tier" => "l1").absolute(s.l1_hits);
            counter!("hotchan_cache_misses_total", "tier" => "l1").absolute(s.l1_misses);
            counter!("hotchan_cache_hits_total", "tier" => "redis").absolute(s.l2_hits);
            counter!("hotchan_cache_misses_total", "tier" => "redis").absolute(s.l2_misses);
            counter!("hotchan_postgres_reads_total").absolute(s.postgres_reads);
            counter!("hotchan_cache_fills_total", "outcome" => "installed").absolute(s.fills);
            counter!("hotchan_cache_fills_total", "outcome" => "refused").absolute(s.fills_refused);
            counter!("hotchan_cache_fills_total", "outcome" => "dropped").absolute(s.fills_dropped);
            gauge!("hotchan_cache_fills_pending").set(cache.fills_pending as f64);
            if let Some((fanouts, recipients)) = fanouts {
                gauge!("hotchan_feed_fanouts_pending").set(fanouts as f64);
                gauge!("hotchan_feed_recipients_pending").set(recipients as f64);
            }
            for b in bounds {
                gauge!("hotchan_bounded_entries", "name" => b.name).set(b.len as f64);
                gauge!("hotchan_bounded_limit", "name" => b.name).set(b.limit as f64);
            }
            counter!("hotchan_history_pages_total", "answer" => "l1").absolute(s.history_l1_hits);
            counter!("hotchan_history_pages_total", "answer" => "redis")
                .absolute(s.history_redis_hits);
            counter!("hotchan_history_pages_total", "answer" => "miss").absolute(s.history_misses);
            counter!("hotchan_history_fills_total").absolute(s.history_fills);
            counter!("hotchan_invalidations_total", "direction" => "sent")
                .absolute(s.invalidations_sent);
            counter!("hotchan_invalidations_total", "direction" => "received")
                .absolute(s.invalidations_received);
            counter!("hotchan_cache_notices_total", "direction" => "sent").absolute(s.notices_sent);
            counter!("hotchan_cache_notices_total", "direction" => "received")
                .absolute(s.notices_received);
            counter!("hotchan_cache_outbox_replayed_total").absolute(s.outbox_replayed);
            counter!("hotchan_redis_errors_total").absolute(s.redis_errors);
            counter!("hotchan_redis_repair_failures_total").absolute(s.repair_failures);
            for d in &cache.audit.delays {
                let delay = d.delay;
                counter!("hotchan_audit_checks_total", "delay" => delay, "result" => "consistent")
                    .absolute(d.consistent);
                counter!("hotchan_audit_checks_total", "delay" => delay, "result" => "inconsistent")
                    .absolute(d.inconsistent);
                counter!("hotchan_audit_checks_total", "delay" => delay, "result" => "skipped")
                    .absolute(d.skipped);
                if let Some(nines) = d.nines {
                    gauge!("hotchan_audit_nines", "delay" => delay).set(nines);
                }
            }
            gauge!("hotchan_l1_bypassed").set(f64::from(u8::from(cache.l1_bypassed)));
            gauge!("hotchan_redis_breaker_open").set(f64::from(u8::from(cache.breaker_open)));
            for n in &cache.nodes {
                gauge!("hotchan_redis_node_breaker_open", "node" => n.node.to_string())
                    .set(f64::from(u8::from(n.open)));
            }
            gauge!("hotchan_dirty_channels").set(cache.dirty as f64);
            gauge!("hotchan_postgres_pool_connections", "state" => "max").set(pool.max_size as f64);
            gauge!("hotchan_postgres_pool_connections", "state" => "open").set(pool.size as f64);
            gauge!("hotchan_postgres_pool_connections", "state" => "idle")
                .set(pool.available as f64);
            gauge!("hotchan_postgres_pool_waiting").set(pool.waiting as f64);
        });
        self.handle.render()
    }
}

/// Statuses a [`RouteTable`] counts without a lookup: every status the routes answer
/// with. Any other takes [`Metrics::record_request`]'s slower path.
const STATUSES: [u16; 16] = [
    200, 201, 204, 304, 400, 401, 403, 404, 405, 409, 413, 415, 422, 429, 500, 503,
];

/// The request counter and latency histogram of every route and method the router
/// serves, found without a lock: the table is built once with the router and never
/// changes, and each handle is registered on its first use (so `/metrics` shows only
/// what was served).
pub struct RouteTable {
    metrics: Arc<Metrics>,
    /// By route template, then method (a route has at most a handful).
    routes: HashMap<Box<str>, Vec<RouteHandles>>,
}

struct RouteHandles {
    method: Box<str>,
    duration: OnceLock<metrics::Histogram>,
    counts: [OnceLock<metrics::Counter>; STATUSES.len()],
}

impl RouteTable {
    /// The table of `routes`: (route template, method) pairs.
    pub fn new<'a>(
        metrics: Arc<Metrics>,
        routes: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> RouteTable {
        let mut table: HashMap<Box<str>, Vec<RouteHandles>> = HashMap::new();
        for (route, method) in routes {
            table.entry(route.into()).or_default().push(RouteHandles {
                method: method.into(),
                duration: OnceLock::new(),
                counts: Default::default(),
            });
        }
        RouteTable {
            metrics,
            routes: table,
        }
    }

    /// Counts a request and records its latency under its route template.
    pub fn record(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let handles = self
            .routes
            .get(route)
            .and_then(|methods| methods.iter().find(|h| &*h.method == method));
        let slot = STATUSES.iter().position(|s| *s == status);
        let (Some(h), Some(slot)) = (handles, slot) else {
            return self.metrics.record_request(route, method, status, elapsed);
        };
        let labels = || (route.to_owned(), method.to_owned());
        h.counts[slot]
            .get_or_init(|| {
                let (route, method) = labels();
                self.metrics.with(|| counter!("hotchan_http_requests_total", "route" => route, "method" => method, "status" => status.to_string()))
            })
            .increment(1);
        h.duration
            .get_or_init(|| {
                let (route, method) = labels();
                self.metrics.with(|| histogram!("hotchan_http_request_duration_seconds", "route" => route, "method" => method))
            })
            .record(elapsed.as_secs_f64());
    }
}

/// Slots of an [`Operations`] table: more than the operations hotchan times.
const OPERATION_SLOTS: usize = 64;

/// The histograms of one call metric by operation name, each resolved once: an open
/// addressing table of write-once slots, so a lookup takes no lock and a new name claims
/// the first free slot of its probe.
struct Operations {
    metric: &'static str,
    slots: Box<[OnceLock<(&'static str, metrics::Histogram)>]>,
}

impl Operations {
    fn new(metric: &'static str) -> Operations {
        Operations {
            metric,
            slots: (0..OPERATION_SLOTS).map(|_| OnceLock::new()).collect(),
        }
    }

    fn record(&self, metrics: &Metrics, operation: &'static str, elapsed: Duration) {
        let start = operation.bytes().fold(0usize, |h, b| {
            h.wrapping_mul(31).wrapping_add(usize::from(b))
        });
        let make = || metrics.with(|| histogram!(self.metric, "operation" => operation));
        for i in 0..OPERATION_SLOTS {
            let slot = &self.slots[(start + i) % OPERATION_SLOTS];
            let (name, histogram) = slot.get_or_init(|| (operation, make()));
            if *name == operation {
                return histogram.record(elapsed.as_secs_f64());
            }
        }
        // Every slot taken by other names: never with hotchan's operations.
        make().record(elapsed.as_secs_f64());
    }
}

/// Runs [`Metrics::run_upkeep`] every [`UPKEEP`] until the task is aborted. The recorder
/// keeps each histogram sample until a render or an upkeep folds it into its buckets, so
/// an instance nobody scrapes grew by every read's samples: measured with
/// `scripts/bench-memory`, resident size rose from 26 to 61 MiB in 120 s with L1 empty.
pub async fn upkeep(metrics: std::sync::Arc<Metrics>) {
    let mut ticker = tokio::time::interval(UPKEEP);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        metrics.run_upkeep();
    }
}

impl crate::cache::Observer for Metrics {
    fn redis_call(&self, operation: &'static str, elapsed: Duration) {
        self.record_redis_call(operation, elapsed);
    }
    fn postgres_call(&self, operation: &'static str, elapsed: Duration) {
        self.record_postgres_call(operation, elapsed);
    }
    fn read(&self, path: Path, elapsed: Duration) {
        self.record_read(path, elapsed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upkeep_folds_samples_into_buckets_and_loses_none() {
        let metrics = Metrics::new();
        for _ in 0..1000 {
            metrics.record_read(Path::L1, Duration::from_micros(30));
        }
        metrics.run_upkeep();
        for _ in 0..500 {
            metrics.record_read(Path::L1, Duration::from_micros(30));
        }
        metrics.run_upkeep();
        let text = metrics.handle.render();
        assert!(
            text.contains(r#"hotchan_read_duration_seconds_count{path="l1"} 1500"#),
            "{text}"
        );
        assert!(
            text.contains(r#"hotchan_read_duration_seconds_bucket{path="l1",le="0.00005"} 1500"#),
            "{text}"
        );
    }

    #[test]
    fn routes_and_operations_count_on_resolved_handles_and_the_rest_still_counts() {
        let metrics = Arc::new(Metrics::new());
        let table = RouteTable::new(metrics.clone(), [("/v1/a/{id}", "GET")]);
        let ms = Duration::from_millis(1);
        table.record("/v1/a/{id}", "GET", 200, ms);
        table.record("/v1/a/{id}", "GET", 200, ms);
        table.record("/v1/a/{id}", "GET", 418, ms);
        table.record("/elsewhere", "POST", 201, ms);
        for _ in 0..3 {
            metrics.record_redis_call("window_read", ms);
        }
        // More names than slots: the rest are still recorded.
        let names: Vec<&'static str> = (0..OPERATION_SLOTS + 2)
            .map(|i| &*Box::leak(format!("op{i}").into_boxed_str()))
            .collect();
        for name in &names {
            metrics.record_postgres_call(name, ms);
        }
        metrics.run_upkeep();
        let text = metrics.handle.render();
        for line in [
            r#"hotchan_http_requests_total{route="/v1/a/{id}",method="GET",status="200"} 2"#,
            r#"hotchan_http_requests_total{route="/v1/a/{id}",method="GET",status="418"} 1"#,
            r#"hotchan_http_requests_total{route="/elsewhere",method="POST",status="201"} 1"#,
            r#"hotchan_http_request_duration_seconds_count{route="/v1/a/{id}",method="GET"} 3"#,
            r#"hotchan_redis_call_duration_seconds_count{operation="window_read"} 3"#,
        ] {
            assert!(text.contains(line), "{line} missing in {text}");
        }
        for name in &names {
            let line =
                format!(r#"hotchan_postgres_call_duration_seconds_count{{operation="{name}"}} 1"#);
            assert!(text.contains(&line), "{line} missing");
        }
    }
}
