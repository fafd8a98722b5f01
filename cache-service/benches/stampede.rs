//! Stampede: 1000 concurrent cold reads of one key. What matters is how many times the
//! loader (the database read) runs; the time until every reader has its value is
//! reported too.
//!
//! Variants:
//! - `one_instance`: 1000 readers on one [`CacheService`] (single-flight, then the lease).
//!   Target: 1 load. The benchmark fails if it ever sees more (invariant 7).
//! - `two_instances`: 500 readers on each of two services with separate connection
//!   pools, as two server processes would be: the second instance finds the first's
//!   lease and waits for its fill. Expected: 1, at most 2.
//! - `naive`: plain cache-aside (`GET`; on a miss, load and `SET`), for contrast.
//!
//! The loader sleeps [`LOAD_TIME`] to stand for a database read.
//!
//! `cargo bench -p cache-service --bench stampede`; smoke: add `-- --test`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_service::{CacheConfig, CacheService, Cacheable, Namespace, RedisBackend, RedisConfig};
use criterion::{BenchmarkId, Criterion, SamplingMode};
use fred::prelude::*;
use serde::{Deserialize, Serialize};
use support::{Redis, median};

const ITEM: Namespace = Namespace::new("item");
const READERS: usize = 1000;
/// How long the simulated database read takes.
const LOAD_TIME: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Item {
    id: u64,
    name: String,
    version: u64,
}

impl Cacheable for Item {
    fn version(&self) -> u64 {
        self.version
    }
}

support::variants! {
    OneInstance => "one_instance",
    TwoInstances => "two_instances",
    Naive => "naive",
}

#[derive(Debug, Clone)]
struct Fixture {
    a: CacheService,
    b: CacheService,
    pool: Pool,
    loads: Arc<AtomicU64>,
    next_id: Arc<AtomicU64>,
}

impl Fixture {
    async fn new(url: &str) -> Self {
        let prefix = support::unique_prefix("stampede");
        let connect = || async {
            let backend = RedisBackend::connect(&RedisConfig::new(url))
                .await
                .expect("bench: Redis");
            let pool = backend.pool().expect("a standalone Redis").clone();
            let cache = CacheService::new(Arc::new(backend), CacheConfig::with_prefix(&prefix))
                .expect("bench: cache");
            (cache, pool)
        };
        let (a, pool) = connect().await;
        let (b, _) = connect().await;
        Self {
            a,
            b,
            pool,
            loads: Arc::default(),
            next_id: Arc::default(),
        }
    }

    /// The loader: counts, waits like a database read, returns the row.
    async fn load(loads: &AtomicU64, id: u64) -> Result<Option<Item>, ()> {
        loads.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(LOAD_TIME).await;
        Ok(Some(Item {
            id,
            name: format!("item {id}"),
            version: 1,
        }))
    }

