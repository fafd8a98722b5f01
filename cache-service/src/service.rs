//! [`CacheService`]: typed cache-aside reads and invalidation.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures::future::join_all;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::{
    CacheBackend, FillOutcome, LeaseToken, Lookup, MemoryBackend, NearCache, RedisBackend,
};
use crate::breaker::{Breaker, Marks};
use crate::codec::{self, Entry};
use crate::config::{CacheConfig, RedisConfig};
use crate::error::{CacheError, Result};
use crate::flight::{self, Flights, Role};
use crate::key::{CacheKey, Group, Invalidation, MemberKey, Namespace, generation_key};

/// How many times a reader joins another's load before loading on its own.
const MAX_JOINS: usize = 3;

/// A value that can be cached.
pub trait Cacheable: Serialize + DeserializeOwned + Send + Sync {
    /// The version of the source row this value was loaded from; a fill is refused when
    /// a versioned invalidation fenced a newer one. Values derived from many rows (list
    /// pages) belong in a [`Group`] and return 0.
    fn version(&self) -> u64;
}

/// Cache-aside over a [`CacheBackend`]. Cloning is shallow: clones share the backend,
/// the configuration and the single-flight table.
#[derive(Clone)]
pub struct CacheService {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn CacheBackend>,
    config: CacheConfig,
    flights: Flights,
    breaker: Breaker,
    /// The cache epoch (see [`CacheService::set_epoch`]) and the key prefix it implies.
    epoch: AtomicU64,
    prefix: RwLock<Arc<str>>,
    /// The backend's reconnection count when the backend's identity (and so the epoch)
    /// was last verified; `u64::MAX` before the first verification. A reply that came
    /// over a later connection may come from another server: with the gate on, it is
    /// not served.
    verified_reconnects: AtomicU64,
}

