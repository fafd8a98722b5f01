//! The near cache (L1 kept coherent by Redis client tracking), each race made to happen
//! on a real Redis: an invalidation landing during an L1 fill, a push racing a barrier's
//! reply, the tracking connection lost and back, a flush, and two instances in a storm.
//! Every test has its own `redis-server`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cache_service::{
    CacheConfig, CacheKey, CacheService, Cacheable, Invalidation, Namespace, NearCache,
    NearCacheConfig, NearCacheConsistency, RedisConfig,
};
use integration_tests::{RedisServer, redis_server_or_skip, unique_prefix};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

const ITEM: Namespace = Namespace::new("item");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Item {
    version: u64,
}

impl Cacheable for Item {
    fn version(&self) -> u64 {
        self.version
    }
}

/// A service with a near cache, and another without one (a second process's writer).
struct Setup {
    near: NearCache,
    cache: CacheService,
    other: CacheService,
    _redis: RedisServer,
}

/// A near cache over `redis` whose tracking is on, and a service over it.
async fn tracking_near_cache(
    redis: &RedisServer,
    prefix: &str,
    config: &NearCacheConfig,
) -> (NearCache, CacheService) {
    let near = NearCache::connect(&RedisConfig::new(redis.url()), prefix, config)
        .await
        .expect("near cache connects");
    assert!(
        near.wait_until_tracking(Duration::from_secs(5)).await,
        "tracking is on"
    );
    let cache = CacheService::new(Arc::new(near.clone()), CacheConfig::with_prefix(prefix))
        .expect("service");
    (near, cache)
}

impl Setup {
    /// Another process's write of `key`'s row, now at `version`: its invalidation.
    async fn other_writes(&self, key: &CacheKey, version: u64) {
        self.other
            .invalidate(&[Invalidation::at_version(key.clone(), version)])
            .await
            .expect("invalidate");
    }
}

async fn setup(test: &str) -> Option<Setup> {
    setup_with(test, &NearCacheConfig::default()).await
}

async fn setup_with(test: &str, config: &NearCacheConfig) -> Option<Setup> {
    let redis = redis_server_or_skip(test).await?;
    let prefix = unique_prefix(test);
    let (near, cache) = tracking_near_cache(&redis, &prefix, config).await;
    let other = integration_tests::redis_cache(&redis.url(), &prefix).await;
    Some(Setup {
        near,
        cache,
        other,
        _redis: redis,
    })
}

async fn read(cache: &CacheService, key: &CacheKey, version: u64) -> u64 {
    cache
        .get_or_load(key, || async {
            Ok::<_, std::convert::Infallible>(Some(Item { version }))
        })
        .await
        .expect("read")
        .expect("an item")
        .version
}

/// The storm tests' "database": each key's current version, all at 1.
fn versions(keys: u64) -> Arc<Vec<AtomicU64>> {
    Arc::new((0..keys).map(|_| AtomicU64::new(1)).collect())
}

/// Item `k`'s version as `cache` reads it, loading the current one from `db` on a miss.
async fn read_current(cache: &CacheService, db: &[AtomicU64], k: u64) -> u64 {
    let key = cache.key(ITEM, k);
    let load = || async {
        Ok::<_, std::convert::Infallible>(Some(Item {
            version: db[k as usize].load(Ordering::SeqCst),
        }))
    };
    cache
        .get_or_load(&key, load)
        .await
        .expect("read")
        .expect("item")
        .version
}

/// [`setup`], with item 1 at v1 read until L1 holds it (the first read fills Redis, the
/// next ones L1); its key.
async fn setup_with_item_in_l1(test: &str) -> Option<(Setup, CacheKey)> {
    let setup = setup(test).await?;
    let key = setup.cache.key(ITEM, 1);
    for _ in 0..3 {
        assert_eq!(read(&setup.cache, &key, 1).await, 1);
    }
    assert!(setup.near.holds_for_tests(key.as_str()), "L1 holds {key}");
    Some((setup, key))
}

/// [`setup`], with item 1 at v1 in Redis but not yet in L1, and the push its Redis fill
/// caused applied (so the next fill's counters cannot move before a hook); its key.
async fn setup_with_item_in_redis_only(test: &str) -> Option<(Setup, CacheKey)> {
    let setup = setup(test).await?;
    let key = setup.cache.key(ITEM, 1);
    assert_eq!(read(&setup.cache, &key, 1).await, 1);
    assert!(setup.near.barrier_for_tests().await);
    assert!(!setup.near.holds_for_tests(key.as_str()));
    Some((setup, key))
}

