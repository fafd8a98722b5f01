//! Redis backend over `fred` pools.
//!
//! Each atomic step on one entry is one Lua script over keys that share a hash tag (see
//! [`key`](crate::key)), so the same code runs on a Redis Cluster. Two steps span
//! entries, to save a round trip: a write's invalidation (groups and items) and a group
//! member's read (generation and entry); on a standalone Redis each is one script, on a
//! cluster they run as separate steps in the same order. Clients reconnect with
//! exponential backoff, every command has a timeout, and reads fail fast while
//! disconnected: a dead or frozen Redis costs a request at most one timeout.
//!
//! A standalone Redis (or one behind Sentinel) is one pool. A `redis-cluster://` URL
//! gets a pool per master, routed here by hash slot (see [`cluster`]), so that a master
//! that is down takes only its own slots off the cache.

mod cluster;
mod connect;
mod node;
mod scripts;

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fred::prelude::*;
use fred::types::InfoKind;
use fred::types::cluster::ClusterRouting;
use tokio::sync::Notify;

use cluster::{Cluster, SLOTS};
pub(crate) use connect::tracking_client;
use node::{Node, info_field, run_id};
use scripts::Scripts;

use super::{
    CacheBackend, FillOutcome, Lease, Lookup, WriteInvalidation, clock_generation,
    invalidate_write_in_steps, millis,
};
use crate::error::{CacheError, Result};
use crate::key::{CacheKey, Invalidation, MemberKey};

/// Redis through `fred` pools. Cloning is shallow.
#[derive(Clone)]
pub struct RedisBackend {
    servers: Servers,
    scripts: Arc<Scripts>,
    /// New connections so far, over every pool.
    seen: Arc<AtomicU64>,
    /// Woken on every reconnection (and on the first connection, when it came late, or of
    /// a cluster master that joined later).
    signal: Arc<Notify>,
}

#[derive(Clone)]
enum Servers {
    /// One pool: a standalone Redis, a master behind Sentinel, or an application's own
    /// pool (a cluster pool too, routed by fred).
    One(Arc<Node>),
    /// A pool per cluster master.
    Cluster(Arc<Cluster>),
}

/// The node a command goes to: borrowed from a single-pool backend, shared from the
/// cluster's current slot map.
enum NodeRef<'a> {
    Borrowed(&'a Node),
    Shared(Arc<Node>),
}

impl Deref for NodeRef<'_> {
    type Target = Node;

    fn deref(&self) -> &Node {
        match self {
            NodeRef::Borrowed(node) => node,
            NodeRef::Shared(node) => node,
        }
    }
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("RedisBackend");
        match &self.servers {
            Servers::One(node) => debug.field("pool_size", &node.pool().size()),
            Servers::Cluster(_) => debug.field("cluster", &true),
        };
        debug.finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// Whether this is a Redis Cluster (a pool per master, or an application's cluster
    /// pool).
    pub(crate) fn is_cluster(&self) -> bool {
        !self.spans_slots()
    }

    /// The node that holds `key`.
    fn node(&self, key: &str) -> Result<NodeRef<'_>> {
        match &self.servers {
            Servers::One(node) => Ok(NodeRef::Borrowed(node)),
            Servers::Cluster(cluster) => cluster.node_for(key).map(NodeRef::Shared),
        }
    }

    /// Some node, for commands about the server rather than a key.
    fn any_node(&self) -> Result<NodeRef<'_>> {
        match &self.servers {
            Servers::One(node) => Ok(NodeRef::Borrowed(node)),
            Servers::Cluster(cluster) => cluster.any_node().map(NodeRef::Shared),
        }
    }

    /// Whether a script may touch keys of different slots (one server holds them all).
    fn spans_slots(&self) -> bool {
        matches!(&self.servers, Servers::One(node) if !node.pool().is_clustered())
    }

    /// Runs `script` on the node of its first key.
    async fn eval<R: FromValue>(
        &self,
        script: &fred::types::scripts::Script,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<R> {
        let node = self.node(keys.first().map_or("", String::as_str))?;
        node.eval(script, keys, args).await
    }

    /// Runs a script that answers with the group generation at `key` (created from the
    /// clock if missing), and parses it.
    async fn eval_generation(
        &self,
        script: &fred::types::scripts::Script,
        key: &str,
    ) -> Result<u64> {
        let reply: String = self
            .eval(
                script,
                vec![key.to_owned()],
                vec![Value::from(clock_generation().to_string())],
            )
            .await?;
        reply
            .parse()
            .map_err(|_| CacheError::Protocol(format!("generation {reply:?}")))
    }
}

