//! Where each call goes: one server (or Sentinel's primary) through one pool; on a Redis
//! Cluster, a pool of hotchan's own per primary, chosen by the key's slot.
//!
//! Why not fred's clustered client: while it cannot reach one primary, it stops writing
//! to every primary. Its reconnection re-syncs the whole cluster and waits for a
//! connection to each node, and new commands wait behind it. Measured on a private
//! 3-primary cluster with one primary killed: 0 of 40 reads of keys on the two healthy
//! primaries answered in 10 s. With a pool per primary, a dead primary fails only the
//! calls for its own slots, and the cache's breaker per node ([`Redis::node_of`]) keeps
//! the other primaries' channels in Redis.
//!
//! The slot map comes from `CLUSTER SLOTS`, asked of any node that answers: at start,
//! every [`REFRESH_EVERY`], and soon after a call fails (a dead primary, a `MOVED` after a
//! failover). A primary that appears gets a pool; one that leaves the map is closed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use fred::clients::{Client, Pool};
use fred::prelude::{ClientLike, ClusterInterface, Config, ServerConfig};
use fred::types::cluster::ClusterRouting;
use fred::types::config::Server;
use fred::types::Value;

use super::{Links, RedisConfigError, RedisError};

/// How often the slot map is asked for while nothing fails.
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// The least time between two asks after failed calls.
const REFRESH_AFTER_FAILURE: Duration = Duration::from_millis(200);
/// How long one node may take to answer `CLUSTER SLOTS`.
const ASK_TIMEOUT: Duration = Duration::from_millis(500);

/// One Redis server and the pool of connections to it.
pub(super) struct Node {
    /// `host:port`: how the breaker, `/v1/admin/cache` and `/metrics` name it.
    pub name: Arc<str>,
    pub pool: Pool,
    /// On a cluster: the replicas the slot map lists for this primary (a failed one is
    /// not listed). `u32::MAX` where hotchan cannot tell (one server, Sentinel).
    replicas: AtomicU32,
}

impl Node {
    fn new(name: Arc<str>, pool: Pool) -> Node {
        Node {
            name,
            pool,
            replicas: AtomicU32::new(u32::MAX),
        }
    }

    /// How many replicas could take over from this node, as far as hotchan knows.
    pub fn replicas(&self) -> u32 {
        self.replicas.load(Ordering::Acquire)
    }

    /// One of the pool's connections, a connected one when there is one.
    pub fn client(&self) -> &Client {
        self.pool.next_connected()
    }

    pub fn is_connected(&self) -> bool {
        self.pool.clients().iter().any(ClientLike::is_connected)
    }
}

/// Makes the pool of one server from the URL's config (credentials, TLS, timeouts).
pub(super) type MakePool = dyn Fn(Config) -> Result<Pool, RedisConfigError> + Send + Sync;

pub(super) enum Nodes {
    One(Arc<Node>),
    Cluster(Arc<ClusterNodes>),
}

pub(super) struct ClusterNodes {
    /// The URL's config; each node's is this one pointed at the node.
    base: Config,
    make: Box<MakePool>,
    links: Arc<Links>,
    map: RwLock<Arc<Topology>>,
    failed: Arc<tokio::sync::Notify>,
}

#[derive(Default)]
struct Topology {
    routing: Option<ClusterRouting>,
    nodes: BTreeMap<Server, Arc<Node>>,
}

fn name_of(server: &Server) -> Arc<str> {
    Arc::from(format!("{}:{}", server.host, server.port))
}

/// A pool for `server`: `base` pointed at it, its events kept in `links`.
fn node_for(
    base: &Config,
    make: &MakePool,
    links: &Arc<Links>,
    server: &Server,
) -> Result<Arc<Node>, RedisConfigError> {
    let mut config = base.clone();
    config.server = ServerConfig::Centralized {
        server: server.clone(),
    };
    let pool = make(config)?;
    links.watch(&pool);
    let _tasks = pool.connect_pool();
    Ok(Arc::new(Node::new(name_of(server), pool)))
}

