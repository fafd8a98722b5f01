//! In-process backend: the zero-set-up default, and the reference semantics the Redis
//! scripts must match.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use super::{CacheBackend, FillOutcome, Lease, LeaseToken, Lookup, clock_generation};
use crate::codec;
use crate::error::Result;
use crate::key::{CacheKey, Invalidation};

const SHARDS: usize = 16;

/// An in-process store with the same lease, fence and generation semantics as
/// [`RedisBackend`](super::RedisBackend). Bounded: past `max_entries`, expired entries are
/// purged first, then arbitrary values; leases and fences are never evicted, since
/// dropping one could let a stale fill in.
///
/// Time is read from `tokio::time`, so tests can pause and advance it.
#[derive(Debug)]
pub struct MemoryBackend {
    shards: Box<[Mutex<HashMap<String, Slot>>]>,
    generations: Mutex<HashMap<String, u64>>,
    hasher: RandomState,
    max_per_shard: usize,
}

#[derive(Debug, Default)]
struct Slot {
    value: Option<(Bytes, Instant)>,
    lease: Option<(LeaseToken, Instant)>,
    fence: Option<(u64, Instant)>,
}

impl Slot {
    fn expire(&mut self, now: Instant) {
        if self.value.as_ref().is_some_and(|(_, at)| *at <= now) {
            self.value = None;
        }
        if self.lease.is_some_and(|(_, at)| at <= now) {
            self.lease = None;
        }
        if self.fence.is_some_and(|(_, at)| at <= now) {
            self.fence = None;
        }
    }

    fn is_empty(&self) -> bool {
        self.value.is_none() && self.lease.is_none() && self.fence.is_none()
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new(100_000)
    }
}

