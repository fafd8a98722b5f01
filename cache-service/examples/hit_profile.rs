//! A fixed amount of hit-path work, for profilers: `N` reads of one warm key, either raw
//! `GET`s on the pool, `CacheService::get_or_load` hits or `get_or_load_json` hits (see `docs/BENCHMARKS.md`).
//!
//! ```sh
//! cargo build --release -p cache-service --example hit_profile
//! valgrind --tool=callgrind --callgrind-out-file=hit.out \
//!   target/release/examples/hit_profile hit 20000
//! valgrind --tool=callgrind --callgrind-out-file=raw.out \
//!   target/release/examples/hit_profile raw 20000
//! valgrind --tool=callgrind --callgrind-out-file=json.out \
//!   target/release/examples/hit_profile json 20000
//! callgrind_annotate --inclusive=yes hit.out | head -60
//! ```
//!
//! Starts a private `redis-server` (or uses `BENCH_REDIS_URL`). Runs on a current-thread
//! runtime so that instruction counts are comparable run to run.

#[path = "../benches/support/mod.rs"]
mod support;

use std::time::Instant;

use bytes::Bytes;
use cache_service::CacheError;
use fred::prelude::*;
use support::{Item, WarmKey};

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "hit".to_owned());
    let n: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let redis = support::Redis::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let WarmKey { cache, pool, key } = WarmKey::new(redis.url(), "profile").await;
        let started = Instant::now();
        for _ in 0..n {
            match mode.as_str() {
                "raw" => {
                    let bytes: Option<Bytes> = pool.next().get(key.as_str()).await.expect("GET");
                    assert!(std::hint::black_box(bytes).is_some());
                }
                "json" => {
                    let json = cache
                        .get_or_load_json(&key, || async {
                            Err::<Option<Item>, _>(CacheError::Backend("the key is warm".into()))
                        })
                        .await
                        .expect("hit");
                    assert!(std::hint::black_box(json).is_some());
                }
                _ => {
                    let value: Option<Item> = cache
                        .get_or_load(&key, || async { Err("the key is warm") })
                        .await
                        .expect("hit");
                    assert!(std::hint::black_box(value).is_some());
                }
            }
        }
        let elapsed = started.elapsed();
        eprintln!(
            "{mode}: {n} reads, {:.1} µs each",
            elapsed.as_secs_f64() * 1e6 / n as f64
        );
    });
}
