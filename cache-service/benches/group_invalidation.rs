//! Group invalidation cost: [`CacheService::invalidate_group`] (one `INCR` of the group's
//! generation) against the naive pattern delete of the same pages (`SCAN MATCH … COUNT
//! 1000` over the whole keyspace, `DEL` of what matched: what a `delete_pattern` helper
//! does), with 10^3, 10^4, 10^5 and 10^6 unrelated keys in Redis.
//!
//! Each size lives in its own Redis database (`SELECT 1..=4`) of one private server, so
//! every round measures all sizes back to back and the ratios compare measurements
//! taken together. Unrelated keys are made with `DEBUG POPULATE` (100-byte values).
//! Each database also holds [`PAGES`] list pages; the pattern delete deletes exactly
//! those (they are written again, untimed, before each pass).
//!
//! Targets: `invalidate_group` flat within 2× from 10^3 to 10^6 keys; at 10^6 keys at
//! least 1000× faster than SCAN+DEL.
//!
//! Always runs against a private `redis-server` (it fills a million keys): it ignores
//! `BENCH_REDIS_URL`.
//!
//! `cargo bench -p cache-service --bench group_invalidation`; smoke: add `-- --test`.

mod support;

use std::time::{Duration, Instant};

use cache_service::{CacheConfig, CacheService, Cacheable, Group, RedisConfig};
use criterion::{BenchmarkId, Criterion, SamplingMode};
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use support::{Redis, median};

const LIST: Group = Group::new("product_list");
/// List pages in the group (and deleted by each SCAN+DEL pass).
const PAGES: usize = 100;
/// `SCAN … COUNT`: a generous page size (Redis' default, 10, would be ~100× slower).
const SCAN_COUNT: u32 = 1000;
const PREFIX: &str = "shop";

/// A list page (about 2 KB of JSON).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Page {
    items: Vec<String>,
}

impl Cacheable for Page {
    fn version(&self) -> u64 {
        0
    }
}

/// One database of the server, holding `size` unrelated keys and the group's pages.
#[derive(Debug)]
struct SizedDb {
    size: u64,
    cache: CacheService,
    client: Client,
    pattern: String,
}

impl SizedDb {
    async fn new(url: &str, db: usize, size: u64) -> Self {
        let url = format!("{url}/{db}");
        let client = Builder::from_config(Config::from_url(&url).expect("bench: URL"))
            .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(60))
            .build()
            .expect("bench: client");
        client.init().await.expect("bench: connect");
        let _: Value = client
            .custom(
                CustomCommand::new_static("DEBUG", ClusterHash::FirstKey, false),
                vec![
                    Value::from("POPULATE"),
                    Value::from(size as i64),
                    Value::from("unrelated"),
                    Value::from(100),
                ],
            )
            .await
            .expect("bench: DEBUG POPULATE");
        let cache = CacheService::connect_redis(
            &RedisConfig::new(url.clone()),
            CacheConfig::with_prefix(PREFIX),
        )
        .await
        .expect("bench: cache");
        // The group's pages, as the service stores them.
        for page in 1..=PAGES {
            let _: Option<Page> = cache
                .get_or_load_in(LIST, format!("page={page}&per_page=20"), || async {
                    Ok::<_, ()>(Some(Page {
                        items: vec!["x".repeat(90); 20],
                    }))
                })
                .await
                .expect("bench: fill");
        }
        let sized = Self {
            size,
            cache,
            client,
            pattern: format!("{PREFIX}:{}:*", LIST.namespace().name()),
        };
        let keys: u64 = sized.client.dbsize().await.expect("bench: DBSIZE");
        assert!(keys >= size, "db {db}: {keys} keys, expected ≥ {size}");
        sized
    }

    async fn bump(&self) -> Duration {
        let started = Instant::now();
        self.cache
            .invalidate_group(LIST)
            .await
            .expect("bench: invalidate_group");
        started.elapsed()
    }

    /// Writes the [`PAGES`] pages again (untimed), then times one SCAN+DEL pass.
    async fn scan_del(&self) -> Duration {
        let pages: Vec<(String, Value)> = (1..=PAGES)
            .map(|p| {
                (
                    format!(
                        "{PREFIX}:{}:{{g1:page={p}&per_page=20}}",
                        LIST.namespace().name()
                    ),
                    Value::from("x".repeat(2_000)),
                )
            })
            .collect();
        let _: () = self.client.mset(pages).await.expect("bench: MSET");
        let started = Instant::now();
        let deleted = self.pattern_delete().await;
        let elapsed = started.elapsed();
        assert!(
            deleted >= PAGES as u64,
            "deleted {deleted} of {PAGES} pages"
        );
        elapsed
    }

    /// The naive `delete_pattern`: SCAN the whole keyspace, DEL every page that matched.
    async fn pattern_delete(&self) -> u64 {
        let mut cursor = "0".to_owned();
        let mut deleted = 0;
        loop {
            let (next, keys): (String, Vec<String>) = self
                .client
                .scan_page(cursor, self.pattern.as_str(), Some(SCAN_COUNT), None)
                .await
                .expect("bench: SCAN");
            if !keys.is_empty() {
                let n: u64 = self.client.del(keys).await.expect("bench: DEL");
                deleted += n;
            }
            if next == "0" {
                return deleted;
            }
            cursor = next;
        }
    }
}

