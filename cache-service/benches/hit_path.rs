//! Hit-path overhead: a cache hit through [`CacheService`] against a raw `fred` `GET`
//! of the same bytes, on the same Redis and the same connection pool.
//!
//! Variants:
//! - `raw_get`: `GET key` on the pool, bytes returned, nothing decoded: the physical
//!   limit of one Redis round trip through `fred`.
//! - `raw_get_decode`: the same `GET` plus the JSON decode into the struct: the naive
//!   cache-aside read.
//! - `get_or_load_hit`: `CacheService::get_or_load` on a warm key, decoded into the
//!   struct (breaker check, `GET` with fail-fast options, reconnection check, header
//!   and JSON decode, metrics).
//! - `get_or_load_json_hit`: `CacheService::get_or_load_json` on the same key: the
//!   stored JSON as bytes, what a server sends on (everything above but the decode).
//!
//! Sequentially (latency per operation) and with 64 concurrent tasks (throughput).
//! Targets: hit ≤ 1.15 × raw GET latency; ≥ 0.9 × raw GET throughput at 64 tasks. The
//! verdict is on the JSON hit, which returns bytes as the raw `GET` does; the decoded
//! hit is compared with the naive read, which decodes too.
//!
//! `cargo bench -p cache-service --bench hit_path`; smoke: add `-- --test`.

mod support;

use std::hint::black_box;

use bytes::Bytes;
use cache_service::CacheError;
use criterion::{BenchmarkId, Criterion, Throughput};
use fred::prelude::*;
use support::{Item, Operation, Ops, Redis, Summary, WarmKey};

/// Concurrent tasks of the throughput variants.
const TASKS: usize = 64;

/// Everything one variant needs, cheap to clone into tasks.
type Fixture = WarmKey;

support::variants! {
    RawGet => "raw_get",
    RawGetDecode => "raw_get_decode",
    Hit => "get_or_load_hit",
    JsonHit => "get_or_load_json_hit",
}

/// Indexes in [`VARIANTS`].
const RAW_DECODE: usize = 1;
const HIT: usize = 2;
const JSON_HIT: usize = 3;

impl Fixture {
    /// The warm key, read once by every variant to check that each finds the value.
    async fn warmed(url: &str) -> Self {
        let fixture = WarmKey::new(url, "hit").await;
        for variant in VARIANTS {
            fixture.op(variant).await;
        }
        fixture
    }

    /// `GET` of the key on the pool, as `fred` hands it back.
    async fn raw_get(&self) -> Option<Bytes> {
        self.pool
            .next()
            .get(self.key.as_str())
            .await
            .expect("bench: GET")
    }
}

impl Operation for Fixture {
    type Variant = Variant;
    const TASKS: usize = TASKS;

    /// One read; panics if it does not find the warm value (a benchmark of misses would
    /// be meaningless).
    async fn op(&self, variant: Variant) {
        match variant {
            Variant::RawGet => {
                assert!(black_box(self.raw_get().await).is_some(), "the key is warm");
            }
            Variant::RawGetDecode => {
                black_box(decode(self.raw_get().await));
            }
            Variant::Hit => {
                let value: Option<Item> = self
                    .cache
                    .get_or_load(&self.key, || async {
                        Err("the key is warm: the loader must not run")
                    })
                    .await
                    .expect("bench: hit");
                assert!(black_box(value).is_some());
            }
            Variant::JsonHit => {
                let json = self
                    .cache
                    .get_or_load_json(&self.key, || async {
                        Err::<Option<Item>, _>(CacheError::Backend(
                            "the key is warm: the loader must not run".into(),
                        ))
                    })
                    .await
                    .expect("bench: hit");
                assert!(black_box(json).is_some());
            }
        }
    }
}

fn decode(bytes: Option<Bytes>) -> Item {
    let bytes = bytes.expect("the key is warm");
    match cache_service::codec::decode(&bytes) {
        Some(cache_service::codec::Entry::Present { payload, .. }) => {
            serde_json::from_slice(payload).expect("bench: JSON")
        }
        _ => panic!("the key holds a present entry"),
    }
}

fn criterion_benches(c: &mut Criterion, rt: &tokio::runtime::Runtime, fixture: &Fixture) {
    let mut group = c.benchmark_group("hit_path/sequential");
    group.throughput(Throughput::Elements(1));
    for variant in VARIANTS {
        group.bench_function(BenchmarkId::from_parameter(variant.name()), |b| {
            b.to_async(rt)
                .iter_custom(|iters| support::sequential(fixture, variant, iters));
        });
    }
    group.finish();

    let mut group = c.benchmark_group(format!("hit_path/concurrent{TASKS}"));
    group.throughput(Throughput::Elements(1));
    for variant in VARIANTS {
        group.bench_function(BenchmarkId::from_parameter(variant.name()), |b| {
            b.to_async(rt).iter_custom(|iters| async move {
                // At least a few operations per task, so spawning is not what is timed.
                let n = iters.max(TASKS as u64 * 8);
                let elapsed = support::concurrent(fixture, variant, n).await;
                elapsed.mul_f64(iters as f64 / n as f64)
            });
        });
    }
    group.finish();
}

/// The ratios: every variant in alternating batches, rotated each round.
fn interleaved(rt: &tokio::runtime::Runtime, fixture: &Fixture, smoke: bool) {
    let (rounds, seq_ops, conc_ops) = if smoke {
        (1, 20, TASKS as u64 * 2)
    } else {
        (31, 1_500, 32_000)
    };
    let names: Vec<&str> = VARIANTS.iter().map(|v| v.name()).collect();
    let mut latency = Summary::new("hit path, sequential: latency", "µs/op", &names);
    let mut throughput = Summary::new(
        format!("hit path, {TASKS} concurrent tasks: throughput"),
        "ops/s",
        &names,
    );
    rt.block_on(async {
        // Warm the connections and the allocator.
        support::sequential(fixture, Variant::Hit, seq_ops / 4).await;
        support::concurrent(fixture, Variant::Hit, conc_ops / 4).await;
        let ops = Ops {
            rounds,
            sequential: seq_ops,
            concurrent: conc_ops,
        };
        support::latency_and_throughput(fixture, &VARIANTS, ops, &mut latency, &mut throughput)
            .await;
    });
    support::write_result(
        "hit_path",
        &format!(
            "\n## hit_path {} (machine: {})\n",
            if smoke { "SMOKE" } else { "run" },
            support::machine()
        ),
    );
    latency.print(0, "hit_path");
    throughput.print(0, "hit_path");
    if smoke {
        return; // tiny sizes on a debug build: the ratios mean nothing
    }
    let lat = latency.ratio(JSON_HIT, 0);
    let thr = throughput.ratio(JSON_HIT, 0);
    let verdict = format!(
        "targets: JSON hit/raw GET latency {lat:.3} (≤ 1.15: {}); JSON hit/raw GET throughput at {TASKS} tasks {thr:.3} (≥ 0.90: {})\n\
         decoded hit/naive GET+decode: latency {:.3}, throughput {:.3}\n",
        pass(lat <= 1.15),
        pass(thr >= 0.90),
        latency.ratio(HIT, RAW_DECODE),
        throughput.ratio(HIT, RAW_DECODE),
    );
    println!("{verdict}");
    support::write_result("hit_path", &verdict);
}

fn pass(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

fn main() {
    support::run(
        Redis::start(),
        async |url, _| Fixture::warmed(url).await,
        criterion_benches,
        interleaved,
    );
}