impl Nodes {
    /// One pool for `config`, or on a cluster URL, a pool per seed until the first slot
    /// map names the primaries (the refresher, started here, keeps it).
    pub fn connect(
        config: Config,
        make: Box<MakePool>,
        links: Arc<Links>,
    ) -> Result<Nodes, RedisConfigError> {
        let ServerConfig::Clustered { hosts, .. } = &config.server else {
            let name: Arc<str> = match &config.server {
                ServerConfig::Sentinel { service_name, .. } => {
                    Arc::from(format!("sentinel:{service_name}"))
                }
                other => other
                    .hosts()
                    .first()
                    .map(name_of)
                    .unwrap_or_else(|| Arc::from("redis")),
            };
            let pool = make(config)?;
            links.watch(&pool);
            let _tasks = pool.connect_pool();
            return Ok(Nodes::One(Arc::new(Node::new(name, pool))));
        };
        let mut nodes = BTreeMap::new();
        for seed in hosts {
            nodes.insert(seed.clone(), node_for(&config, &*make, &links, seed)?);
        }
        let cluster = Arc::new(ClusterNodes {
            base: config,
            make,
            links,
            map: RwLock::new(Arc::new(Topology {
                routing: None,
                nodes,
            })),
            failed: Arc::new(tokio::sync::Notify::new()),
        });
        tokio::spawn(keep_map(Arc::downgrade(&cluster), cluster.failed.clone()));
        Ok(Nodes::Cluster(cluster))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Nodes::Cluster(_))
    }

    /// The node that holds `slot` (on one server, that server).
    pub fn for_slot(&self, slot: u16) -> Arc<Node> {
        match self {
            Nodes::One(node) => node.clone(),
            Nodes::Cluster(cluster) => cluster.for_slot(slot),
        }
    }

    /// The node that holds `key`.
    pub fn for_key(&self, key: &[u8]) -> Arc<Node> {
        match self {
            Nodes::One(node) => node.clone(),
            Nodes::Cluster(cluster) => cluster.for_slot(fred::util::redis_keyslot(key)),
        }
    }

    /// A node for a call that any node can answer (`PUBLISH` reaches every node of a
    /// cluster): a connected one when there is one, else not `avoid`.
    pub fn any(&self, avoid: Option<&str>) -> Arc<Node> {
        match self {
            Nodes::One(node) => node.clone(),
            Nodes::Cluster(cluster) => {
                let nodes: Vec<Arc<Node>> = cluster.topology().nodes.values().cloned().collect();
                let fits = |n: &&Arc<Node>| Some(&*n.name) != avoid;
                nodes
                    .iter()
                    .filter(fits)
                    .find(|n| n.is_connected())
                    .or_else(|| nodes.iter().find(|n| n.is_connected()))
                    .or_else(|| nodes.iter().find(fits))
                    .or(nodes.first())
                    .cloned()
                    .expect("a cluster has at least one seed")
            }
        }
    }

    /// Every node: the primaries of a cluster, in the order of their names.
    pub fn all(&self) -> Vec<Arc<Node>> {
        match self {
            Nodes::One(node) => vec![node.clone()],
            Nodes::Cluster(cluster) => cluster.topology().nodes.values().cloned().collect(),
        }
    }

    /// A call failed: on a cluster, ask for the slot map soon (a primary may have moved).
    pub fn call_failed(&self) {
        if let Nodes::Cluster(cluster) = self {
            cluster.failed.notify_one();
        }
    }

    /// On a cluster: asks for the slot map until a node answers, at most `limit`.
    pub async fn wait_for_map(&self, limit: Duration) -> Result<(), RedisError> {
        let Nodes::Cluster(cluster) = self else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        loop {
            match cluster.refresh().await {
                Ok(()) => return Ok(()),
                Err(error) if started.elapsed() >= limit => return Err(error),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Closes every pool.
    pub async fn quit(&self) {
        for node in self.all() {
            let _ = node.pool.quit().await;
        }
    }
}

impl ClusterNodes {
    fn topology(&self) -> Arc<Topology> {
        self.map.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn for_slot(&self, slot: u16) -> Arc<Node> {
        let topology = self.topology();
        let owner = topology
            .routing
            .as_ref()
            .and_then(|r| r.get_server(slot))
            .and_then(|server| topology.nodes.get(server));
        match owner {
            Some(node) => node.clone(),
            // No map yet (or a slot nobody serves): a seed answers, with MOVED or
            // CLUSTERDOWN if it must, and the failure asks for a map.
            None => topology
                .nodes
                .values()
                .next()
                .cloned()
                .expect("a cluster has at least one seed"),
        }
    }

    /// `CLUSTER SLOTS` from the first node that answers (the known nodes, then the
    /// seeds), then a pool for each new primary; pools of servers no longer primaries
    /// are closed.
    async fn refresh(&self) -> Result<(), RedisError> {
        let current = self.topology();
        let mut asked: Vec<(&Server, &Arc<Node>)> = current.nodes.iter().collect();
        asked.sort_by_key(|(_, n)| !n.is_connected());
        let mut last_error = RedisError::Unreachable("no cluster node answers".into());
        let mut routing = None;
        for (server, node) in asked {
            let slots = node.client().cluster_slots::<Value>();
            match tokio::time::timeout(ASK_TIMEOUT, slots).await {
                // A node that does not know its own address reports it empty.
                Ok(Ok(value)) => {
                    match ClusterRouting::from_cluster_slots(value.clone(), &*server.host) {
                        Ok(map) if map.len() > 0 => {
                            routing = Some((map, replica_counts(&value)));
                            break;
                        }
                        Ok(_) => last_error = RedisError::Protocol,
                        Err(error) => last_error = RedisError::Command(error),
                    }
                }
                Ok(Err(error)) => last_error = RedisError::Command(error),
                Err(_) => last_error = RedisError::Timeout,
            }
        }
        let Some((routing, replicas)) = routing else {
            return Err(last_error);
        };
        let primaries = routing.unique_primary_nodes();
        let mut nodes = BTreeMap::new();
        for server in &primaries {
            let node = match current.nodes.get(server) {
                Some(node) => node.clone(),
                None => node_for(&self.base, &*self.make, &self.links, server)
                    .map_err(RedisError::Config)?,
            };
            let listed = replicas.get(&(server.host.to_string(), server.port));
            node.replicas
                .store(listed.copied().unwrap_or(0), Ordering::Release);
            nodes.insert(server.clone(), node);
        }
        let gone: Vec<Arc<Node>> = current
            .nodes
            .iter()
            .filter(|(server, _)| !nodes.contains_key(*server))
            .map(|(_, node)| node.clone())
            .collect();
        let changed = primaries.len() != current.nodes.len() || !gone.is_empty();
        *self.map.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Topology {
            routing: Some(routing),
            nodes,
        });
        if changed {
            let names: Vec<String> = primaries.iter().map(|s| name_of(s).to_string()).collect();
            tracing::info!(primaries = ?names, "Redis Cluster slot map changed");
        }
        for node in gone {
            tokio::spawn(async move {
                let _ = node.pool.quit().await;
            });
        }
        Ok(())
    }
}

/// How many replicas `CLUSTER SLOTS` lists for each primary (`host`, `port`): each range
/// is `[first, last, primary, replica…]`, and Redis leaves failed replicas out.
fn replica_counts(slots: &Value) -> BTreeMap<(String, u16), u32> {
    let mut counts = BTreeMap::new();
    let Value::Array(ranges) = slots else {
        return counts;
    };
    for range in ranges {
        let Value::Array(parts) = range else {
            continue;
        };
        let Some(Value::Array(primary)) = parts.get(2) else {
            continue;
        };
        let host = primary.first().and_then(|h| h.as_string());
        let port = primary.get(1).and_then(|p| p.as_i64());
        if let (Some(host), Some(port)) = (host, port) {
            let listed = parts.len().saturating_sub(3) as u32;
            counts.insert((host, port as u16), listed);
        }
    }
    counts
}

/// Keeps the slot map: every [`REFRESH_EVERY`], and soon after a failed call. Ends when
/// the connection is dropped.
async fn keep_map(cluster: Weak<ClusterNodes>, failed: Arc<tokio::sync::Notify>) {
    loop {
        let after_failure = async {
            failed.notified().await;
            tokio::time::sleep(REFRESH_AFTER_FAILURE).await;
        };
        tokio::select! {
            _ = tokio::time::sleep(REFRESH_EVERY) => {}
            _ = after_failure => {}
        }
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        if let Err(error) = cluster.refresh().await {
            tracing::debug!(%error, "cannot read the Redis Cluster slot map");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(port: i64) -> Value {
        Value::Array(vec![
            Value::from("127.0.0.1"),
            Value::Integer(port),
            Value::from(format!("id{port}")),
        ])
    }

    #[test]
    fn replicas_are_counted_per_primary_from_cluster_slots() {
        let slots = Value::Array(vec![
            Value::Array(vec![
                Value::Integer(0),
                Value::Integer(5460),
                node(7000),
                node(7003),
            ]),
            Value::Array(vec![
                Value::Integer(5461),
                Value::Integer(16383),
                node(7001),
            ]),
        ]);
        let counts = replica_counts(&slots);
        assert_eq!(counts.get(&("127.0.0.1".to_owned(), 7000)), Some(&1));
        assert_eq!(counts.get(&("127.0.0.1".to_owned(), 7001)), Some(&0));
        assert_eq!(counts.len(), 2);
        let routing = ClusterRouting::from_cluster_slots(slots, "127.0.0.1").unwrap();
        assert_eq!(routing.get_server(5461).unwrap().port, 7001);
        assert!(replica_counts(&Value::Null).is_empty());
    }
}
