//! Redis health per node: the breaker of each Redis node (the server, or each primary of
//! a cluster), and the set of them the cache asks on every read.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::redis::NodeName;

/// A timed-out call does not count against Redis while another call succeeded this
/// recently: Redis answers, the process is only slow (a saturated CPU delays the replies
/// of every call in flight at once). The timed-out call itself still fell back.
pub const SLOW_GRACE: Duration = Duration::from_millis(500);

/// Opens after `threshold` consecutive failed Redis calls; while open, no request waits on
/// Redis. Only the background prober closes it, after the dirty channels are dropped.
pub struct Breaker {
    threshold: u32,
    failures: AtomicU32,
    open: AtomicBool,
    started: Instant,
    /// Milliseconds from `started` to the last success.
    last_success_ms: AtomicU64,
    /// What the last failed call said (the server's own message), until the breaker closes.
    last_error: Mutex<Option<String>>,
}

impl Breaker {
    pub fn new(threshold: u32) -> Breaker {
        Breaker {
            threshold,
            failures: AtomicU32::new(0),
            open: AtomicBool::new(false),
            started: Instant::now(),
            last_success_ms: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    pub fn record_success(&self) {
        self.failures.store(0, Ordering::Release);
        self.last_success_ms.store(self.now_ms(), Ordering::Release);
    }

    /// Returns true when this failure opened the breaker. A timeout within
    /// [`SLOW_GRACE`] of a success does not count.
    pub fn record_failure(&self, timed_out: bool, error: &dyn std::fmt::Display) -> bool {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
        let since_success = self.now_ms() - self.last_success_ms.load(Ordering::Acquire);
        if timed_out && since_success < SLOW_GRACE.as_millis() as u64 {
            return false;
        }
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        failures >= self.threshold && !self.open.swap(true, Ordering::AcqRel)
    }

    /// Closes it; true when it was open.
    pub fn close(&self) -> bool {
        self.failures.store(0, Ordering::Release);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.open.swap(false, Ordering::AcqRel)
    }

    /// While the breaker is open: what the last failed call said.
    pub fn open_reason(&self) -> Option<String> {
        if !self.is_open() {
            return None;
        }
        let reason = self
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Some(reason.unwrap_or_else(|| "Redis calls failed".to_owned()))
    }
}

/// A breaker per Redis node (the server, or each primary of a cluster), made as nodes
/// appear: one dead primary sends only its own slots' scopes to Postgres. While every
/// breaker is closed, asking whether a scope's node is open reads one counter.
pub struct Breakers {
    threshold: u32,
    nodes: RwLock<BTreeMap<NodeName, Arc<Breaker>>>,
    /// How many breakers are open.
    open: AtomicUsize,
}

/// One node's breaker as `/v1/admin/cache` and `/metrics` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHealth {
    pub node: NodeName,
    pub open: bool,
    /// While open: what the last failed call said.
    pub reason: Option<String>,
}

impl Breakers {
    pub fn new(threshold: u32) -> Breakers {
        Breakers {
            threshold,
            nodes: RwLock::new(BTreeMap::new()),
            open: AtomicUsize::new(0),
        }
    }

    fn get(&self, node: &NodeName) -> Arc<Breaker> {
        if let Some(b) = self
            .nodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
        {
            return b.clone();
        }
        let mut nodes = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        nodes
            .entry(node.clone())
            .or_insert_with(|| Arc::new(Breaker::new(self.threshold)))
            .clone()
    }

    /// Whether any node's breaker is open (one atomic load).
    pub fn any_open(&self) -> bool {
        self.open.load(Ordering::Acquire) > 0
    }

    pub fn is_open(&self, node: &NodeName) -> bool {
        self.any_open() && self.get(node).is_open()
    }

    pub fn record_success(&self, node: &NodeName) {
        self.get(node).record_success();
    }

