//! A randomized stress test of the whole read/write path against a real Redis and a real
//! database: many readers and versioned writers on a few products for a couple of
//! seconds. No reader may ever see a version older than one it already saw, or older than
//! a write that returned before its read began; after quiescence every cached value
//! equals its database row.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use cache_service::{CacheConfig, CacheService};
use integration_tests::fixtures::{Fixture, create_products, id, price_patch};
use product_service::ProductService;

const PRODUCTS: usize = 4;
const WRITERS: usize = 4;
const READERS: usize = 12;
const RUN_FOR: Duration = Duration::from_secs(2);

/// What every writer and reader task shares.
#[derive(Clone)]
struct Shared {
    service: ProductService,
    ids: Arc<Vec<i64>>,
    /// Per product: the highest version any write has returned so far.
    returned: Arc<Vec<AtomicI64>>,
    stop: Arc<AtomicBool>,
}

async fn readers_never_go_back_in_time(f: Fixture) {
    // The relay runs, as in every server: it is what keeps reads off the cache after an
    // invalidation that failed (a Redis timeout under load) until the owed one is
    // replayed. Without it a stale entry may be served once the breaker's cool-down ends,
    // which this test once caught as "read v28 after having read v29" on a loaded machine.
    let relay = f.spawn_relay_polling(Duration::from_millis(50));
    relay.first_pass().await;
    let ids = create_products(&f.service, "STRESS", PRODUCTS, 1).await;
    let shared = Shared {
        service: f.service.clone(),
        ids: Arc::new(ids),
        returned: Arc::new((0..PRODUCTS).map(|_| AtomicI64::new(1)).collect()),
        stop: Arc::new(AtomicBool::new(false)),
    };
    let ids = shared.ids.clone();

    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !shared.stop.load(Ordering::Relaxed) {
                let slot = rand::random_range(0..PRODUCTS);
                let price = (w as i64) * 1_000_000 + n as i64;
                let written = shared
                    .service
                    .patch(id(shared.ids[slot]), price_patch(price), None)
                    .await
                    .expect("patch");
                shared.returned[slot].fetch_max(written.version, Ordering::SeqCst);
                n += 1;
            }
            n
        }));
    }
    for _ in 0..READERS {
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = [0i64; PRODUCTS];
            let mut reads = 0u64;
            while !shared.stop.load(Ordering::Relaxed) {
                let slot = rand::random_range(0..PRODUCTS);
                let floor = shared.returned[slot].load(Ordering::SeqCst);
                let read = shared
                    .service
                    .find_by_id(id(shared.ids[slot]))
                    .await
                    .expect("read");
                assert!(
                    read.version >= floor,
                    "read v{} after a write of v{floor} had returned",
                    read.version
                );
                assert!(
                    read.version >= seen[slot],
                    "read v{} after having read v{}",
                    read.version,
                    seen[slot]
                );
                seen[slot] = read.version;
                reads += 1;
            }
            reads
        }));
    }
    tokio::time::sleep(RUN_FOR).await;
    shared.stop.store(true, Ordering::Relaxed);
    let mut counts = Vec::new();
    for task in tasks {
        counts.push(task.await.expect("no assertion failed in a task"));
    }
    let writes: u64 = counts[..WRITERS].iter().sum();
    let reads: u64 = counts[WRITERS..].iter().sum();
    println!("stress: {writes} writes and {reads} reads on {PRODUCTS} products in {RUN_FOR:?}");
    assert!(writes + reads > 100, "the stress test did some work");

    // Quiescence: what the cache serves is what the database holds.
    let truth = ProductService::new(
        product_service::connect(&f.database_url)
            .await
            .expect("second connection"),
        CacheService::in_memory(CacheConfig::with_prefix("truth"), 100).expect("memory cache"),
    )
    .await
    .expect("service");
    for product in ids.iter() {
        let cached = f.read(*product).await;
        let again = f.read(*product).await;
        let row = truth.find_by_id(id(*product)).await.expect("read the row");
        assert!(f.is_cached(*product).await, "the product is cached");
        assert_eq!(cached, row, "the cached value equals the database row");
        assert_eq!(again, row);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_never_go_back_in_time_on_sqlite() {
    if let Some(f) = Fixture::sqlite("stress_sqlite").await {
        readers_never_go_back_in_time(f).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_never_go_back_in_time_on_postgres() {
    if let Some(f) = Fixture::postgres("stress_postgres").await {
        readers_never_go_back_in_time(f).await;
    }
}