impl MemoryBackend {
    /// A store holding at most about `max_entries` values (spread over 16 shards, so a
    /// store smaller than a few hundred entries evicts early).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use cache_service::{CacheConfig, CacheService, MemoryBackend};
    ///
    /// let store = Arc::new(MemoryBackend::new(10_000));
    /// let cache = CacheService::new(store.clone(), CacheConfig::with_prefix("doc"))?;
    /// assert!(store.is_empty());
    /// # drop(cache);
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(max_entries: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            generations: Mutex::default(),
            hasher: RandomState::new(),
            max_per_shard: max_entries.div_ceil(SHARDS).max(1),
        }
    }

    /// Number of stored values, expired or not (for tests and reporting).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use cache_service::{CacheConfig, CacheService, Cacheable, MemoryBackend, Namespace};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Note(u64);
    /// impl Cacheable for Note {
    ///     fn version(&self) -> u64 {
    ///         self.0
    ///     }
    /// }
    ///
    /// let store = Arc::new(MemoryBackend::new(1_000));
    /// let cache = CacheService::new(store.clone(), CacheConfig::with_prefix("doc"))?;
    /// let key = cache.key(Namespace::new("note"), 1);
    /// cache.get_or_load(&key, || async { Ok::<_, std::io::Error>(Some(Note(1))) }).await?;
    /// assert_eq!(store.len(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| lock(s).values().filter(|slot| slot.value.is_some()).count())
            .sum()
    }

    /// Whether no value is stored.
    ///
    /// # Examples
    ///
    /// ```
    /// use cache_service::MemoryBackend;
    ///
    /// assert!(MemoryBackend::new(100).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How long the value stored under `key` has left to live (Redis's `PTTL`), if one
    /// is stored: for tests and reporting.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use cache_service::{CacheConfig, CacheService, Cacheable, MemoryBackend, Namespace};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Note(u64);
    /// impl Cacheable for Note {
    ///     fn version(&self) -> u64 {
    ///         self.0
    ///     }
    /// }
    ///
    /// const NOTE: Namespace = Namespace::new("note");
    /// let store = Arc::new(MemoryBackend::new(1_000));
    /// let config = CacheConfig { ttl_jitter: 0.0, ..CacheConfig::with_prefix("doc") }
    ///     .with_ttl(NOTE, Duration::from_secs(60));
    /// let cache = CacheService::new(store.clone(), config)?;
    /// let key = cache.key(NOTE, 1);
    /// assert_eq!(store.ttl(&key), None);
    /// cache.get_or_load(&key, || async { Ok::<_, std::io::Error>(Some(Note(1))) }).await?;
    /// let ttl = store.ttl(&key).expect("stored");
    /// assert!(ttl > Duration::from_secs(59) && ttl <= Duration::from_secs(60));
    /// # Ok(())
    /// # }
    /// ```
    pub fn ttl(&self, key: &CacheKey) -> Option<Duration> {
        let shard = lock(&self.shards[(self.hasher.hash_one(key.as_str()) as usize) % SHARDS]);
        let now = Instant::now();
        let (_, expires) = shard.get(key.as_str())?.value.as_ref()?;
        (*expires > now).then(|| *expires - now)
    }

    /// Runs `f` on the key's slot under its shard lock, removing the slot if it ends empty.
    fn with_slot<R>(&self, key: &str, f: impl FnOnce(&mut Slot, Instant) -> R) -> R {
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        let mut map = lock(shard);
        let now = Instant::now();
        let slot = map.entry(key.to_owned()).or_default();
        slot.expire(now);
        let result = f(slot, now);
        if slot.is_empty() {
            map.remove(key);
        } else if map.len() > self.max_per_shard {
            evict(&mut map, self.max_per_shard, now);
        }
        result
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a slot half-written (every update is a
    // single assignment), so a poisoned lock is still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn evict(map: &mut HashMap<String, Slot>, max: usize, now: Instant) {
    map.retain(|_, slot| {
        slot.expire(now);
        !slot.is_empty()
    });
    let mut excess = map.len().saturating_sub(max);
    if excess == 0 {
        return;
    }
    map.retain(|_, slot| {
        let evictable = excess > 0 && slot.lease.is_none() && slot.fence.is_none();
        if evictable {
            excess -= 1;
        }
        !evictable
    });
}

#[async_trait]
impl CacheBackend for MemoryBackend {
    fn is_in_process(&self) -> bool {
        true
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<Bytes>> {
        Ok(self.with_slot(key.as_str(), |slot, _| {
            slot.value.as_ref().map(|(v, _)| v.clone())
        }))
    }

    async fn get_or_lease(&self, lease: Lease<'_>, lease_ttl: Duration) -> Result<Lookup> {
        Ok(self.with_slot(lease.key.as_str(), |slot, now| {
            if let Some((value, _)) = &slot.value {
                Lookup::Hit(value.clone())
            } else if slot.lease.is_some() {
                Lookup::Busy
            } else {
                slot.lease = Some((lease.token, now + lease_ttl));
                Lookup::Leased
            }
        }))
    }

    async fn fill(&self, lease: Lease<'_>, entry: &[u8], ttl: Duration) -> Result<FillOutcome> {
        // `None` for an entry in another format: older than any fence, as in the Redis
        // scripts.
        let version = codec::version_of(entry);
        Ok(self.with_slot(lease.key.as_str(), |slot, now| {
            if slot.lease.map(|(t, _)| t) != Some(lease.token) {
                return FillOutcome::LeaseLost;
            }
            slot.lease = None;
            if slot
                .fence
                .is_some_and(|(fence, _)| version.is_none_or(|version| version < fence))
            {
                return FillOutcome::Fenced;
            }
            slot.value = Some((Bytes::copy_from_slice(entry), now + ttl));
            FillOutcome::Stored
        }))
    }

    async fn invalidate(&self, invalidation: &Invalidation, fence_ttl: Duration) -> Result<()> {
        self.with_slot(invalidation.key.as_str(), |slot, now| {
            let Some(version) = invalidation.version else {
                slot.value = None;
                slot.lease = None;
                return;
            };
            let cached = slot.value.as_ref().and_then(|(v, _)| codec::version_of(v));
            if cached.is_none_or(|cached| cached < version) {
                slot.value = None;
            }
            let fence = slot.fence.map_or(version, |(f, _)| f.max(version));
            slot.fence = Some((fence, now + fence_ttl));
        });
        Ok(())
    }

    async fn fence(&self, key: &CacheKey) -> Result<Option<u64>> {
        Ok(self.with_slot(key.as_str(), |slot, _| slot.fence.map(|(f, _)| f)))
    }

    async fn generation(&self, key: &str) -> Result<u64> {
        let mut generations = lock(&self.generations);
        Ok(*generations
            .entry(key.to_owned())
            .or_insert_with(clock_generation))
    }

    async fn bump_generation(&self, key: &str) -> Result<u64> {
        let mut generations = lock(&self.generations);
        let generation = generations
            .entry(key.to_owned())
            .and_modify(|g| *g += 1)
            .or_insert_with(clock_generation);
        Ok(*generation)
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn identity(&self) -> Result<Option<String>> {
        Ok(None)
    }
}
