//! A private Redis Cluster: three primaries with the slots split evenly, and, when asked,
//! a replica for each (for the failover case). Free ports, a folder of its own, every
//! wait bounded; the nodes are killed when dropped.

use std::time::Duration;

use crate::servers::{free_port, redis_cli, wait_until, PrivateRedis, Scratch};

pub struct Cluster {
    /// The primaries, in slot order ([`SLOT_RANGES`]).
    pub nodes: Vec<PrivateRedis>,
    /// `replicas[i]` replicates `nodes[i]` (empty when started without).
    pub replicas: Vec<PrivateRedis>,
    _dir: Scratch,
}

/// The first and last slot of each primary's range.
pub const SLOT_RANGES: [(u16, u16); 3] = [(0, 5460), (5461, 10922), (10923, 16383)];

/// A cluster node on a free port, its bus on a free port of its own: the default,
/// port + 10000, may be taken, or past 65535 for a port the kernel picked.
async fn node(dir: &Scratch) -> (PrivateRedis, String) {
    let port = free_port();
    let conf = format!("nodes-{port}.conf");
    let bus = free_port().to_string();
    let node = PrivateRedis::start_with(
        port,
        Some(&dir.0),
        &[
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &conf,
            "--cluster-node-timeout",
            "2000",
            "--cluster-port",
            &bus,
        ],
    )
    .await;
    (node, bus)
}

impl Cluster {
    /// Three primaries, no replicas.
    pub async fn start() -> Cluster {
        Cluster::start_with(false).await
    }

    /// Three primaries, each with a replica in sync.
    pub async fn start_replicated() -> Cluster {
        Cluster::start_with(true).await
    }

    async fn start_with(replicated: bool) -> Cluster {
        let dir = Scratch::new("cluster");
        let (mut nodes, mut buses) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            let (node, bus) = node(&dir).await;
            nodes.push(node);
            buses.push(bus);
        }
        for (node, (first, last)) in nodes.iter().zip(SLOT_RANGES) {
            let (first, last) = (first.to_string(), last.to_string());
            redis_cli(node.port, &["cluster", "addslotsrange", &first, &last]).await;
        }
        let mut replicas = Vec::new();
        if replicated {
            for _ in 0..3 {
                let (node, bus) = node(&dir).await;
                replicas.push(node);
                buses.push(bus);
            }
        }
        let all: Vec<&PrivateRedis> = nodes.iter().chain(&replicas).collect();
        for (node, bus) in all[1..].iter().zip(&buses[1..]) {
            let port = node.port.to_string();
            redis_cli(nodes[0].port, &["cluster", "meet", "127.0.0.1", &port, bus]).await;
        }
        let cluster = Cluster {
            nodes,
            replicas,
            _dir: dir,
        };
        for (primary, replica) in cluster.nodes.iter().zip(&cluster.replicas) {
            let id = redis_cli(primary.port, &["cluster", "myid"]).await;
            let (id, port) = (id.trim().to_owned(), replica.port);
            // The replica must know the primary first (the meet travels by gossip).
            wait_until(Duration::from_secs(30), "the replica follows", || {
                let id = id.clone();
                async move {
                    redis_cli(port, &["cluster", "replicate", &id])
                        .await
                        .contains("OK")
                }
            })
            .await;
        }
        cluster.wait_ok().await;
        for replica in &cluster.replicas {
            let port = replica.port;
            wait_until(
                Duration::from_secs(30),
                "the replica is in sync",
                || async move {
                    redis_cli(port, &["info", "replication"])
                        .await
                        .contains("master_link_status:up")
                },
            )
            .await;
        }
        cluster
    }

    /// Every node that answers says `cluster_state:ok`.
    pub async fn wait_ok(&self) {
        for node in self.nodes.iter().chain(&self.replicas) {
            if !redis_cli(node.port, &["ping"]).await.contains("PONG") {
                continue;
            }
            let port = node.port;
            wait_until(Duration::from_secs(30), "cluster_state:ok", || async move {
                redis_cli(port, &["cluster", "info"])
                    .await
                    .contains("cluster_state:ok")
            })
            .await;
        }
    }

    pub fn url(&self) -> String {
        format!(
            "redis-cluster://127.0.0.1:{}?node=127.0.0.1:{}&node=127.0.0.1:{}",
            self.nodes[0].port, self.nodes[1].port, self.nodes[2].port
        )
    }

    /// Which primary holds `slot`.
    pub fn owner(slot: u16) -> usize {
        SLOT_RANGES
            .iter()
            .position(|&(first, last)| (first..=last).contains(&slot))
            .unwrap()
    }
}
