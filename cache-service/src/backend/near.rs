//! The near cache (invariant 12): an in-process copy (L1) of what this process read from
//! Redis, kept coherent by Redis itself and served only past a barrier (or, in bounded
//! mode, within a stated bound of one).
//!
//! - **Invalidated by Redis.** A dedicated RESP3 connection runs
//!   `CLIENT TRACKING on BCAST PREFIX {prefix}:`: Redis pushes the name of every key under
//!   the prefix that anyone changes (or that expires), and a null push on a flush. Each
//!   push drops its keys from L1 (a null push drops everything). Group generation
//!   counters are keys like any other, so a group's move reaches every L1 the same way.
//! - **Read-your-writes across processes: the barrier.** An L1 entry is served only after
//!   a `PING`, sent on the tracking connection after the read began, was answered, and the
//!   pushes received before that reply were applied. Redis answers a connection's commands
//!   in order and writes a write's invalidations into the tracking connection as the write
//!   executes, so every write that returned before the read began has been applied to L1
//!   by then. All reads waiting at one moment share one `PING`.
//! - **Bounded mode** ([`NearCacheConsistency::Bounded`]) trades that wait for a stated
//!   bound: a read is served at once while the newest passed round was sent at most the
//!   bound before the read began, so it reflects every write that returned at least the
//!   bound before it (and every write of this process, whose invalidations drop their
//!   keys from L1 at once); an older round sends the read through the barrier.
//! - **Fills cannot resurrect.** A fill notes an invalidation counter of its key (striped)
//!   and the flush count before its Redis read, and stores them with the value. A read
//!   serves an entry only if, past its barrier, both counters are still what the entry
//!   holds: an invalidation or flush applied since the fill began its Redis read rejects
//!   it, even one that raced the insert.
//! - **Losing tracking empties L1.** On a reconnection of the tracking connection, a lost
//!   push (the channel lagged), a failed barrier, a flush of Redis (a marker key outside
//!   the prefix is gone) or an epoch move, L1 is flushed and reads go to Redis until
//!   tracking is back on and past a barrier.

use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::prelude::*;
use tokio::sync::{Notify, broadcast};

mod backend;
mod tracking;

use super::RedisBackend;
use crate::config::{NearCacheConfig, NearCacheConsistency, RedisConfig};
use crate::error::{CacheError, Result};

/// Stripes of the per-key invalidation counters a fill checks.
const STRIPES: usize = 4096;
/// Bytes counted per entry on top of its key and value.
const ENTRY_OVERHEAD: u64 = 112;

/// A hook awaited at a point of a fill (tests only).
type FillHook = Box<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// [`RedisBackend`] with a near cache in front of its reads (see the module docs).
/// Cloning is shallow.
#[derive(Clone)]
pub struct NearCache {
    redis: RedisBackend,
    shared: Arc<Shared>,
    /// Dropped with the last clone: stops the tracking task.
    _stop: Arc<tokio::sync::oneshot::Sender<()>>,
}

/// What the near cache has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NearCacheStats {
    /// Reads served from L1 (past a barrier, or in bounded mode within the bound).
    pub hits: u64,
    /// Reads that went to Redis.
    pub misses: u64,
    /// Barriers passed.
    pub barriers: u64,
    /// Entries in L1 now (approximate).
    pub entries: u64,
}

struct Shared {
    l1: moka::sync::Cache<String, Entry>,
    /// Whether tracking is on and past a barrier: L1 may be used.
    ready: AtomicBool,
    flushes: AtomicU64,
    stripes: Box<[AtomicU64]>,
    hasher: std::collections::hash_map::RandomState,
    barrier: Barrier,
    /// Bounded mode: how old (ns) the newest passed round may be for a read to be served
    /// without waiting; 0 in strict mode.
    bound: u64,
    /// The origin of the nanosecond clock the barrier's times are read on.
    started: Instant,
    command_timeout: Duration,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Tests only: when false, pushes are applied only by barriers.
    apply_pushes_at_once: AtomicBool,
    fill_hook: OnceLock<FillHook>,
    inserted_hook: OnceLock<FillHook>,
}

/// An L1 entry: the value and the counters its fill noted before reading Redis.
#[derive(Clone)]
struct Entry {
    value: Bytes,
    token: FillToken,
}

/// The flush count and the key's stripe counter at one moment: an entry is good only
/// while both are unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FillToken {
    flushes: u64,
    stripe: u64,
}