    /// One stampede on a fresh (cold) key: returns the wall time until every reader has
    /// the value, and the number of loads.
    async fn stampede(&self, variant: Variant) -> (Duration, u64) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let before = self.loads.load(Ordering::Relaxed);
        let barrier = Arc::new(tokio::sync::Barrier::new(READERS + 1));
        let tasks: Vec<_> = (0..READERS)
            .map(|i| {
                let fixture = self.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    let value = match variant {
                        Variant::OneInstance => fixture.read(&fixture.a, id).await,
                        Variant::TwoInstances if i % 2 == 0 => fixture.read(&fixture.a, id).await,
                        Variant::TwoInstances => fixture.read(&fixture.b, id).await,
                        Variant::Naive => fixture.naive_read(id).await,
                    };
                    assert_eq!(value.map(|v| v.id), Some(id), "every reader gets the row");
                })
            })
            .collect();
        barrier.wait().await;
        let started = Instant::now();
        for task in tasks {
            task.await.expect("bench: reader");
        }
        let elapsed = started.elapsed();
        (elapsed, self.loads.load(Ordering::Relaxed) - before)
    }

    async fn read(&self, cache: &CacheService, id: u64) -> Option<Item> {
        let key = cache.key(ITEM, id);
        cache
            .get_or_load(&key, || Self::load(&self.loads, id))
            .await
            .expect("bench: read")
    }

    /// Plain cache-aside: GET; on a miss, load and SET. No lease, no single-flight.
    async fn naive_read(&self, id: u64) -> Option<Item> {
        let key = format!("{}:naive", self.a.key(ITEM, id));
        let client = self.pool.next();
        let cached: Option<Bytes> = client.get(&key).await.expect("bench: GET");
        if let Some(bytes) = cached {
            return serde_json::from_slice(&bytes).expect("bench: JSON");
        }
        let value = Self::load(&self.loads, id).await.expect("bench: load");
        let json = serde_json::to_vec(&value).expect("bench: JSON");
        let _: () = client
            .set(
                &key,
                json.as_slice(),
                Some(Expiration::EX(300)),
                None,
                false,
            )
            .await
            .expect("bench: SET");
        value
    }
}

fn criterion_benches(c: &mut Criterion, rt: &tokio::runtime::Runtime, fixture: &Fixture) {
    let mut group = c.benchmark_group(format!("stampede/{READERS}_cold_readers"));
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    for variant in VARIANTS {
        group.bench_function(BenchmarkId::from_parameter(variant.name()), |b| {
            b.to_async(rt).iter_custom(|iters| {
                support::summed(iters, move || async move {
                    let (elapsed, loads) = fixture.stampede(variant).await;
                    check(variant, loads);
                    elapsed
                })
            });
        });
    }
    group.finish();
}

/// Invariant 7: one instance runs the loader once, whatever the concurrency.
fn check(variant: Variant, loads: u64) {
    if variant == Variant::OneInstance {
        assert_eq!(
            loads, 1,
            "{READERS} concurrent cold reads on one instance ran the loader {loads} times"
        );
    }
}

fn counted(rt: &tokio::runtime::Runtime, fixture: &Fixture, smoke: bool) {
    let rounds = if smoke { 2 } else { 21 };
    let mut loads = vec![Vec::new(); VARIANTS.len()];
    let mut times = vec![Vec::new(); VARIANTS.len()];
    rt.block_on(async {
        for round in 0..rounds {
            for i in support::rotated(round, VARIANTS.len()) {
                let (elapsed, n) = fixture.stampede(VARIANTS[i]).await;
                check(VARIANTS[i], n);
                loads[i].push(n as f64);
                times[i].push(elapsed.as_secs_f64() * 1e3);
            }
        }
    });
    let mut out = format!(
        "\n## stampede {} (machine: {}; {READERS} concurrent cold readers of one key, loader {} ms, {rounds} rounds each)\n\n\
         | variant | loader calls: median | max | time until all {READERS} have the value: median (ms) |\n|---|---|---|---|\n",
        if smoke { "SMOKE" } else { "run" },
        support::machine(),
        LOAD_TIME.as_millis(),
    );
    for (i, variant) in VARIANTS.iter().enumerate() {
        out.push_str(&format!(
            "| `{}` | {} | {} | {:.1} |\n",
            variant.name(),
            median(&mut loads[i].clone()),
            loads[i].iter().copied().fold(0.0, f64::max),
            median(&mut times[i].clone()),
        ));
    }
    out.push_str(&format!(
        "\ntarget: 1 loader call per instance: one_instance max {} (PASS), two_instances max {}\n",
        loads[0].iter().copied().fold(0.0, f64::max),
        loads[1].iter().copied().fold(0.0, f64::max),
    ));
    println!("{out}");
    support::write_result("stampede", &out);
}

fn main() {
    support::run(
        Redis::start(),
        async |url, _| Fixture::new(url).await,
        criterion_benches,
        counted,
    );
}