impl fmt::Debug for CacheService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheService")
            .field("backend", &self.inner.backend)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl CacheService {
    /// A service over `backend`.
    pub fn new(backend: Arc<dyn CacheBackend>, config: CacheConfig) -> Result<Self> {
        config.validate()?;
        let shards = backend.shard_count();
        Ok(Self {
            inner: Arc::new(Inner {
                verified_reconnects: AtomicU64::new(u64::MAX),
                backend,
                breaker: Breaker::new(config.breaker_cooldown, shards),
                epoch: AtomicU64::new(0),
                prefix: RwLock::new(Arc::from(config.prefix.as_str())),
                config,
                flights: Flights::default(),
            }),
        })
    }

    /// A service over a fresh in-process store holding about `max_entries` values.
    pub fn in_memory(config: CacheConfig, max_entries: usize) -> Result<Self> {
        Self::new(Arc::new(MemoryBackend::new(max_entries)), config)
    }

    /// A service over Redis; fails if Redis cannot be reached now. With
    /// [`RedisConfig::near_cache`], reads go through a [`NearCache`].
    pub async fn connect_redis(redis: &RedisConfig, config: CacheConfig) -> Result<Self> {
        config.validate()?;
        let backend = RedisBackend::connect(redis).await?;
        Self::new(with_near_cache(backend, redis, &config)?, config)
    }

    /// A service over Redis that starts even if Redis cannot be reached now: reads go to
    /// the loader (and [`is_degraded`](Self::is_degraded) is true) until it can (see
    /// [`RedisBackend::connect_in_background`]). Fails only on a bad configuration.
    pub async fn connect_redis_in_background(
        redis: &RedisConfig,
        config: CacheConfig,
    ) -> Result<Self> {
        config.validate()?;
        let backend = RedisBackend::connect_in_background(redis).await?;
        Self::new(with_near_cache(backend, redis, &config)?, config)
    }

    /// The configuration in use.
    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// The backend, for health checks and tests.
    pub fn backend(&self) -> &Arc<dyn CacheBackend> {
        &self.inner.backend
    }

    /// The key of `id` in `namespace`.
    pub fn key(&self, namespace: Namespace, id: impl fmt::Display) -> CacheKey {
        CacheKey::new(&self.prefix(), namespace, &id)
    }

    /// The key of `member` of `group`, for any of the group's generations.
    pub fn member_key(&self, group: Group, member: impl fmt::Display) -> MemberKey {
        MemberKey::new(&self.prefix(), group, &member)
    }

    /// Checks that the backend answers.
    pub async fn ping(&self) -> Result<()> {
        self.inner.backend.ping().await
    }

    /// Returns the cached value of `key`, or runs `loader` on a miss and caches what it
    /// returns (`None`, "no such row", is cached briefly too).
    ///
    /// Never fails because of the cache: a backend error is counted and logged and the
    /// loader's value is returned. Errors are the loader's own.
    pub async fn get_or_load<T, E, F, Fut>(&self, key: &CacheKey, loader: F) -> Result<Option<T>, E>
    where
        T: Cacheable,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        self.read::<T, E, Decoded, _, _>(key, loader).await
    }

    /// Like [`get_or_load`](Self::get_or_load), but hands back the value's JSON as it is
    /// stored, for a server that sends it on as a response body: a hit decodes nothing
    /// and copies nothing (the bytes are a slice of the backend's reply). On a miss the
    /// loaded value is serialized once, for the cache and for the caller.
    ///
    /// The JSON is what `T`'s `Serialize` wrote when the entry was filled. A release
    /// that changes that shape must also change the key prefix (or the epoch): entries
    /// are not decoded on a hit, so nothing else would notice the old shape before they
    /// expire.
    pub async fn get_or_load_json<T, E, F, Fut>(
        &self,
        key: &CacheKey,
        loader: F,
    ) -> Result<Option<CachedJson>, E>
    where
        T: Cacheable,
        E: From<CacheError>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        self.read::<T, E, AsJson, _, _>(key, loader).await
    }

    /// Like [`get_or_load`](Self::get_or_load) for a member of `group`: the group's
    /// generation is read first and is part of the key, so a value loaded before the
    /// group was invalidated is never served after it.
    pub async fn get_or_load_in<T, E, F, Fut>(
        &self,
        group: Group,
        member: impl fmt::Display,
        loader: F,
    ) -> Result<Option<T>, E>
    where
        T: Cacheable,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        self.read_in::<T, E, Decoded, _, _>(group, member, loader)
            .await
    }

    /// [`get_or_load_json`](Self::get_or_load_json) for a member of `group` (see
    /// [`get_or_load_in`](Self::get_or_load_in)).
    pub async fn get_or_load_json_in<T, E, F, Fut>(
        &self,
        group: Group,
        member: impl fmt::Display,
        loader: F,
    ) -> Result<Option<CachedJson>, E>
    where
        T: Cacheable,
        E: From<CacheError>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        self.read_in::<T, E, AsJson, _, _>(group, member, loader)
            .await
    }

    async fn read<T, E, Fm, F, Fut>(
        &self,
        key: &CacheKey,
        loader: F,
    ) -> Result<Option<Fm::Output>, E>
    where
        T: Cacheable,
        Fm: Form<T, E>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        let namespace = key.namespace().name();
        if !self.inner.breaker.allows_reads(self.shard_of(key.as_str())) {
            return bypass::<T, E, Fm, _, _>(namespace, loader).await;
        }
        let read = self.inner.backend.get(key).await;
        if !self.connection_checked() {
            return bypass::<T, E, Fm, _, _>(namespace, loader).await;
        }
        self.serve::<T, E, Fm, _, _>(key, read, loader).await
    }

    /// What follows a read of `key`'s entry: a hit, or the miss path.
    async fn serve<T, E, Fm, F, Fut>(
        &self,
        key: &CacheKey,
        read: Result<Option<Bytes>>,
        loader: F,
    ) -> Result<Option<Fm::Output>, E>
    where
        T: Cacheable,
        Fm: Form<T, E>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        let namespace = key.namespace().name();
        match read {
            Ok(Some(bytes)) => match Fm::from_entry(bytes) {
                Some(value) => {
                    count_request(namespace, "hit");
                    return Ok(value);
                }
                None => {
                    count_request(namespace, "miss");
                    // Written by another release or schema: replace it.
                    let _ = self
                        .inner
                        .backend
                        .invalidate(
                            &Invalidation::remove(key.clone()),
                            self.inner.config.fence_ttl,
                        )
                        .await;
                }
            },
            Ok(None) => count_request(namespace, "miss"),
            Err(error) => {
                self.trip(key.as_str());
                tracing::warn!(%key, %error, "cache read failed; loading from the source");
                return bypass::<T, E, Fm, _, _>(namespace, loader).await;
            }
        }
        // Boxed, as is the loader in `bypass`: the miss path holds the loader's future
        // (a database query), which can be large, and every read's future would carry
        // its size, hits included.
        Box::pin(self.load_once::<T, E, Fm, _, _>(key, loader)).await
    }

    async fn read_in<T, E, Fm, F, Fut>(
        &self,
        group: Group,
        member: impl fmt::Display,
        loader: F,
    ) -> Result<Option<Fm::Output>, E>
    where
        T: Cacheable,
        Fm: Form<T, E>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        let namespace = group.namespace().name();
        let prefix = self.prefix();
        // Members are invalidated only by moving the generation: they are as fresh as
        // the generation's shard.
        let generation_key = generation_key(&prefix, group);
        if !self
            .inner
            .breaker
            .allows_reads(self.shard_of(&generation_key))
        {
            return bypass::<T, E, Fm, _, _>(namespace, loader).await;
        }
        let member = MemberKey::new(&prefix, group, &member);
        let read = self
            .inner
            .backend
            .get_member(&generation_key, &member)
            .await;
        if !self.connection_checked() {
            return bypass::<T, E, Fm, _, _>(namespace, loader).await;
        }
        match read {
            Ok((generation, entry)) => {
                let key = member.at(generation);
                self.serve::<T, E, Fm, _, _>(&key, Ok(entry), loader).await
            }
            Err(error) => {
                self.trip(&generation_key);
                tracing::warn!(group = namespace, %error, "cache read of a group member failed; loading from the source");
                bypass::<T, E, Fm, _, _>(namespace, loader).await
            }
        }
    }

    /// Applies `invalidations` (concurrently). Call it after the write's transaction
    /// committed. Every invalidation is attempted; the first error is returned so the
    /// caller can retry or record what it still owes.
    pub async fn invalidate(&self, invalidations: &[Invalidation]) -> Result<()> {
        let fence_ttl = self.inner.config.fence_ttl;
        let results = join_all(
            invalidations
                .iter()
                .map(|inv| self.inner.backend.invalidate(inv, fence_ttl)),
        )
        .await;
        let mut first_error = None;
        for (inv, result) in invalidations.iter().zip(results) {
            // Retired whatever the outcome: a load that began before the write must not
            // be joined by readers that start after it.
            self.inner.flights.retire(inv.key.as_str());
            let namespace = inv.key.namespace().name();
            match result {
                Ok(()) => metrics::counter!("cache_invalidations_total", "namespace" => namespace)
                    .increment(1),
                Err(error) => {
                    self.trip(inv.key.as_str());
                    metrics::counter!("cache_invalidation_errors_total", "namespace" => namespace)
                        .increment(1);
                    tracing::warn!(key = %inv.key, %error, "cache invalidation failed");
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Invalidates every member of `group` in O(1) by moving it to a new generation.
    pub async fn invalidate_group(&self, group: Group) -> Result<()> {
        let namespace = group.namespace().name();
        let key = generation_key(&self.prefix(), group);
        match self.inner.backend.bump_generation(&key).await {
            Ok(_) => {
                metrics::counter!("cache_invalidations_total", "namespace" => namespace)
                    .increment(1);
                Ok(())
            }
            Err(error) => {
                self.trip(&key);
                metrics::counter!("cache_invalidation_errors_total", "namespace" => namespace)
                    .increment(1);
                tracing::warn!(group = namespace, %error, "cache group invalidation failed");
                Err(error)
            }
        }
    }

    /// Invalidates what one committed write made stale: first the `groups`, then the
    /// `items`, in one round trip where the backend can (one script on a standalone
    /// Redis). The order matters to [`replay_write`](Self::replay_write): an item's fence
    /// is only ever set after its groups moved on.
    pub async fn invalidate_write(&self, items: &[Invalidation], groups: &[Group]) -> Result<()> {
        let prefix = self.prefix();
        let generation_keys: Vec<String> = groups
            .iter()
            .map(|group| generation_key(&prefix, *group))
            .collect();
        let result = self
            .inner
            .backend
            .invalidate_write(items, &generation_keys, self.inner.config.fence_ttl)
            .await;
        for inv in items {
            // As in `invalidate`: retired whatever the outcome.
            self.inner.flights.retire(inv.key.as_str());
        }
        let namespaces = groups
            .iter()
            .map(|group| group.namespace().name())
            .chain(items.iter().map(|inv| inv.key.namespace().name()));
        match &result {
            Ok(()) => {
                for namespace in namespaces {
                    metrics::counter!("cache_invalidations_total", "namespace" => namespace)
                        .increment(1);
                }
            }
            Err(error) => {
                // Which step failed is not known: every shard the write touches waits
                // for the replay.
                for key in items.iter().map(|inv| inv.key.as_str()) {
                    self.trip(key);
                }
                for key in &generation_keys {
                    self.trip(key);
                }
                for namespace in namespaces {
                    metrics::counter!("cache_invalidation_errors_total", "namespace" => namespace)
                        .increment(1);
                }
                tracing::warn!(%error, "cache invalidation of a write failed");
            }
        }
        result
    }

    /// Applies invalidations owed by writes that may already have been invalidated inline
    /// (an outbox relay's replay). Idempotent, and cheap when they were: an item whose
    /// fence is already at or above its version was applied (the fence was set by the
    /// same script that removed every older value, and refuses older fills since), so
    /// it is skipped; the groups only move on if some item was not applied yet, so a
    /// replay costs no extra loads. Unversioned items always count as not applied.
    pub async fn replay_write(&self, items: &[Invalidation], groups: &[Group]) -> Result<()> {
        let fences = join_all(items.iter().map(|inv| self.inner.backend.fence(&inv.key))).await;
        let mut pending = Vec::new();
        for (inv, fence) in items.iter().zip(fences) {
            let fence = fence.inspect_err(|_| self.trip(inv.key.as_str()))?;
            let applied =
                matches!((inv.version, fence), (Some(version), Some(fence)) if fence >= version);
            if !applied {
                pending.push(inv.clone());
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        self.invalidate_write(&pending, groups).await
    }

    /// Whether reads currently skip the cache, for some keys or all (after a backend
    /// error, or while owed invalidations wait to be replayed, or until a new connection
    /// was checked).
    pub fn is_degraded(&self) -> bool {
        !self.inner.breaker.allows_all_reads() || !self.connection_checked()
    }

    /// Whether reads of `key` currently skip the cache. On a Redis Cluster a failing
    /// master takes only its own hash slots off the cache: the other masters' keys are
    /// still served.
    pub fn is_degraded_for(&self, key: &CacheKey) -> bool {
        !self.inner.breaker.allows_reads(self.shard_of(key.as_str())) || !self.connection_checked()
    }

    /// The current cache epoch (see [`Coherence`](crate::Coherence)): keys are spelled
    /// `{prefix}:e{epoch}:…` (plain `{prefix}:…` for epoch 0).
    pub fn epoch(&self) -> u64 {
        self.inner.epoch.load(Ordering::Acquire)
    }

    /// With `true`, reads stay off the cache after a backend error until a replay of the
    /// owed invalidations resumes them, and a reply that came over a connection opened
    /// after the last identity check is not served.
    pub(crate) fn hold_reads_after_outage(&self, on: bool) {
        self.inner.breaker.set_gate(on);
    }

    /// Whether an outage happened whose owed invalidations have not been replayed yet.
    pub(crate) fn needs_resync(&self) -> bool {
        self.inner.breaker.resync_needed()
    }

    /// Take before replaying owed invalidations; pass to [`resume`](Self::resume) after.
    pub(crate) fn outage_mark(&self) -> Marks {
        self.inner.breaker.mark()
    }

    /// Everything owed up to `marks` has been applied, except what touches a shard for
    /// which `held` says true: unless the backend failed again since, reads of the other
    /// shards may use the cache again, at once (no cool-down left).
    pub(crate) fn resume(&self, marks: &Marks, held: impl Fn(usize) -> bool) {
        self.inner.breaker.resume(marks, held);
    }

    /// Whether an outage of a shard that `items` or `groups` live on has owed
    /// invalidations not replayed yet.
    pub(crate) fn needs_resync_for(&self, items: &[Invalidation], groups: &[Group]) -> bool {
        self.inner.breaker.resync_needed()
            && self
                .shards_of(items, groups)
                .into_iter()
                .any(|shard| self.inner.breaker.shard_needs_resync(shard))
    }

    /// The shards that `items` and `groups`' generation counters live on.
    pub(crate) fn shards_of(&self, items: &[Invalidation], groups: &[Group]) -> BTreeSet<usize> {
        let prefix = self.prefix();
        items
            .iter()
            .map(|inv| self.shard_of(inv.key.as_str()))
            .chain(
                groups
                    .iter()
                    .map(|group| self.shard_of(&generation_key(&prefix, *group))),
            )
            .collect()
    }

    /// The backend's shard holding `key` (see [`CacheBackend::shard_of`]).
    pub(crate) fn shard_of(&self, key: &str) -> usize {
        self.inner.backend.shard_of(key)
    }

    fn trip(&self, key: &str) {
        self.inner.breaker.trip(self.shard_of(key));
    }

    /// Moves to cache epoch `epoch`, so entries written before can never be read.
    pub(crate) fn set_epoch(&self, epoch: u64) {
        let prefix: Arc<str> = match epoch {
            0 => Arc::from(self.inner.config.prefix.as_str()),
            n => Arc::from(format!("{}:e{n}", self.inner.config.prefix)),
        };
        *self.inner.prefix.write().unwrap_or_else(|e| e.into_inner()) = prefix;
        self.inner.epoch.store(epoch, Ordering::Release);
        self.inner.backend.forget_local();
    }

    /// Holds reads (with the gate on) until the next [`resume`](Self::resume): for a
    /// start-up, before the backend's identity was checked.
    pub(crate) fn hold_reads_until_resync(&self) {
        self.inner.breaker.suspect();
    }

    /// Records that the backend's identity was checked while its reconnection count was
    /// `reconnects`.
    pub(crate) fn set_verified(&self, reconnects: u64) {
        self.inner
            .verified_reconnects
            .store(reconnects, Ordering::Release);
    }

    /// Whether the identity was checked since the last reconnection.
    pub(crate) fn is_verified(&self) -> bool {
        self.inner.backend.reconnects() == self.inner.verified_reconnects.load(Ordering::Acquire)
    }

    fn prefix(&self) -> Arc<str> {
        self.inner
            .prefix
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether a reply that just came back may be served: with the gate on, only if it
    /// came over a connection whose server was checked (the breaker was asked before the
    /// read). Every reader looks for itself, with plain loads of shared counters (the hit
    /// path writes no shared cache line), so no reader serves a reply of an unchecked
    /// connection.
    fn connection_checked(&self) -> bool {
        !self.inner.breaker.gate_on() || self.is_verified()
    }

    /// The miss path: share one load per key in this process.
    async fn load_once<T, E, Fm, F, Fut>(
        &self,
        key: &CacheKey,
        loader: F,
    ) -> Result<Option<Fm::Output>, E>
    where
        T: Cacheable,
        Fm: Form<T, E>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        for _ in 0..MAX_JOINS {
            match self.inner.flights.join(key.as_str()) {
                Role::Leader(leader) => {
                    let (result, shared) = self.lead::<T, E, Fm, _, _>(key, loader).await;
                    leader.finish(shared);
                    return result;
                }
                Role::Follower(rx) => {
                    if let Some(value) = flight::follow(rx).await.and_then(Fm::from_entry) {
                        return Ok(value);
                    }
                }
            }
        }
        self.lead::<T, E, Fm, _, _>(key, loader).await.0
    }

    /// Takes the lease (or waits for another's fill), loads, fills. Returns the value and
    /// what followers may use.
    async fn lead<T, E, Fm, F, Fut>(
        &self,
        key: &CacheKey,
        loader: F,
    ) -> (Result<Option<Fm::Output>, E>, flight::Shared)
    where
        T: Cacheable,
        Fm: Form<T, E>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        let config = &self.inner.config;
        let backend = &self.inner.backend;
        let namespace = key.namespace().name();
        let token = LeaseToken::random();
        let mut waited = Duration::ZERO;
        let mut pause = Duration::from_millis(5);
        let leased = loop {
            let lookup = backend.get_or_lease(key, token, config.lease_ttl).await;
            if !self.connection_checked() {
                break false;
            }
            match lookup {
                Ok(Lookup::Hit(bytes)) => {
                    if let Some(value) = Fm::from_entry(bytes) {
                        return (Ok(value), None);
                    }
                    break false;
                }
                Ok(Lookup::Leased) => break true,
                Ok(Lookup::Busy) if waited < config.lease_wait => {
                    metrics::counter!("cache_lease_waits_total", "namespace" => namespace)
                        .increment(1);
                    tokio::time::sleep(pause).await;
                    waited += pause;
                    pause = (pause * 2).min(
                        config
                            .lease_wait
                            .saturating_sub(waited)
                            .max(Duration::from_millis(1)),
                    );
                }
                Ok(Lookup::Busy) => break false,
                // The request was counted (a miss) before the lease: counted once.
                Err(error) => {
                    self.trip(key.as_str());
                    tracing::warn!(%key, %error, "cache lease failed; loading without caching");
                    break false;
                }
            }
        };
        count_load(namespace);
        let value = match loader().await {
            Ok(value) => value,
            Err(error) => return (Err(error), None),
        };
        if !leased {
            return (Fm::from_loaded(value, None), None);
        }
        let (entry, ttl) = match &value {
            Some(v) => match codec::encode(v.version(), v) {
                Ok(entry) => (Bytes::from(entry), jittered(config.ttl, config.ttl_jitter)),
                Err(error) => {
                    tracing::error!(%key, %error, "value cannot be serialized; not cached");
                    return (Fm::from_loaded(value, None), None);
                }
            },
            None => (
                Bytes::from(codec::encode_absent()),
                jittered(config.negative_ttl, config.ttl_jitter),
            ),
        };
        let shared = match backend.fill(key, token, &entry, ttl).await {
            Ok(FillOutcome::Stored) => Some(entry.clone()),
            Ok(refused) => {
                let reason = if refused == FillOutcome::Fenced {
                    "fence"
                } else {
                    "lease"
                };
                metrics::counter!("cache_fills_refused_total", "namespace" => namespace, "reason" => reason).increment(1);
                tracing::debug!(%key, reason, "fill refused: the value may predate a write");
                None
            }
            Err(error) => {
                self.trip(key.as_str());
                tracing::warn!(%key, %error, "cache fill failed");
                None
            }
        };
        (Fm::from_loaded(value, Some(&entry)), shared)
    }
}

/// `backend`, behind a near cache when `redis` asks for one and the topology allows it.
fn with_near_cache(
    backend: RedisBackend,
    redis: &RedisConfig,
    config: &CacheConfig,
) -> Result<Arc<dyn CacheBackend>> {
    match &redis.near_cache {
        Some(near) if !backend.is_cluster() => {
            let tracking = RedisBackend::tracking_client(redis)?;
            Ok(Arc::new(NearCache::start(
                backend,
                tracking,
                &config.prefix,
                near,
                redis.command_timeout,
            )))
        }
        _ => Ok(Arc::new(backend)),
    }
}

/// A cached value as the JSON it is stored as (see
/// [`CacheService::get_or_load_json`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedJson {
    /// The value's [`Cacheable::version`].
    pub version: u64,
    /// The value as its `Serialize` implementation writes it with `serde_json`.
    pub json: Bytes,
}

/// How a read hands back what it found: decoded ([`Decoded`]) or as stored JSON
/// ([`AsJson`]). Both share one read path, so they cannot drift apart on the rules
/// (leases, fences, single-flight, fail-open).
trait Form<T, E> {
    type Output;

    /// From a stored entry; `None` when it cannot be read (another format or schema).
    fn from_entry(entry: Bytes) -> Option<Option<Self::Output>>;

    /// From a freshly loaded value; `entry` is its encoding, when one was made.
    fn from_loaded(value: Option<T>, entry: Option<&Bytes>) -> Result<Option<Self::Output>, E>;
}

/// Reads decode into `T`.
struct Decoded;

impl<T: Cacheable, E> Form<T, E> for Decoded {
    type Output = T;

    fn from_entry(entry: Bytes) -> Option<Option<T>> {
        decode(&entry)
    }

    fn from_loaded(value: Option<T>, _entry: Option<&Bytes>) -> Result<Option<T>, E> {
        Ok(value)
    }
}

/// Reads hand back the stored JSON.
struct AsJson;

impl<T: Cacheable, E: From<CacheError>> Form<T, E> for AsJson {
    type Output = CachedJson;

    fn from_entry(entry: Bytes) -> Option<Option<CachedJson>> {
        json_of(entry)
    }

    fn from_loaded(value: Option<T>, entry: Option<&Bytes>) -> Result<Option<CachedJson>, E> {
        if let Some(found) = entry.cloned().and_then(json_of) {
            return Ok(found);
        }
        let Some(value) = value else {
            return Ok(None);
        };
        let json = serde_json::to_vec(&value)
            .map_err(|error| E::from(CacheError::Serialize(error.to_string())))?;
        Ok(Some(CachedJson {
            version: value.version(),
            json: Bytes::from(json),
        }))
    }
}

/// The JSON payload of an entry: the same buffer with the header skipped (no copy, no
/// new reference).
fn json_of(mut entry: Bytes) -> Option<Option<CachedJson>> {
    let (version, header) = match codec::decode(&entry)? {
        Entry::Present { version, payload } => (version, entry.len() - payload.len()),
        Entry::Absent => return Some(None),
    };
    entry.advance(header);
    Some(Some(CachedJson {
        version,
        json: entry,
    }))
}

/// A read that skips the cache (breaker open, or the backend failed): counted as an
/// error and a load.
async fn bypass<T, E, Fm, F, Fut>(
    namespace: &'static str,
    loader: F,
) -> Result<Option<Fm::Output>, E>
where
    T: Cacheable,
    Fm: Form<T, E>,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
{
    count_request(namespace, "error");
    count_load(namespace);
    Fm::from_loaded(Box::pin(loader()).await?, None)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Option<Option<T>> {
    match codec::decode(bytes)? {
        Entry::Present { payload, .. } => serde_json::from_slice(payload).ok().map(Some),
        Entry::Absent => Some(None),
    }
}

fn jittered(ttl: Duration, jitter: f64) -> Duration {
    if jitter <= 0.0 {
        return ttl;
    }
    let factor = 1.0 + jitter * (2.0 * rand::random::<f64>() - 1.0);
    ttl.mul_f64(factor).max(Duration::from_millis(1))
}

fn count_request(namespace: &'static str, result: &'static str) {
    metrics::counter!("cache_requests_total", "namespace" => namespace, "result" => result)
        .increment(1);
}

fn count_load(namespace: &'static str) {
    metrics::counter!("cache_loads_total", "namespace" => namespace).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicBool, AtomicUsize};

    use async_trait::async_trait;
    use serde::Deserialize;
    use tokio::sync::Notify;

    use crate::key::Invalidation;

    /// A memory store whose reads can be held in flight, and whose reconnection count
    /// the test sets: a reconnection that happens while replies are on their way is
    /// fault injection a real Redis cannot produce on demand.
    #[derive(Debug)]
    struct Reconnecting {
        store: MemoryBackend,
        reconnects: AtomicU64,
        hold: AtomicBool,
        in_flight: AtomicUsize,
        release: Notify,
    }

    #[async_trait]
    impl CacheBackend for Reconnecting {
        async fn get(&self, key: &CacheKey) -> Result<Option<Bytes>> {
            let reply = self.store.get(key).await;
            if self.hold.load(Ordering::Acquire) {
                let released = self.release.notified();
                self.in_flight.fetch_add(1, Ordering::AcqRel);
                released.await;
            }
            reply
        }
        async fn get_or_lease(
            &self,
            key: &CacheKey,
            token: LeaseToken,
            ttl: Duration,
        ) -> Result<Lookup> {
            self.store.get_or_lease(key, token, ttl).await
        }
        async fn fill(
            &self,
            key: &CacheKey,
            token: LeaseToken,
            entry: &[u8],
            ttl: Duration,
        ) -> Result<FillOutcome> {
            self.store.fill(key, token, entry, ttl).await
        }
        async fn invalidate(&self, invalidation: &Invalidation, fence_ttl: Duration) -> Result<()> {
            self.store.invalidate(invalidation, fence_ttl).await
        }
        async fn fence(&self, key: &CacheKey) -> Result<Option<u64>> {
            self.store.fence(key).await
        }
        async fn generation(&self, key: &str) -> Result<u64> {
            self.store.generation(key).await
        }
        async fn bump_generation(&self, key: &str) -> Result<u64> {
            self.store.bump_generation(key).await
        }
        async fn ping(&self) -> Result<()> {
            Ok(())
        }
        async fn identity(&self) -> Result<Option<String>> {
            Ok(Some("redis-1".into()))
        }
        fn reconnects(&self) -> u64 {
            self.reconnects.load(Ordering::Acquire)
        }
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Value(u64);

    impl Cacheable for Value {
        fn version(&self) -> u64 {
            self.0
        }
    }

    /// Audit item 4: the reconnection check used to answer "new connection" to the first
    /// reader that looked, and the readers whose replies came over the same new
    /// connection served them unchecked.
    #[tokio::test]
    async fn no_reader_serves_a_reply_that_came_over_an_unchecked_connection() {
        let backend = Arc::new(Reconnecting {
            store: MemoryBackend::new(100),
            reconnects: AtomicU64::new(0),
            hold: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            release: Notify::new(),
        });
        let cache =
            CacheService::new(backend.clone(), CacheConfig::with_prefix("t")).expect("cache");
        cache.hold_reads_after_outage(true);
        cache.set_verified(0);
        let key = cache.key(Namespace::new("item"), 1);
        let load = |v| async move { Ok::<_, CacheError>(Some(Value(v))) };
        let first = cache.get_or_load(&key, || load(1)).await.expect("fill");
        assert_eq!(first, Some(Value(1)));

        // Two reads are in flight when the connection is re-established.
        backend.hold.store(true, Ordering::Release);
        let reads: Vec<_> = (0..2)
            .map(|_| {
                let (cache, key) = (cache.clone(), key.clone());
                tokio::spawn(async move { cache.get_or_load(&key, || load(2)).await })
            })
            .collect();
        while backend.in_flight.load(Ordering::Acquire) < 2 {
            tokio::task::yield_now().await;
        }
        backend.reconnects.store(1, Ordering::Release);
        backend.hold.store(false, Ordering::Release);
        backend.release.notify_waiters();
        for read in reads {
            assert_eq!(
                read.await.expect("task").expect("read"),
                Some(Value(2)),
                "a reply over an unchecked connection is not served: the loader ran"
            );
        }
        assert!(cache.is_degraded(), "until the identity is checked again");
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let ttl = Duration::from_secs(100);
        for _ in 0..1_000 {
            let t = jittered(ttl, 0.1);
            assert!(
                t >= Duration::from_secs(90) && t <= Duration::from_secs(110),
                "{t:?}"
            );
        }
        assert_eq!(jittered(ttl, 0.0), ttl);
    }

    #[test]
    fn jitter_spreads_expiries() {
        let distinct: std::collections::HashSet<_> = (0..100)
            .map(|_| jittered(Duration::from_secs(300), 0.1))
            .collect();
        assert!(
            distinct.len() > 90,
            "entries written together must not expire together"
        );
    }
}