/// Rounds of `PING` on the tracking connection, run one at a time. A reader needs the
/// round that is sent next after it looked (`next_round`), and waits until that round,
/// or a later one, passed (or one at least as new failed).
///
/// Readers of round `n` wait on `done[n % 2]`, so a round's end wakes only the readers
/// it serves: those that came while it was on the wire need the next one and sleep on.
/// No reader keeps a timer: every round ends within the command timeout, and losing
/// tracking fails every round a reader may be waiting for.
struct Barrier {
    next_round: AtomicU64,
    /// Readers that asked since the last round was sent.
    waiting: AtomicU64,
    wake: Notify,
    /// The newest round that passed, and the newest that failed.
    passed: AtomicU64,
    failed: AtomicU64,
    done: [Notify; 2],
    /// Rounds passed so far.
    passes: AtomicU64,
    /// When the newest passed round was sent (see [`Shared::clock`]); 0: none since
    /// tracking was last lost.
    fresh: AtomicU64,
}

impl Barrier {
    fn pass(&self, round: u64, sent: u64) {
        self.passes.fetch_add(1, Ordering::Relaxed);
        self.fresh.fetch_max(sent, Ordering::AcqRel);
        self.passed.fetch_max(round, Ordering::AcqRel);
        self.done[(round % 2) as usize].notify_waiters();
    }

    /// Fails `round` and every round before it.
    fn fail(&self, round: u64) {
        self.failed.fetch_max(round, Ordering::AcqRel);
        for done in &self.done {
            done.notify_waiters();
        }
    }

    /// Fails every round a reader may be waiting for now.
    fn fail_all_waiting(&self) {
        self.fresh.store(0, Ordering::Release);
        self.fail(self.next_round.load(Ordering::SeqCst));
    }

    /// Asks for a round without waiting for it.
    fn ask(&self) {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
    }
}