/// The script argument of an invalidation's version ('' for an unconditional one).
fn version_arg(invalidation: &Invalidation) -> String {
    invalidation
        .version
        .map(|v| v.to_string())
        .unwrap_or_default()
}

fn unexpected(what: &str, value: &Value) -> CacheError {
    CacheError::Protocol(format!("{what}: {value:?}"))
}

#[async_trait]
impl CacheBackend for RedisBackend {
    /// The `fred` command future is about 7 KB; the box `async_trait` puts it in keeps
    /// the futures of everything that awaits a read small (a server moves its request
    /// future into a new box at each layer of its router and middleware, and would
    /// copy those 7 KB a dozen times per request).
    async fn get(&self, key: &CacheKey) -> Result<Option<Bytes>> {
        self.node(key.as_str())?.get(key.as_str()).await
    }

    async fn get_or_lease(&self, lease: Lease<'_>, lease_ttl: Duration) -> Result<Lookup> {
        let Lease { key, token } = lease;
        let reply: Value = self
            .eval(
                &self.scripts.get_or_lease,
                vec![key.as_str().to_owned(), key.lease_key()],
                vec![
                    Value::from(token.0.to_string()),
                    Value::from(millis(lease_ttl) as i64),
                ],
            )
            .await?;
        let Value::Array(mut items) = reply else {
            return Err(unexpected("get_or_lease", &reply));
        };
        match items.first().and_then(Value::as_i64) {
            Some(0) => Ok(Lookup::Leased),
            Some(2) => Ok(Lookup::Busy),
            Some(1) if items.len() == 2 => match items.pop() {
                Some(value) => value
                    .into_bytes()
                    .map(Lookup::Hit)
                    .ok_or_else(|| CacheError::Protocol("get_or_lease: value is not bytes".into())),
                None => Err(CacheError::Protocol("get_or_lease: missing value".into())),
            },
            _ => Err(unexpected("get_or_lease", &Value::Array(items))),
        }
    }

    async fn fill(&self, lease: Lease<'_>, entry: &[u8], ttl: Duration) -> Result<FillOutcome> {
        let Lease { key, token } = lease;
        let reply: i64 = self
            .eval(
                &self.scripts.fill,
                vec![key.as_str().to_owned(), key.lease_key(), key.fence_key()],
                vec![
                    Value::from(token.0.to_string()),
                    Value::Bytes(Bytes::copy_from_slice(entry)),
                    Value::from(millis(ttl) as i64),
                ],
            )
            .await?;
        match reply {
            0 => Ok(FillOutcome::Stored),
            1 => Ok(FillOutcome::LeaseLost),
            2 => Ok(FillOutcome::Fenced),
            other => Err(unexpected("fill", &Value::Integer(other))),
        }
    }

    async fn invalidate(&self, invalidation: &Invalidation, fence_ttl: Duration) -> Result<()> {
        let key = &invalidation.key;
        let _: i64 = self
            .eval(
                &self.scripts.invalidate,
                vec![key.as_str().to_owned(), key.lease_key(), key.fence_key()],
                vec![
                    Value::from(version_arg(invalidation)),
                    Value::from(millis(fence_ttl) as i64),
                ],
            )
            .await?;
        Ok(())
    }

    /// One script, one round trip. On a cluster the keys live on different nodes, which
    /// one script cannot reach: there the steps run one after another.
    async fn invalidate_write(
        &self,
        write: WriteInvalidation<'_>,
        fence_ttl: Duration,
    ) -> Result<()> {
        if !self.spans_slots() {
            return invalidate_write_in_steps(self, write, fence_ttl).await;
        }
        let mut keys = write.generation_keys.to_vec();
        let mut args = vec![
            Value::from(write.generation_keys.len() as i64),
            Value::from(clock_generation().to_string()),
            Value::from(millis(fence_ttl) as i64),
        ];
        for invalidation in write.items {
            let key = &invalidation.key;
            keys.extend([key.as_str().to_owned(), key.lease_key(), key.fence_key()]);
            args.push(Value::from(version_arg(invalidation)));
        }
        let _: i64 = self
            .eval(&self.scripts.invalidate_write, keys, args)
            .await?;
        Ok(())
    }

