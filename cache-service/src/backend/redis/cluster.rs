//! A Redis Cluster, one pool per master, routed here by hash slot.
//!
//! fred's own cluster client (re)connects to every master at once and fails as a whole
//! while any one cannot be reached: one master down would take every key off the cache.
//! Here each master has its own pool that reconnects on its own, so a master that is
//! down fails only the commands for its slots. The slot map comes from `CLUSTER SLOTS`,
//! asked of any master that answers (or of the URL's nodes) on every identity check:
//! each relay pass, and at once after a reconnection. A command routed by a stale map
//! fails (`MOVED`, or a dead node) and trips its slot until the next pass has the new map.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use fred::interfaces::ClusterInterface;
use fred::prelude::*;
use fred::types::cluster::ClusterRouting;
use fred::types::config::{Server, ServerConfig};
use tokio::sync::Notify;

use super::node::{Node, info_field};
use crate::error::{CacheError, Result};

/// Hash slots of a Redis Cluster.
pub(super) const SLOTS: usize = 16_384;

pub(super) struct Cluster {
    /// The URL's configuration: each master's pool is this with the master as its server.
    base: Config,
    seeds: Vec<Server>,
    new_pool: Box<dyn Fn(Config) -> Result<Pool> + Send + Sync>,
    connect_timeout: Duration,
    command_timeout: Duration,
    seen: Arc<AtomicU64>,
    signal: Arc<Notify>,
    topology: RwLock<Arc<Topology>>,
    /// Each master's identity as last seen, by address: the identity of a master that
    /// does not answer now (its slots fail, and wait for the relay when it answers).
    identities: Mutex<HashMap<String, String>>,
}

#[derive(Default)]
struct Topology {
    routing: Option<ClusterRouting>,
    nodes: HashMap<Server, Arc<Node>>,
}

impl Cluster {
    pub(super) fn new(
        base: Config,
        new_pool: Box<dyn Fn(Config) -> Result<Pool> + Send + Sync>,
        connect_timeout: Duration,
        command_timeout: Duration,
        seen: Arc<AtomicU64>,
        signal: Arc<Notify>,
    ) -> Self {
        let seeds = match &base.server {
            ServerConfig::Clustered { hosts, .. } => hosts.clone(),
            _ => Vec::new(),
        };
        Self {
            base,
            seeds,
            new_pool,
            connect_timeout,
            command_timeout,
            seen,
            signal,
            topology: RwLock::default(),
            identities: Mutex::default(),
        }
    }

    fn topology(&self) -> Arc<Topology> {
        self.topology
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The master that holds `key`'s slot.
    pub(super) fn node_for(&self, key: &str) -> Result<Arc<Node>> {
        let topology = self.topology();
        let slot = ClusterRouting::hash_key(key.as_bytes());
        topology
            .routing
            .as_ref()
            .and_then(|routing| routing.get_server(slot))
            .and_then(|server| topology.nodes.get(server))
            .cloned()
            .ok_or_else(|| CacheError::Backend(format!("no known master holds slot {slot}")))
    }

    /// The masters, sorted by address.
    fn masters(&self) -> Vec<(Server, Arc<Node>)> {
        let topology = self.topology();
        let mut masters: Vec<_> = topology
            .nodes
            .iter()
            .map(|(server, node)| (server.clone(), node.clone()))
            .collect();
        masters.sort_by(|(a, _), (b, _)| (&a.host, a.port).cmp(&(&b.host, b.port)));
        masters
    }

    /// Some master, for commands about the server rather than a key.
    pub(super) fn any_node(&self) -> Result<Arc<Node>> {
        self.masters()
            .into_iter()
            .next()
            .map(|(_, node)| node)
            .ok_or_else(|| CacheError::Backend("the cluster's masters are not known yet".into()))
    }

    pub(super) fn poll_all(&self) {
        for node in self.topology().nodes.values() {
            node.poll_all();
        }
    }

    /// Reads the slot map and opens a pool to every new master (waiting up to the
    /// connect timeout for them); closes the pools of nodes that no longer hold slots.
    pub(super) async fn refresh(&self) -> Result<()> {
        let (routing, host) = self.cluster_slots().await?;
        let current = self.topology();
        // Masters that join a running backend wake the relay when they connect.
        let joining = current.routing.is_some();
        let mut nodes = HashMap::new();
        let mut opened = Vec::new();
        for server in routing.unique_primary_nodes() {
            let node = match current.nodes.get(&server) {
                Some(node) => node.clone(),
                None => {
                    let mut config = self.base.clone();
                    config.server = ServerConfig::Centralized {
                        server: server.clone(),
                    };
                    let pool = (self.new_pool)(config)?;
                    drop(pool.connect_pool());
                    let node = Arc::new(Node::over(
                        pool,
                        self.command_timeout,
                        self.seen.clone(),
                        self.signal.clone(),
                        joining,
                    ));
                    opened.push(node.clone());
                    node
                }
            };
            nodes.insert(server, node);
        }
        let waits = opened
            .iter()
            .map(|node| tokio::time::timeout(self.connect_timeout, node.pool().wait_for_connect()));
        futures::future::join_all(waits).await;
        for (server, node) in &current.nodes {
            if !nodes.contains_key(server) {
                node.close();
            }
        }
        tracing::debug!(masters = nodes.len(), from = %host, "cluster slot map read");
        *self.topology.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Topology {
            routing: Some(routing),
            nodes,
        });
        Ok(())
    }

