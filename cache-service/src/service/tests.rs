use super::*;

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Duration;

use bytes::Bytes;

use super::read::jittered;
use crate::backend::{FillOutcome, Lease, Lookup};
use crate::error::CacheError;

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
    async fn get_or_lease(&self, lease: Lease<'_>, ttl: Duration) -> Result<Lookup> {
        self.store.get_or_lease(lease, ttl).await
    }
    async fn fill(&self, lease: Lease<'_>, entry: &[u8], ttl: Duration) -> Result<FillOutcome> {
        self.store.fill(lease, entry, ttl).await
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
    let cache = CacheService::new(backend.clone(), CacheConfig::with_prefix("t")).expect("cache");
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
