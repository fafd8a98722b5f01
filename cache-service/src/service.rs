//! [`CacheService`]: typed cache-aside reads and invalidation.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::{CacheBackend, MemoryBackend, NearCache, RedisBackend};
use crate::breaker::{Breaker, Marks};
use crate::config::{CacheConfig, RedisConfig};
use crate::error::Result;
use crate::flight::Flights;
use crate::key::{CacheKey, Invalidation, MemberKey, Namespace, Scope, generation_key};

mod invalidate;
mod read;
#[cfg(test)]
mod tests;

pub(crate) use invalidate::{Owed, ScopedOwed};
pub use read::CachedJson;

/// A value that can be cached.
pub trait Cacheable: Serialize + DeserializeOwned + Send + Sync {
    /// The version of the source row this value was loaded from; a fill is refused when
    /// a versioned invalidation fenced a newer one. Values derived from many rows (list
    /// pages) belong in a [`Group`](crate::Group) and return 0.
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
    /// A service over `backend`; fails ([`CacheError::Config`](crate::CacheError::Config),
    /// naming the field) on a configuration that [`CacheConfig::validate`] refuses.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use cache_service::{CacheConfig, CacheService, MemoryBackend};
    ///
    /// let store = Arc::new(MemoryBackend::new(1_000));
    /// let cache = CacheService::new(store.clone(), CacheConfig::with_prefix("doc"))?;
    /// assert_eq!(cache.config().prefix, "doc");
    /// assert!(CacheService::new(store, CacheConfig::with_prefix("")).is_err());
    /// # Ok(())
    /// # }
    /// ```
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

    /// A service over a fresh in-process store holding about `max_entries` values (a
    /// [`MemoryBackend`]): one process's cache, with the same leases, fences and
    /// generations as Redis.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// use cache_service::{CacheConfig, CacheService};
    ///
    /// let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 10_000)?;
    /// assert!(cache.backend().is_in_process());
    /// # Ok(())
    /// # }
    /// ```
    pub fn in_memory(config: CacheConfig, max_entries: usize) -> Result<Self> {
        Self::new(Arc::new(MemoryBackend::new(max_entries)), config)
    }