    async fn fence(&self, key: &CacheKey) -> Result<Option<u64>> {
        let fence_key = key.fence_key();
        let fence = self
            .node(&fence_key)?
            .run(|client| client.get::<Option<String>, _>(fence_key.as_str()))
            .await?;
        fence
            .map(|f| {
                f.parse()
                    .map_err(|_| CacheError::Protocol(format!("fence {f:?}")))
            })
            .transpose()
    }

    async fn generation(&self, key: &str) -> Result<u64> {
        self.eval_generation(&self.scripts.generation, key).await
    }

    async fn get_member(
        &self,
        generation_key: &str,
        member: &MemberKey,
    ) -> Result<(u64, Option<Bytes>)> {
        if !self.spans_slots() {
            let generation = self.generation(generation_key).await?;
            return Ok((generation, self.get(&member.at(generation)).await?));
        }
        let reply: Value = self
            .eval(
                &self.scripts.get_member,
                vec![generation_key.to_owned()],
                vec![
                    Value::from(member.head()),
                    Value::from(member.tail()),
                    Value::from(clock_generation().to_string()),
                ],
            )
            .await?;
        let Value::Array(mut items) = reply else {
            return Err(unexpected("get_member", &reply));
        };
        let entry = match items.len() {
            1 => None,
            2 => items.pop().and_then(Value::into_bytes),
            _ => return Err(unexpected("get_member", &Value::Array(items))),
        };
        let generation = items
            .first()
            .and_then(|g| g.as_str().and_then(|g| g.parse().ok()))
            .ok_or_else(|| CacheError::Protocol(format!("get_member generation {items:?}")))?;
        Ok((generation, entry))
    }

    async fn bump_generation(&self, key: &str) -> Result<u64> {
        self.eval_generation(&self.scripts.bump_generation, key)
            .await
    }

    /// Standalone (or behind Sentinel): the master's `run_id`, as every pooled
    /// connection sees it. Cluster: every master's address, `run_id` and replication id
    /// (asked of each master directly).
    async fn identity(&self) -> Result<Option<String>> {
        match &self.servers {
            Servers::One(node) if node.pool().is_clustered() => {
                node.fred_cluster_identity().await.map(Some)
            }
            Servers::One(node) => {
                let info = node.master_info().await?;
                run_id(&info).map(Some)
            }
            Servers::Cluster(cluster) => cluster.identity().await.map(Some),
        }
    }

    fn reconnects(&self) -> u64 {
        self.seen.load(Ordering::Acquire)
    }

    fn refresh_reconnects(&self) -> u64 {
        match &self.servers {
            Servers::One(node) => node.poll_all(),
            Servers::Cluster(cluster) => cluster.poll_all(),
        }
        self.reconnects()
    }

    async fn reconnected(&self) {
        self.signal.notified().await;
    }

    fn shard_count(&self) -> usize {
        match &self.servers {
            Servers::One(_) => 1,
            Servers::Cluster(_) => SLOTS,
        }
    }

    fn shard_of(&self, key: &str) -> usize {
        match &self.servers {
            Servers::One(_) => 0,
            Servers::Cluster(_) => ClusterRouting::hash_key(key.as_bytes()) as usize,
        }
    }

    async fn ping_shards(&self) -> Vec<bool> {
        match &self.servers {
            Servers::One(_) => vec![self.ping().await.is_ok()],
            Servers::Cluster(cluster) => cluster.ping_slots().await,
        }
    }

    async fn eviction_policy(&self) -> Result<Option<String>> {
        let info = self
            .any_node()?
            .run(|client| client.info::<String>(Some(InfoKind::Memory)))
            .await?;
        Ok(info_field(&info, "maxmemory_policy").map(str::to_owned))
    }

    /// Every master answers.
    async fn ping(&self) -> Result<()> {
        match &self.servers {
            Servers::One(node) => {
                node.run(|client| client.ping::<String>(None)).await?;
                Ok(())
            }
            Servers::Cluster(cluster) => {
                if cluster.ping_slots().await.iter().all(|up| *up) {
                    Ok(())
                } else {
                    Err(CacheError::Backend(
                        "a cluster master does not answer".into(),
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::connect::redact;

    #[test]
    fn urls_lose_their_password_in_messages() {
        assert_eq!(
            redact("redis://user:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
    }
}