    /// True when this failure opened `node`'s breaker.
    pub fn record_failure(
        &self,
        node: &NodeName,
        timed_out: bool,
        error: &dyn std::fmt::Display,
    ) -> bool {
        let opened = self.get(node).record_failure(timed_out, error);
        if opened {
            self.open.fetch_add(1, Ordering::AcqRel);
        }
        opened
    }

    /// Closes `node`'s breaker; true when it was open.
    pub fn close(&self, node: &NodeName) -> bool {
        let closed = self.get(node).close();
        if closed {
            self.open.fetch_sub(1, Ordering::AcqRel);
        }
        closed
    }

    /// The nodes whose breaker is open.
    pub fn open_nodes(&self) -> Vec<NodeName> {
        if !self.any_open() {
            return Vec::new();
        }
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        nodes
            .iter()
            .filter(|(_, b)| b.is_open())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Each of `nodes` (and any other node a call met), in name order.
    pub fn health(&self, nodes: &[NodeName]) -> Vec<NodeHealth> {
        for node in nodes {
            self.get(node);
        }
        let all = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        all.iter()
            .map(|(node, b)| NodeHealth {
                node: node.clone(),
                open: b.is_open(),
                reason: b.open_reason(),
            })
            .collect()
    }

    /// While any breaker is open: what each open one's last failed call said.
    pub fn open_reason(&self) -> Option<String> {
        if !self.any_open() {
            return None;
        }
        let all = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        let reasons: Vec<String> = all.values().filter_map(|b| b.open_reason()).collect();
        Some(reasons.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_the_threshold_and_success_resets_the_count() {
        let b = Breaker::new(3);
        assert!(!b.record_failure(false, &"refused"));
        assert!(!b.record_failure(false, &"refused"));
        b.record_success();
        assert!(!b.record_failure(false, &"refused") && !b.record_failure(false, &"refused"));
        assert!(
            b.record_failure(false, &"refused"),
            "the third in a row opens it"
        );
        assert!(b.is_open());
        assert!(!b.record_failure(false, &"refused"), "already open");
        b.record_success();
        assert!(b.is_open(), "only close() closes it");
        assert!(b.close());
        assert!(!b.is_open());
        assert!(!b.close(), "already closed");
    }

    #[test]
    fn one_node_open_leaves_the_others_closed() {
        let breakers = Breakers::new(2);
        let (dead, alive): (NodeName, NodeName) =
            ("127.0.0.1:7001".into(), "127.0.0.1:7002".into());
        breakers.record_success(&alive);
        assert!(!breakers.any_open());
        assert!(!breakers.record_failure(&dead, false, &"refused"));
        assert!(breakers.record_failure(&dead, false, &"connection refused"));
        assert!(breakers.any_open());
        assert!(breakers.is_open(&dead));
        assert!(!breakers.is_open(&alive));
        assert_eq!(breakers.open_nodes(), vec![dead.clone()]);
        let health = breakers.health(std::slice::from_ref(&alive));
        assert_eq!(health.len(), 2);
        assert_eq!(health[0].reason.as_deref(), Some("connection refused"));
        assert!(!health[1].open);
        assert!(breakers.close(&dead));
        assert!(!breakers.any_open());
        assert!(!breakers.close(&dead), "closing twice counts once");
        assert!(!breakers.any_open());
    }

    #[test]
    fn timeouts_right_after_a_success_are_slowness_not_an_outage() {
        let b = Breaker::new(2);
        b.record_success();
        for _ in 0..10 {
            assert!(!b.record_failure(true, &"timed out"));
        }
        assert!(!b.is_open(), "Redis answered 0 ms ago");
        std::thread::sleep(SLOW_GRACE + Duration::from_millis(50));
        assert!(!b.record_failure(true, &"timed out"));
        assert!(
            b.record_failure(true, &"timed out"),
            "no success for longer than the grace"
        );
        let refused = Breaker::new(2);
        refused.record_success();
        assert!(!refused.record_failure(false, &"refused"));
        assert!(
            refused.record_failure(false, &"refused"),
            "errors count at once"
        );
    }
}
