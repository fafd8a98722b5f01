//! The storage capability behind [`CacheService`](crate::CacheService): a trait, and its
//! Redis and in-process implementations.
//!
//! Every method is one atomic step on the backend (one Lua script on Redis, one lock
//! on the memory store), which is what makes leases and fences sound: the read that
//! finds a miss and the lease it takes cannot be separated by an invalidation, and
//! neither can the lease check and the store of a fill.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;
use crate::key::{CacheKey, Invalidation, MemberKey};

mod memory;
mod near;
mod redis;

pub use memory::MemoryBackend;
pub use near::{NearCache, NearCacheStats};
pub use redis::RedisBackend;
pub(crate) use redis::tracking_client;

/// Identifies one lease. Random, so a reader cannot store under another's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseToken(pub u64);

impl LeaseToken {
    /// A fresh random token.
    pub fn random() -> Self {
        Self(rand::random())
    }
}

/// One reader's lease on one key: what [`CacheBackend::get_or_lease`] asks for and
/// [`CacheBackend::fill`] redeems. The same pair in both calls, so a fill can only be
/// made under the lease its reader took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease<'a> {
    /// The entry the lease guards.
    pub key: &'a CacheKey,
    /// The holder's token.
    pub token: LeaseToken,
}

impl<'a> Lease<'a> {
    /// The lease on `key` held (or asked for) with `token`.
    pub fn new(key: &'a CacheKey, token: LeaseToken) -> Self {
        Self { key, token }
    }
}

/// Everything one committed write made stale: the generation keys of the groups (and
/// scopes) it moves, and the item invalidations it owes. One value, so a backend applies
/// both parts in the documented order (groups first, then items).
#[derive(Debug, Clone, Copy)]
pub struct WriteInvalidation<'a> {
    /// The item invalidations, applied after every group moved.
    pub items: &'a [Invalidation],
    /// The generation keys of the groups to move to a new generation.
    pub generation_keys: &'a [String],
}

/// What a reader that missed finds when it asks for a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Someone filled the entry in the meantime.
    Hit(Bytes),
    /// The caller now holds the lease: it may load and fill.
    Leased,
    /// Another reader holds the lease and is loading.
    Busy,
}

/// Result of a fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillOutcome {
    /// The value was stored.
    Stored,
    /// The lease was voided by an invalidation (or expired): the value may predate a
    /// write, so it was not stored.
    LeaseLost,
    /// A versioned invalidation fenced a newer version than the value's.
    Fenced,
}