    /// A service over Redis; fails if Redis cannot be reached now. With
    /// [`RedisConfig::near_cache`], reads go through a [`NearCache`].
    ///
    /// # Examples
    ///
    /// Not run: it needs a Redis server.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// use cache_service::{CacheConfig, CacheService, NearCacheConfig, RedisConfig};
    ///
    /// let redis = RedisConfig {
    ///     near_cache: Some(NearCacheConfig::default()),
    ///     ..RedisConfig::new("redis://127.0.0.1:6379")
    /// };
    /// let cache = CacheService::connect_redis(&redis, CacheConfig::with_prefix("shop")).await?;
    /// cache.ping().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_redis(redis: &RedisConfig, config: CacheConfig) -> Result<Self> {
        config.validate()?;
        let backend = RedisBackend::connect(redis).await?;
        Self::new(with_near_cache(backend, redis, &config)?, config)
    }

    /// A service over Redis that starts even if Redis cannot be reached now: reads go to
    /// the loader (and [`is_degraded`](Self::is_degraded) is true) until it can (see
    /// [`RedisBackend::connect_in_background`]). Fails only on a bad configuration.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// # use cache_service::Cacheable;
    /// # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    /// # struct Note(u64);
    /// # impl Cacheable for Note {
    /// #     fn version(&self) -> u64 {
    /// #         self.0
    /// #     }
    /// # }
    /// use std::time::Duration;
    /// use cache_service::{CacheConfig, CacheService, RedisConfig};
    ///
    /// // Nothing listens on port 1: the service starts anyway, and reads go to the loader.
    /// let redis = RedisConfig {
    ///     connect_timeout: Duration::from_millis(100),
    ///     ..RedisConfig::new("redis://127.0.0.1:1")
    /// };
    /// let cache = CacheService::connect_redis_in_background(&redis, CacheConfig::with_prefix("doc"))
    ///     .await?;
    /// let key = cache.key(cache_service::Namespace::new("note"), 1);
    /// let read = cache.get_or_load(&key, || async { Ok::<_, std::io::Error>(Some(Note(1))) });
    /// assert_eq!(read.await?, Some(Note(1)), "from the loader");
    /// assert!(cache.ping().await.is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_redis_in_background(
        redis: &RedisConfig,
        config: CacheConfig,
    ) -> Result<Self> {
        config.validate()?;
        let backend = RedisBackend::connect_in_background(redis).await?;
        Self::new(with_near_cache(backend, redis, &config)?, config)
    }

    /// The configuration in use.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use cache_service::{CacheConfig, CacheService, Namespace};
    ///
    /// const NOTE: Namespace = Namespace::new("note");
    /// let config = CacheConfig::with_prefix("doc").with_ttl(NOTE, Duration::from_secs(60));
    /// let cache = CacheService::in_memory(config, 100)?;
    /// assert_eq!(cache.config().ttl_for(NOTE), Duration::from_secs(60));
    /// # Ok(())
    /// # }
    /// ```
    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// The backend, for health checks and tests.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// use cache_service::{CacheConfig, CacheService};
    ///
    /// let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 100)?;
    /// assert_eq!(cache.backend().identity().await?, None, "a memory store has no identity");
    /// # Ok(())
    /// # }
    /// ```
    pub fn backend(&self) -> &Arc<dyn CacheBackend> {
        &self.inner.backend
    }

    /// The key of `id` in `namespace`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// use cache_service::{CacheConfig, CacheService, Namespace};
    ///
    /// const NOTE: Namespace = Namespace::new("note");
    /// let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 100)?;
    /// assert_eq!(cache.key(NOTE, 7).as_str(), "doc:note:{7}");
    /// # Ok(())
    /// # }
    /// ```
    pub fn key(&self, namespace: Namespace, id: impl fmt::Display) -> CacheKey {
        CacheKey::new(&self.prefix(), namespace, &id)
    }

    /// The key of `member` of `group` (a [`Group`](crate::Group), or one [`Scope`] of
    /// it), for any of its generations.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// use cache_service::{CacheConfig, CacheService, Group};
    ///
    /// const NOTE_LIST: Group = Group::new("note_list");
    /// let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 100)?;
    /// assert_eq!(cache.member_key(NOTE_LIST, "p1").at(3).as_str(), "doc:note_list:{g3:p1}");
    /// let work = cache.member_key(NOTE_LIST.scope("work"), "p1");
    /// assert_eq!(work.at(3).as_str(), "doc:note_list:{g3s4:work:p1}");
    /// # Ok(())
    /// # }
    /// ```
    pub fn member_key(&self, group: impl Into<Scope>, member: impl fmt::Display) -> MemberKey {
        MemberKey::new(&self.prefix(), &group.into(), &member)
    }

    /// The key of the generation counter of `group` (a [`Group`](crate::Group), or one
    /// [`Scope`] of it) in the current epoch: what a member's key is built with (see
    /// [`MemberKey::at`]). For inspection (tests, tools); reads and invalidations spell
    /// it themselves.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// use cache_service::{CacheConfig, CacheService, Group};
    ///
    /// const NOTE_LIST: Group = Group::new("note_list");
    /// let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 100)?;
    /// assert_eq!(cache.generation_key(NOTE_LIST), "doc:note_list:generation");
    /// let work = cache.generation_key(NOTE_LIST.scope("work"));
    /// assert_eq!(work, "doc:note_list:s4:work:generation");
    /// let before = cache.backend().generation(&work).await?;
    /// cache.invalidate_group(NOTE_LIST.scope("work")).await?;
    /// assert_eq!(cache.backend().generation(&work).await?, before + 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn generation_key(&self, group: impl Into<Scope>) -> String {
        generation_key(&self.prefix(), &group.into())
    }

    /// Checks that the backend answers.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// use cache_service::{CacheConfig, CacheService};
    ///
    /// let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 100)?;
    /// cache.ping().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn ping(&self) -> Result<()> {
        self.inner.backend.ping().await
    }

    /// Whether reads currently skip the cache, for some keys or all (after a backend
    /// error, or while owed invalidations wait to be replayed, or until a new connection
    /// was checked).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// use cache_service::{CacheConfig, CacheService};
    ///
    /// let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 100)?;
    /// assert!(!cache.is_degraded(), "a memory store never fails");
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_degraded(&self) -> bool {
        !self.inner.breaker.allows_all_reads() || !self.connection_checked()
    }

    /// Whether reads of `key` currently skip the cache. On a Redis Cluster a failing
    /// master takes only its own hash slots off the cache: the other masters' keys are
    /// still served.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// use cache_service::{CacheConfig, CacheService, Namespace};
    ///
    /// let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 100)?;
    /// assert!(!cache.is_degraded_for(&cache.key(Namespace::new("note"), 1)));
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_degraded_for(&self, key: &CacheKey) -> bool {
        !self.inner.breaker.allows_reads(self.shard_of(key.as_str())) || !self.connection_checked()
    }

    /// The current cache epoch (see [`Coherence`](crate::Coherence)): keys are spelled
    /// `{prefix}:e{epoch}:…` (plain `{prefix}:…` for epoch 0).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// use cache_service::{CacheConfig, CacheService};
    ///
    /// let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 100)?;
    /// assert_eq!(cache.epoch(), 0, "until a Coherence moves it");
    /// # Ok(())
    /// # }
    /// ```
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
    /// Looks at those shards only: asking every shard first (16 384 on a cluster) would
    /// cost each write more than the answer.
    pub(crate) fn needs_resync_for(&self, items: &[Invalidation], groups: &[Scope]) -> bool {
        self.inner.breaker.gate_on()
            && self
                .shards_of(items, groups)
                .into_iter()
                .any(|shard| self.inner.breaker.shard_needs_resync(shard))
    }

    /// The shards that `items` and `groups`' generation counters live on.
    pub(crate) fn shards_of(&self, items: &[Invalidation], groups: &[Scope]) -> BTreeSet<usize> {
        let prefix = self.prefix();
        items
            .iter()
            .map(|inv| self.shard_of(inv.key.as_str()))
            .chain(
                groups
                    .iter()
                    .map(|group| self.shard_of(&generation_key(&prefix, group))),
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
}

/// `backend`, behind a near cache when `redis` asks for one and the topology allows it.
fn with_near_cache(
    backend: RedisBackend,
    redis: &RedisConfig,
    config: &CacheConfig,
) -> Result<Arc<dyn CacheBackend>> {
    match &redis.near_cache {
        Some(near) if !backend.is_cluster() => {
            let tracking = crate::backend::tracking_client(redis)?;
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