impl std::fmt::Debug for NearCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NearCache")
            .field("redis", &self.redis)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl NearCache {
    /// The near cache in front of `redis`, tracking every key under `{prefix}:` over
    /// `tracking` (a client of the same Redis, made with RESP3, not connected yet). Reads
    /// go to Redis until tracking is on, which happens in the background.
    pub(crate) fn start(
        redis: RedisBackend,
        tracking: Client,
        prefix: &str,
        config: &NearCacheConfig,
        command_timeout: Duration,
    ) -> Self {
        let l1 = moka::sync::Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(|key: &String, entry: &Entry| {
                u32::try_from(key.len() as u64 + entry.value.len() as u64 + ENTRY_OVERHEAD)
                    .unwrap_or(u32::MAX)
            })
            .time_to_live(config.max_age)
            .build();
        let shared = Arc::new(Shared {
            l1,
            ready: AtomicBool::new(false),
            flushes: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            barrier: Barrier {
                next_round: AtomicU64::new(1),
                waiting: AtomicU64::new(0),
                wake: Notify::new(),
                passed: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                done: [Notify::new(), Notify::new()],
                passes: AtomicU64::new(0),
                fresh: AtomicU64::new(0),
            },
            bound: match config.consistency {
                NearCacheConsistency::Strict => 0,
                NearCacheConsistency::Bounded(bound) => {
                    u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX)
                }
            },
            started: Instant::now(),
            command_timeout,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            apply_pushes_at_once: AtomicBool::new(true),
            fill_hook: OnceLock::new(),
            inserted_hook: OnceLock::new(),
        });
        // The tracking task (and its connection) ends with the last handle.
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let closer = tracking.clone();
        let task = tracking::track(shared.clone(), tracking, format!("{prefix}:"));
        tokio::spawn(async move {
            tokio::select! {
                () = task => {}
                _ = stopped => {
                    let _ = closer.quit().await;
                }
            }
        });
        Self {
            redis,
            shared,
            _stop: Arc::new(stop),
        }
    }

    /// Connects to Redis (see [`RedisBackend::connect`]) and puts a near cache in front
    /// of it that tracks every key under `{prefix}:` (the [`CacheConfig`]'s prefix of the
    /// service it will serve). Tracking starts in the background; until it is on, reads
    /// ask Redis. A Redis Cluster is refused: tracking would need a connection per
    /// master.
    ///
    /// [`CacheConfig`]: crate::CacheConfig
    ///
    /// # Examples
    ///
    /// Not run: it needs a Redis server.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use cache_service::{CacheConfig, CacheService, NearCache, NearCacheConfig, RedisConfig};
    ///
    /// let redis = RedisConfig::new("redis://127.0.0.1:6379");
    /// let config = CacheConfig::with_prefix("shop");
    /// let near = NearCache::connect(&redis, &config.prefix, &NearCacheConfig::default()).await?;
    /// near.wait_until_tracking(Duration::from_secs(1)).await;
    /// let cache = CacheService::new(Arc::new(near), config)?;
    /// // Or in one step: `RedisConfig { near_cache: Some(..), .. }` and
    /// // `CacheService::connect_redis`.
    /// # drop(cache);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(
        redis: &RedisConfig,
        prefix: &str,
        config: &NearCacheConfig,
    ) -> Result<Self> {
        let backend = RedisBackend::connect(redis).await?;
        if backend.is_cluster() {
            return Err(CacheError::Config(
                "the near cache does not run on a Redis Cluster".into(),
            ));
        }
        let tracking = super::tracking_client(redis)?;
        Ok(Self::start(
            backend,
            tracking,
            prefix,
            config,
            redis.command_timeout,
        ))
    }

    /// What the near cache has done so far.
    ///
    /// # Examples
    ///
    /// Not run: it needs a Redis server.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// # use cache_service::{NearCache, NearCacheConfig, RedisConfig};
    /// # let redis = RedisConfig::new("redis://127.0.0.1:6379");
    /// # let near = NearCache::connect(&redis, "shop", &NearCacheConfig::default()).await?;
    /// let stats = near.stats();
    /// println!("{} hits, {} misses, {} entries", stats.hits, stats.misses, stats.entries);
    /// # Ok(())
    /// # }
    /// ```
    pub fn stats(&self) -> NearCacheStats {
        let shared = &self.shared;
        NearCacheStats {
            hits: shared.hits.load(Ordering::Relaxed),
            misses: shared.misses.load(Ordering::Relaxed),
            barriers: shared.barrier.passes.load(Ordering::Relaxed),
            entries: shared.l1.entry_count(),
        }
    }

    /// Whether tracking is on and past a barrier, so L1 is used.
    ///
    /// # Examples
    ///
    /// Not run: it needs a Redis server.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// # use cache_service::{NearCache, NearCacheConfig, RedisConfig};
    /// # let redis = RedisConfig::new("redis://127.0.0.1:6379");
    /// # let near = NearCache::connect(&redis, "shop", &NearCacheConfig::default()).await?;
    /// if !near.is_tracking() {
    ///     println!("reads ask Redis until tracking is on");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_tracking(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire)
    }

    /// Waits until tracking is on (or `timeout` passed); returns whether it is.
    ///
    /// # Examples
    ///
    /// Not run: it needs a Redis server.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// # use cache_service::{NearCache, NearCacheConfig, RedisConfig};
    /// # let redis = RedisConfig::new("redis://127.0.0.1:6379");
    /// # let near = NearCache::connect(&redis, "shop", &NearCacheConfig::default()).await?;
    /// let on = near.wait_until_tracking(std::time::Duration::from_secs(1)).await;
    /// assert_eq!(on, near.is_tracking());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn wait_until_tracking(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.is_tracking() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Whether L1 holds `key` now (tests look at it).
    #[doc(hidden)]
    pub fn holds_for_tests(&self, key: &str) -> bool {
        self.shared.l1.contains_key(key)
    }

    /// Passes one barrier (tests use it to know every earlier push was applied); false
    /// if it failed or did not pass within the command timeout.
    #[doc(hidden)]
    pub async fn barrier_for_tests(&self) -> bool {
        self.shared.pass_barrier_within_timeout().await
    }

    /// With `false`, pushes wait for the next barrier instead of being applied as they
    /// arrive (tests use it to make a push and a barrier reply race). Takes effect once
    /// the barrier it passes is done.
    #[doc(hidden)]
    pub async fn apply_pushes_at_once_for_tests(&self, at_once: bool) -> bool {
        self.shared
            .apply_pushes_at_once
            .store(at_once, Ordering::Release);
        self.shared.pass_barrier_within_timeout().await
    }

    /// Awaits `hook` in every fill between its first look at the counters and its L1
    /// insert (tests use it to land an invalidation mid-fill). Set once.
    #[doc(hidden)]
    pub fn on_fill_for_tests(
        &self,
        hook: impl Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + 'static,
    ) {
        let _ = self.shared.fill_hook.set(Box::new(hook));
    }

    /// Awaits `hook` between every fill's L1 insert and its second look at the counters
    /// (tests use it to read while an entry that an invalidation overtook is in L1). Set
    /// once.
    #[doc(hidden)]
    pub fn after_fill_insert_for_tests(
        &self,
        hook: impl Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + 'static,
    ) {
        let _ = self.shared.inserted_hook.set(Box::new(hook));
    }
}

impl Shared {
    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn stripe(&self, key: &str) -> &AtomicU64 {
        &self.stripes[self.hasher.hash_one(key) as usize % STRIPES]
    }