fn label(size: u64) -> String {
    format!("1e{}", size.ilog10())
}

fn criterion_benches(c: &mut Criterion, rt: &tokio::runtime::Runtime, dbs: &[SizedDb]) {
    let mut group = c.benchmark_group("group_invalidation/invalidate_group");
    for db in dbs {
        group.bench_function(BenchmarkId::from_parameter(label(db.size)), |b| {
            b.to_async(rt)
                .iter_custom(|iters| support::summed(iters, || db.bump()));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("group_invalidation/scan_del");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    for db in dbs {
        // ~1 s per pass at 10^6 keys: give criterion time for its ten samples.
        let seconds = if db.size <= 10_000 {
            2
        } else if db.size <= 100_000 {
            5
        } else {
            20
        };
        group.measurement_time(Duration::from_secs(seconds));
        group.bench_function(BenchmarkId::from_parameter(label(db.size)), |b| {
            b.to_async(rt)
                .iter_custom(|iters| support::summed(iters, || db.scan_del()));
        });
    }
    group.finish();
}

/// All sizes back to back in every round; ratios are medians of per-round ratios.
fn interleaved(rt: &tokio::runtime::Runtime, dbs: &[SizedDb], smoke: bool) {
    let (rounds, bumps) = if smoke { (1, 5_u32) } else { (9, 200) };
    let n = dbs.len();
    let mut bump = vec![Vec::new(); n];
    let mut scan = vec![Vec::new(); n];
    rt.block_on(async {
        for db in dbs {
            db.bump().await;
        }
        for round in 0..rounds {
            for i in support::rotated(round, n) {
                let db = &dbs[i];
                let total = support::summed(u64::from(bumps), || db.bump()).await;
                bump[i].push(total.as_secs_f64() * 1e6 / f64::from(bumps));
            }
            for i in support::rotated(round, n) {
                scan[i].push(dbs[i].scan_del().await.as_secs_f64() * 1e6);
            }
        }
    });
    let per_round = |a: &[f64], b: &[f64]| {
        let mut r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
        median(&mut r)
    };
    let mut out = format!(
        "\n## group_invalidation {} (machine: {}; {rounds} interleaved rounds, {PAGES} pages, SCAN COUNT {SCAN_COUNT})\n\n\
         | unrelated keys | invalidate_group median (µs) | vs 10^3 (median of per-round ratios) | SCAN+DEL median (ms) | SCAN+DEL / invalidate_group |\n|---|---|---|---|---|\n",
        if smoke { "SMOKE" } else { "run" },
        support::machine()
    );
    for i in 0..n {
        out.push_str(&format!(
            "| {} | {:.1} | {:.2} | {:.2} | {:.0} |\n",
            label(dbs[i].size),
            median(&mut bump[i].clone()),
            per_round(&bump[i], &bump[0]),
            median(&mut scan[i].clone()) / 1e3,
            per_round(&scan[i], &bump[i]),
        ));
    }
    if smoke {
        println!("{out}");
        support::write_result("group_invalidation", &out);
        return; // tiny sizes on a debug build: the targets mean nothing
    }
    let flat = (0..n)
        .map(|i| per_round(&bump[i], &bump[0]))
        .fold(0.0, f64::max);
    let last = per_round(&scan[n - 1], &bump[n - 1]);
    out.push_str(&format!(
        "\ntargets: invalidate_group flat within 2x: worst {flat:.2} ({}); SCAN+DEL / invalidate_group at {}: {last:.0} (≥ 1000: {})\n",
        if flat <= 2.0 { "PASS" } else { "MISS" },
        label(dbs[n - 1].size),
        if last >= 1000.0 { "PASS" } else { "MISS" },
    ));
    println!("{out}");
    support::write_result("group_invalidation", &out);
}

fn main() {
    // Private server only: this benchmark fills a million keys into databases 1..=4.
    if std::env::var_os(support::BENCH_REDIS_URL).is_some() {
        eprintln!(
            "bench: group_invalidation ignores BENCH_REDIS_URL and starts its own redis-server"
        );
    }
    let redis = Redis::start_private();
    assert!(redis.is_private());
    support::run(
        redis,
        async |url, smoke| {
            let sizes: &[u64] = if smoke {
                &[1_000, 10_000]
            } else {
                &[1_000, 10_000, 100_000, 1_000_000]
            };
            let mut dbs = Vec::new();
            for (i, size) in sizes.iter().enumerate() {
                dbs.push(SizedDb::new(url, i + 1, *size).await);
            }
            dbs
        },
        |c, rt, dbs| criterion_benches(c, rt, dbs),
        |rt, dbs, smoke| interleaved(rt, dbs, smoke),
    );
}