    /// `CLUSTER SLOTS` from the first master that answers, else from the URL's nodes.
    async fn cluster_slots(&self) -> Result<(ClusterRouting, String)> {
        let bound = self.command_timeout.max(Duration::from_millis(100));
        let mut last_error = None;
        for (server, node) in self.masters() {
            let reply =
                tokio::time::timeout(bound, node.run(|client| client.cluster_slots::<Value>()))
                    .await
                    .unwrap_or_else(|_| Err(CacheError::Timeout(bound)));
            match reply.and_then(|slots| routing(slots, &server.host)) {
                Ok(routing) => return Ok((routing, server.host.to_string())),
                Err(error) => last_error = Some(error),
            }
        }
        for seed in &self.seeds {
            let mut config = self.base.clone();
            config.server = ServerConfig::Centralized {
                server: seed.clone(),
            };
            config.fail_fast = true;
            let reply = async {
                let client = Builder::from_config(config)
                    .with_connection_config(|c| c.connection_timeout = self.connect_timeout)
                    .with_performance_config(|p| p.default_command_timeout = bound)
                    .build()
                    .map_err(|e| CacheError::Config(format!("REDIS_URL: {}", e.details())))?;
                let init = client.init().await;
                let slots = match init {
                    Ok(_) => client
                        .cluster_slots::<Value>()
                        .await
                        .map_err(|e| CacheError::Backend(e.to_string())),
                    Err(e) => Err(CacheError::Backend(e.to_string())),
                };
                let _ = client.quit().await;
                slots
            }
            .await;
            match reply.and_then(|slots| routing(slots, &seed.host)) {
                Ok(routing) => return Ok((routing, seed.host.to_string())),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            CacheError::Backend("no cluster node to ask for the slot map".into())
        }))
    }

    /// Every master's address, `run_id` and replication id, each asked directly, so a
    /// restart, a restore or a failover of any one master changes it, and a
    /// reconnection to the same masters does not. A master that does not answer counts
    /// with the identity it had when it last did (its slots fail meanwhile); one never
    /// seen is an error.
    pub(super) async fn identity(&self) -> Result<String> {
        self.refresh().await?;
        let bound = self.command_timeout.max(Duration::from_millis(100)) * 4;
        let mut parts = Vec::new();
        for (server, node) in self.masters() {
            let address = format!("{}:{}", server.host, server.port);
            let info = tokio::time::timeout(bound, node.master_info())
                .await
                .unwrap_or_else(|_| Err(CacheError::Timeout(bound)));
            let mut identities = self.identities.lock().unwrap_or_else(|e| e.into_inner());
            let part = match info {
                Ok(info) => {
                    let part = format!(
                        "{address}={}/{}",
                        info_field(&info, "run_id").unwrap_or_default(),
                        info_field(&info, "master_replid").unwrap_or_default()
                    );
                    identities.insert(address, part.clone());
                    part
                }
                Err(error) => identities.get(&address).cloned().ok_or_else(|| {
                    CacheError::Backend(format!("master {address} has not answered yet: {error}"))
                })?,
            };
            parts.push(part);
        }
        if parts.is_empty() {
            return Err(CacheError::Backend(
                "the cluster's masters are not known yet".into(),
            ));
        }
        Ok(parts.join(","))
    }

    /// Pings every master; for each slot, whether its master answered.
    pub(super) async fn ping_slots(&self) -> Vec<bool> {
        let topology = self.topology();
        let mut answered = vec![false; SLOTS];
        let Some(routing) = &topology.routing else {
            return answered;
        };
        let pings = topology.nodes.iter().map(|(server, node)| async move {
            let ok = node.run(|client| client.ping::<String>(None)).await.is_ok();
            (server, ok)
        });
        let up: Vec<&Server> = futures::future::join_all(pings)
            .await
            .into_iter()
            .filter_map(|(server, ok)| ok.then_some(server))
            .collect();
        for range in routing.slots() {
            if up.contains(&&range.primary) {
                for slot in range.start..=range.end {
                    answered[slot as usize] = true;
                }
            }
        }
        answered
    }
}

fn routing(slots: Value, host: &str) -> Result<ClusterRouting> {
    ClusterRouting::from_cluster_slots(slots, host)
        .map_err(|e| CacheError::Protocol(format!("CLUSTER SLOTS: {e}")))
}