    /// What a fill of `key` notes before its Redis read, and what a read compares an
    /// entry's token with past its barrier.
    fn fill_token(&self, key: &str) -> FillToken {
        FillToken {
            flushes: self.flushes.load(Ordering::Acquire),
            stripe: self.stripe(key).load(Ordering::Acquire),
        }
    }

    /// Stores what a Redis read returned, unless an invalidation of `key` (or a flush)
    /// was applied since `token` was taken. One applied after this check makes readers
    /// reject the entry (its token is old); it is removed at once all the same.
    async fn fill(&self, key: &str, value: &[u8], token: FillToken) {
        if !self.is_ready() || self.fill_token(key) != token {
            return;
        }
        if let Some(hook) = self.fill_hook.get() {
            hook().await;
        }
        // A reply's bytes are a slice of the Redis client's read buffer; kept as they are,
        // each entry would keep its whole buffer alive (measured: +86 MiB with 100 000
        // entries, BENCHMARKS section 8).
        let value = Bytes::copy_from_slice(value);
        self.l1.insert(key.to_owned(), Entry { value, token });
        if let Some(hook) = self.inserted_hook.get() {
            hook().await;
        }
        if self.fill_token(key) != token {
            self.l1.invalidate(key);
        }
    }

    /// `entry`'s value, if no invalidation of `key` nor a flush was applied since its
    /// fill began.
    fn still_good(&self, key: &str, entry: Entry) -> Option<Bytes> {
        (self.fill_token(key) == entry.token).then_some(entry.value)
    }

    /// Drops `key`: counted first, so a fill racing it notices.
    fn drop_key(&self, key: &str) {
        self.stripe(key).fetch_add(1, Ordering::AcqRel);
        self.l1.invalidate(key);
    }

    fn flush(&self) {
        self.flushes.fetch_add(1, Ordering::AcqRel);
        self.l1.invalidate_all();
    }

    /// Stops using L1 until tracking is back and past a barrier; readers waiting for a
    /// round are told it failed.
    fn go_dark(&self) {
        self.ready.store(false, Ordering::Release);
        self.flush();
        self.barrier.fail_all_waiting();
    }

    fn apply(
        &self,
        pushed: std::result::Result<fred::types::client::Invalidation, broadcast::error::RecvError>,
    ) {
        match pushed {
            Ok(invalidation) if invalidation.keys.is_empty() => self.flush(),
            Ok(invalidation) => {
                for key in &invalidation.keys {
                    if let Some(key) = key.as_str() {
                        self.drop_key(key);
                    }
                }
            }
            // Pushes were lost: nothing in L1 can be trusted.
            Err(_) => self.flush(),
        }
    }

    /// Nanoseconds since the near cache started, plus one (0 means never).
    fn clock(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    /// Whether an entry the caller just looked up may be served: in bounded mode at once
    /// while the newest passed round was sent at most `bound` before now (now is no
    /// earlier than the read began, so the bound holds for the read; a new round is asked
    /// for once that one is half as old); otherwise past a round sent after this call.
    /// False if that round failed.
    async fn may_serve(&self) -> bool {
        if self.bound != 0 {
            let began = self.clock();
            let fresh = self.barrier.fresh.load(Ordering::Acquire);
            let age = began.saturating_sub(fresh);
            if fresh != 0 && age <= self.bound {
                if age > self.bound / 2 {
                    self.barrier.ask();
                }
                return true;
            }
        }
        self.pass_barrier().await
    }

    /// Waits for a barrier round sent after this call; false if it failed.
    async fn pass_barrier(&self) -> bool {
        let barrier = &self.barrier;
        let need = barrier.next_round.load(Ordering::SeqCst);
        barrier.ask();
        let done = &barrier.done[(need % 2) as usize];
        loop {
            let notified = done.notified();
            tokio::pin!(notified);
            // Registered before looking, so a round ending in between still wakes it.
            notified.as_mut().enable();
            if barrier.passed.load(Ordering::Acquire) >= need {
                return true;
            }
            if barrier.failed.load(Ordering::Acquire) >= need {
                return false;
            }
            notified.await;
        }
    }

    async fn pass_barrier_within_timeout(&self) -> bool {
        tokio::time::timeout(self.command_timeout, self.pass_barrier())
            .await
            .unwrap_or(false)
    }

    /// Reads `key` from L1 when it may be served (see [`Self::may_serve`]).
    async fn get_past_barrier(&self, key: &str) -> Option<Bytes> {
        if !self.is_ready() {
            return None;
        }
        let entry = self.l1.get(key)?;
        if !self.may_serve().await {
            return None;
        }
        self.still_good(key, entry)
    }
}