/// Storage for cache entries, leases, fences and group generations.
///
/// Implementations must pass the conformance suite in the workspace's `tests/` crate.
#[async_trait]
pub trait CacheBackend: Send + Sync + fmt::Debug + 'static {
    /// The entry's bytes, if present. The hit path: one round trip, no lease.
    async fn get(&self, key: &CacheKey) -> Result<Option<Bytes>>;

    /// Atomically: return the entry at `lease.key` if present; otherwise take `lease` for
    /// `lease_ttl` if nobody holds one ([`Lookup::Leased`]), or report [`Lookup::Busy`].
    async fn get_or_lease(&self, lease: Lease<'_>, lease_ttl: Duration) -> Result<Lookup>;

    /// Atomically: store `entry` (in [`codec`](crate::codec) format) at `lease.key` for
    /// `ttl` if `lease` is still held and the entry's version is not below the key's
    /// fence; the lease is released either way.
    async fn fill(&self, lease: Lease<'_>, entry: &[u8], ttl: Duration) -> Result<FillOutcome>;

    /// Atomically apply one invalidation (see [`Invalidation`]); fences live `fence_ttl`.
    async fn invalidate(&self, invalidation: &Invalidation, fence_ttl: Duration) -> Result<()>;

    /// Everything one committed write made stale: moves each group (by its generation
    /// key) to a new generation, then applies each item invalidation; a failure stops
    /// it before the items. Backends that can, do it in one round trip.
    async fn invalidate_write(
        &self,
        write: WriteInvalidation<'_>,
        fence_ttl: Duration,
    ) -> Result<()> {
        invalidate_write_in_steps(self, write, fence_ttl).await
    }

    /// The version fenced on `key` by the latest versioned invalidation, if the fence is
    /// still alive.
    async fn fence(&self, key: &CacheKey) -> Result<Option<u64>>;

    /// The group's current generation. A missing counter is created from the clock, so a
    /// lost counter never restarts at a number that was already used.
    async fn generation(&self, key: &str) -> Result<u64>;

    /// A group member's entry: the group's current generation (created like
    /// [`generation`](Self::generation) does if missing) and the entry stored at
    /// `member.at(generation)`. Backends that can, do it in one round trip.
    async fn get_member(
        &self,
        generation_key: &str,
        member: &MemberKey,
    ) -> Result<(u64, Option<Bytes>)> {
        let generation = self.generation(generation_key).await?;
        Ok((generation, self.get(&member.at(generation)).await?))
    }

    /// Moves the group to a new generation (never a used one) and returns it.
    async fn bump_generation(&self, key: &str) -> Result<u64>;

    /// Checks that the backend answers.
    async fn ping(&self) -> Result<()>;

    /// The identity of the server holding the data (Redis: its `run_id`, which changes
    /// on every restart and failover), or `None` for a store that cannot be replaced
    /// behind the process's back (memory).
    async fn identity(&self) -> Result<Option<String>>;

    /// How many times the connection to the backend was re-established since it was
    /// created. A new connection may lead to another server (restarted from an old
    /// snapshot, or a promoted replica), whose entries are not trusted until checked.
    fn reconnects(&self) -> u64 {
        0
    }

    /// [`reconnects`](Self::reconnects) after looking at every connection, not only the
    /// ones that carried a reply since: for the identity check.
    fn refresh_reconnects(&self) -> u64 {
        self.reconnects()
    }

    /// Completes after a connection was re-established (at once if one was since the
    /// last call), so its server can be checked without waiting for a timer. Never
    /// completes for a store that does not reconnect.
    async fn reconnected(&self) {
        std::future::pending::<()>().await
    }

    /// How many shards the store has: each fails, and is taken off the cache, on its own
    /// (a Redis Cluster's hash slots; one elsewhere).
    fn shard_count(&self) -> usize {
        1
    }

    /// The shard that holds `key`, below [`shard_count`](Self::shard_count).
    fn shard_of(&self, _key: &str) -> usize {
        0
    }

    /// Pings every part of the store; for each shard, whether the part holding it
    /// answered (one entry per shard).
    async fn ping_shards(&self) -> Vec<bool> {
        vec![self.ping().await.is_ok(); self.shard_count()]
    }

    /// The cache moved to a new epoch: a copy of entries kept in this process (a near
    /// cache) is dropped.
    fn forget_local(&self) {}

    /// Whether the store lives in this process (and so cannot see another process's
    /// invalidations).
    fn is_in_process(&self) -> bool {
        false
    }

    /// The server's eviction policy (Redis `maxmemory-policy`), where there is one.
    async fn eviction_policy(&self) -> Result<Option<String>> {
        Ok(None)
    }
}

/// [`CacheBackend::invalidate_write`] as separate steps: the groups one by one, then the
/// items concurrently.
pub(crate) async fn invalidate_write_in_steps<B: CacheBackend + ?Sized>(
    backend: &B,
    write: WriteInvalidation<'_>,
    fence_ttl: Duration,
) -> Result<()> {
    for key in write.generation_keys {
        backend.bump_generation(key).await?;
    }
    for result in futures::future::join_all(
        write
            .items
            .iter()
            .map(|invalidation| backend.invalidate(invalidation, fence_ttl)),
    )
    .await
    {
        result?;
    }
    Ok(())
}

/// Microseconds since the Unix epoch: the seed of a new generation counter.
pub(crate) fn clock_generation() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(1)
}

/// Milliseconds as Redis wants them (at least 1, so a tiny TTL never means "forever").
pub(crate) fn millis(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}