/// A read of `key` at v1 on a task of its own, for a test to stop in a hook.
fn spawn_read(setup: &Setup, key: &CacheKey) -> tokio::task::JoinHandle<u64> {
    let (cache, key) = (setup.cache.clone(), key.clone());
    tokio::spawn(async move { read(&cache, &key, 1).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_that_lands_during_an_l1_fill_drops_the_fill() {
    let Some((setup, key)) = setup_with_item_in_redis_only("near_fill_race").await else {
        return;
    };

    // The next read's L1 fill stops between its Redis read (v1) and its insert.
    let (reached, go) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    setup.near.on_fill_for_tests(stop_once(&reached, &go));
    let reader = spawn_read(&setup, &key);
    reach(&reached).await;
    // Another process's write lands now; its push is applied before the fill goes on.
    setup.other_writes(&key, 2).await;
    assert!(setup.near.barrier_for_tests().await);
    go.notify_one();
    assert_eq!(reader.await.expect("reader"), 1, "it read before the write");

    assert!(
        !setup.near.holds_for_tests(key.as_str()),
        "the fill that read before the invalidation was dropped"
    );
    assert_eq!(read(&setup.cache, &key, 2).await, 2);
}

/// Waits until a stopped fill reached its hook; fails instead of hanging if it never does.
async fn reach(reached: &Notify) {
    tokio::time::timeout(Duration::from_secs(10), reached.notified())
        .await
        .expect("the fill reached its hook");
}

/// A hook that stops the first call until `go` is notified (`reached` tells it got
/// there); later calls pass.
fn stop_once(
    reached: &Arc<Notify>,
    go: &Arc<Notify>,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync + 'static
{
    let armed = Arc::new(AtomicBool::new(true));
    let (reached, go) = (reached.clone(), go.clone());
    move || {
        let (armed, reached, go) = (armed.clone(), reached.clone(), go.clone());
        Box::pin(async move {
            if armed.swap(false, Ordering::SeqCst) {
                reached.notify_one();
                go.notified().await;
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_overtaken_by_an_invalidation_is_never_served_while_it_sits_in_l1() {
    let Some((setup, key)) = setup_with_item_in_redis_only("near_fill_overtaken").await else {
        return;
    };

    // The next read's fill (v1) passes its first look at the counters and stops; a write
    // lands and its push is applied; then the fill inserts v1 and stops again before its
    // second look, so v1 sits in L1 although it was invalidated.
    let (before_insert, go_insert) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (inserted, go_on) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    setup
        .near
        .on_fill_for_tests(stop_once(&before_insert, &go_insert));
    setup
        .near
        .after_fill_insert_for_tests(stop_once(&inserted, &go_on));
    let filler = spawn_read(&setup, &key);
    reach(&before_insert).await;
    setup.other_writes(&key, 2).await;
    assert!(setup.near.barrier_for_tests().await);
    go_insert.notify_one();
    reach(&inserted).await;
    assert!(
        setup.near.holds_for_tests(key.as_str()),
        "the overtaken fill is in L1 now"
    );

    // A read that begins after the write returned must not be served v1.
    assert_eq!(read(&setup.cache, &key, 2).await, 2);
    go_on.notify_one();
    assert_eq!(filler.await.expect("filler"), 1, "it read before the write");
    assert!(!setup.near.holds_for_tests(key.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_racing_the_barrier_reply_is_applied_before_the_read_is_served() {
    let Some((setup, key)) = setup_with_item_in_l1("near_push_race").await else {
        return;
    };
    // Pushes now wait in the channel until a barrier drains it.
    assert!(setup.near.apply_pushes_at_once_for_tests(false).await);
    setup.other_writes(&key, 2).await;
    assert!(
        setup.near.holds_for_tests(key.as_str()),
        "the push is not applied yet"
    );

    assert_eq!(
        read(&setup.cache, &key, 2).await,
        2,
        "a read after the write returned sees it"
    );
    assert!(setup.near.apply_pushes_at_once_for_tests(true).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_tracking_connection_empties_l1_and_a_write_in_the_gap_is_not_served() {
    let Some((setup, key)) = setup_with_item_in_l1("near_tracking_lost").await else {
        return;
    };
    let hits = setup.near.stats().hits;

    // The tracking connection (the RESP3 one) is killed, and a write lands while it is
    // gone: its push is lost.
    let clients = setup
        ._redis
        .command(&["CLIENT", "LIST"])
        .expect("CLIENT LIST");
    let tracking = clients
        .lines()
        .find(|line| line.contains("resp=3"))
        .and_then(|line| line.split_whitespace().find_map(|f| f.strip_prefix("id=")))
        .expect("the tracking connection")
        .to_owned();
    setup
        ._redis
        .command(&["CLIENT", "KILL", "ID", &tracking])
        .expect("CLIENT KILL");
    setup.other_writes(&key, 2).await;

    assert_eq!(read(&setup.cache, &key, 2).await, 2, "no read serves v1");
    assert!(
        setup.near.wait_until_tracking(Duration::from_secs(5)).await,
        "tracking is back"
    );
    assert_eq!(read(&setup.cache, &key, 2).await, 2);
    // L1 is in use again.
    for _ in 0..3 {
        assert_eq!(read(&setup.cache, &key, 2).await, 2);
    }
    assert!(setup.near.stats().hits > hits, "L1 serves again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_of_redis_empties_l1() {
    let Some((setup, key)) = setup_with_item_in_l1("near_flush").await else {
        return;
    };

    setup._redis.command(&["FLUSHALL"]).expect("FLUSHALL");

    assert_eq!(
        read(&setup.cache, &key, 3).await,
        3,
        "the entry Redis no longer has is not served from L1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_read_each_others_writes_at_once_in_a_storm() {
    let Some(redis) = redis_server_or_skip("near_two_instances").await else {
        return;
    };
    let prefix = unique_prefix("near_two_instances");
    let mut caches = Vec::new();
    let mut nears = Vec::new();
    for _ in 0..2 {
        let (near, cache) = tracking_near_cache(&redis, &prefix, &NearCacheConfig::default()).await;
        caches.push(cache);
        nears.push(near);
    }
    // The "database": each key's current version.
    const KEYS: u64 = 8;
    let db = versions(KEYS);
    let stale = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for reader in 0..4 {
        let (caches, db, done) = (caches.clone(), db.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let cache = &caches[reader % 2];
            while !done.load(Ordering::SeqCst) {
                for k in 0..KEYS {
                    read_current(cache, &db, k).await;
                }
            }
        }));
    }
    let mut writers = Vec::new();
    for writer in 0..2 {
        let (caches, db, stale) = (caches.clone(), db.clone(), stale.clone());
        writers.push(tokio::spawn(async move {
            let (mine, theirs) = (&caches[writer], &caches[1 - writer]);
            for _ in 0..100 {
                for k in (writer as u64..KEYS).step_by(2) {
                    let version = db[k as usize].fetch_add(1, Ordering::SeqCst) + 1;
                    mine.invalidate(&[Invalidation::at_version(mine.key(ITEM, k), version)])
                        .await
                        .expect("invalidate");
                    let read = read_current(theirs, &db, k).await;
                    if read < version {
                        stale.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    let started = Instant::now();
    integration_tests::end_storm(writers, &done, readers).await;
    assert_eq!(
        stale.load(Ordering::SeqCst),
        0,
        "reads right after another instance's write ({:?})",
        started.elapsed()
    );
    for near in &nears {
        assert!(near.stats().hits > 0, "L1 served reads: {:?}", near.stats());
    }
}

/// Clients of `redis` with tracking on (flag `t` in `CLIENT LIST`).
fn tracking_clients(redis: &RedisServer) -> usize {
    let list = redis.command(&["CLIENT", "LIST"]).expect("CLIENT LIST");
    list.lines()
        .filter(|line| {
            line.split_whitespace()
                .find_map(|field| field.strip_prefix("flags="))
                .is_some_and(|flags| flags.contains('t'))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_closes_the_tracking_connection() {
    let Some(setup) = setup("near_drop").await else {
        return;
    };
    assert_eq!(tracking_clients(&setup._redis), 1);
    let Setup {
        near,
        cache,
        other,
        _redis: redis,
    } = setup;
    let clone = near.clone();
    drop(near);
    drop(cache);
    drop(other);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(tracking_clients(&redis), 1, "a clone still holds it");

    drop(clone);
    let deadline = Instant::now() + Duration::from_secs(5);
    while tracking_clients(&redis) > 0 {
        assert!(
            Instant::now() < deadline,
            "the tracking connection is still open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn bounded(bound: Duration) -> NearCacheConfig {
    NearCacheConfig {
        consistency: NearCacheConsistency::Bounded(bound),
        ..NearCacheConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_mode_reflects_every_write_older_than_its_bound_and_measures_its_staleness() {
    const BOUND: Duration = Duration::from_millis(50);
    const KEYS: u64 = 4;
    let Some(Setup {
        near,
        cache: reader,
        other: writer,
        _redis,
    }) = setup_with("near_bounded", &bounded(BOUND)).await
    else {
        return;
    };
    // The worst case: pushes are applied only by barrier rounds (as if each arrived as
    // late as it may), so only the rounds' timing keeps reads within the bound.
    assert!(near.apply_pushes_at_once_for_tests(false).await);
    // The "database", and when each version's write returned (index: version - 1).
    let db = versions(KEYS);
    let acked: Arc<Vec<std::sync::Mutex<Vec<Instant>>>> = Arc::new(
        (0..KEYS)
            .map(|_| std::sync::Mutex::new(vec![Instant::now()]))
            .collect(),
    );
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (reader, db, acked, done) = (reader.clone(), db.clone(), acked.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            // (reads, stale reads, the longest a stale read began after the write that
            // superseded what it returned)
            let (mut reads, mut stale, mut staleness) = (0u64, 0u64, Duration::ZERO);
            while !done.load(Ordering::SeqCst) {
                for k in 0..KEYS {
                    let began = Instant::now();
                    let version = read_current(&reader, &db, k).await;
                    reads += 1;
                    let acks = acked[k as usize].lock().expect("acks").clone();
                    let newer = acks.get(version as usize).filter(|&&at| at < began);
                    if let Some(&superseded) = newer {
                        stale += 1;
                        staleness = staleness.max(began - superseded);
                    }
                }
                // Reads served from L1 never wait: let the other tasks run.
                tokio::task::yield_now().await;
            }
            (reads, stale, staleness)
        }));
    }
    for _ in 0..100 {
        for k in 0..KEYS {
            let version = db[k as usize].fetch_add(1, Ordering::SeqCst) + 1;
            writer
                .invalidate(&[Invalidation::at_version(writer.key(ITEM, k), version)])
                .await
                .expect("invalidate");
            acked[k as usize].lock().expect("acks").push(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Past the bound, the last writes are read.
    tokio::time::sleep(BOUND).await;
    for k in 0..KEYS {
        let version = read_current(&reader, &db, k).await;
        assert_eq!(version, db[k as usize].load(Ordering::SeqCst));
    }
    done.store(true, Ordering::SeqCst);
    let (mut reads, mut stale, mut staleness) = (0, 0, Duration::ZERO);
    for task in readers {
        let (r, s, st) = task.await.expect("reader");
        (reads, stale, staleness) = (reads + r, stale + s, staleness.max(st));
    }
    println!(
        "bounded near cache (bound {BOUND:?}): {reads} reads, {stale} older than a write \
         that returned before they began, the longest by {staleness:?}; {:?}",
        near.stats()
    );
    assert!(
        staleness <= BOUND,
        "a read returned what a write {staleness:?} older than it had replaced"
    );
    assert!(near.stats().hits > 0, "L1 served reads: {:?}", near.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_mode_stops_serving_l1_once_its_newest_round_is_older_than_the_bound() {
    const BOUND: Duration = Duration::from_millis(50);
    let Some(Setup {
        near,
        cache,
        other: writer,
        _redis: mut redis,
    }) = setup_with("near_bounded_silent", &bounded(BOUND)).await
    else {
        return;
    };
    let key = cache.key(ITEM, 1);
    for _ in 0..3 {
        assert_eq!(read(&cache, &key, 1).await, 1);
    }
    assert!(near.holds_for_tests(key.as_str()));

    // The write's push waits for a round that cannot come: Redis stops answering.
    assert!(near.apply_pushes_at_once_for_tests(false).await);
    writer
        .invalidate(&[Invalidation::at_version(key.clone(), 2)])
        .await
        .expect("invalidate");
    redis.freeze().expect("freeze");
    tokio::time::sleep(BOUND * 2).await;
    assert!(near.holds_for_tests(key.as_str()), "L1 still holds v1");
    assert_eq!(
        read(&cache, &key, 2).await,
        2,
        "a copy is not served once no round has passed within the bound"
    );
    redis.thaw().expect("thaw");
}
