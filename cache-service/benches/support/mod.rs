//! Shared harness of the `cache-service` benchmarks (see `docs/BENCHMARKS.md`).
//!
//! - [`Redis`]: a private `redis-server` on a free port of 127.0.0.1, without persistence,
//!   killed on drop; or the server named by `BENCH_REDIS_URL`, which the benchmarks only
//!   touch under their own key prefix and never flush.
//! - [`smoke`]: whether this run only checks that the benchmarks work (`cargo bench --
//!   --test`, `cargo test --benches`): sizes and rounds shrink to almost nothing.
//! - [`Summary`]: the interleaved A/B measurement behind every ratio in the document.
//!   The machine is shared and noisy, so the variants being compared are measured in
//!   alternating batches within one run, and the reported ratio is the median of the
//!   per-round ratios rather than a ratio of two medians taken minutes apart.
//! - [`run`]: a benchmark binary's course (fixture, criterion, interleaved summary);
//!   [`timed`], [`summed`] and [`timed_tasks`]: the timing loops the benchmarks share;
//!   [`rotated`]: the order of the variants in a round; [`Operation`]: a fixture timed
//!   [`sequential`]ly and [`concurrent`]ly, and [`latency_and_throughput`], its
//!   interleaved rounds;
//!   [`Item`]: a value shaped like a product, and [`WarmKey`]: a cache whose key holds it;
//!   [`variants!`]: a benchmark's variants, declared once.

#![allow(dead_code)] // each bench binary uses a different part of the harness

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_service::fred::prelude::Pool;
use cache_service::{
    CacheConfig, CacheKey, CacheService, Cacheable, Namespace, RedisBackend, RedisConfig,
};
use criterion::Criterion;
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;

/// Declares a benchmark's variants in one list: the `Variant` enum, `VARIANTS` (every
/// variant, in the order a round rotates from) and `Variant::name` (its column in the
/// report), so no variant can be left out of the rounds or the report.
#[allow(unused_macros)] // not every bench binary has variants
macro_rules! variants {
    ($($variant:ident => $name:literal),+ $(,)?) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Variant {
            $($variant),+
        }

        const VARIANTS: [Variant; [$($name),+].len()] = [$(Variant::$variant),+];

        impl Variant {
            fn name(self) -> &'static str {
                match self {
                    $(Variant::$variant => $name),+
                }
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use variants;

/// Environment variable naming a Redis to use instead of a private server.
pub const BENCH_REDIS_URL: &str = "BENCH_REDIS_URL";

/// Whether this is a smoke run: criterion's test mode (`--test`, or run by `cargo test`
/// without `--bench`).
pub fn smoke() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench")
}

/// The multi-threaded runtime the benchmarks run on.
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("bench: tokio runtime")
}

/// A benchmark binary's course: `setup` builds the fixture against `redis` (its URL, and
/// whether this is a smoke run); criterion's benchmarks (`benches`: 1 s of warm-up, 3 s
/// of measurement, then the command line's options) and the interleaved `summary` use
/// it. The fixture is dropped before the runtime, and the runtime before the Redis its
/// connections talk to.
pub fn run<F>(
    redis: Redis,
    setup: impl AsyncFnOnce(&str, bool) -> F,
    benches: impl FnOnce(&mut Criterion, &Runtime, &F),
    summary: impl FnOnce(&Runtime, &F, bool),
) {
    let smoke = smoke();
    let rt = runtime();
    let fixture = rt.block_on(setup(redis.url(), smoke));
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    benches(&mut criterion, &rt, &fixture);
    criterion.final_summary();
    summary(&rt, &fixture, smoke);
    drop(fixture);
    drop(rt);
    drop(redis);
}

/// The time `n` runs of `op`, one after the other, take.
pub async fn timed<Fut: Future<Output = ()>>(n: u64, mut op: impl FnMut() -> Fut) -> Duration {
    let started = Instant::now();
    for _ in 0..n {
        op().await;
    }
    started.elapsed()
}

/// The sum of the durations `op` reports over `n` runs, one after the other (for
/// criterion's `iter_custom` and the interleaved rounds).
pub async fn summed<Fut: Future<Output = Duration>>(
    n: u64,
    mut op: impl FnMut() -> Fut,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..n {
        total += op().await;
    }
    total
}

/// Spawns `tasks` tasks, each the future `task` makes of its own clone of `state`, and
/// returns the time until all of them have finished (spawning included).
pub async fn timed_tasks<T: Clone, Fut>(
    tasks: usize,
    state: &T,
    task: impl Fn(T) -> Fut,
) -> Duration
where
    Fut: Future<Output = ()> + Send + 'static,
{
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| tokio::spawn(task(state.clone())))
        .collect();
    for handle in handles {
        handle.await.expect("bench: task");
    }
    started.elapsed()
}

/// A small value shaped like a product (≈ 230 bytes of JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    id: u64,
    sku: String,
    name: String,
    description: String,
    price_cents: i64,
    stock: i64,
    category: String,
    version: u64,
    created_at: String,
    updated_at: String,
}

impl Item {
    /// The item every read of the hit-path benchmarks finds.
    pub fn warm() -> Self {
        Self {
            id: 42,
            sku: "KB-001".to_owned(),
            name: "Mechanical keyboard".to_owned(),
            description: "Tenkeyless, brown switches".to_owned(),
            price_cents: 8999,
            stock: 12,
            category: "keyboards".to_owned(),
            version: 3,
            created_at: "2026-11-26T10:00:00Z".to_owned(),
            updated_at: "2026-11-26T10:05:00Z".to_owned(),
        }
    }
}

impl Cacheable for Item {
    fn version(&self) -> u64 {
        self.version
    }
}

/// A cache over a Redis whose key `item:42` holds [`Item::warm`], and the connection
/// pool behind it (for raw `GET`s of the same bytes). Cheap to clone into tasks.
#[derive(Debug, Clone)]
pub struct WarmKey {
    pub cache: CacheService,
    pub pool: Pool,
    pub key: CacheKey,
}

impl WarmKey {
    /// Connects to the standalone Redis at `url` under a key prefix made unique from
    /// `name`, and fills the key.
    pub async fn new(url: &str, name: &str) -> Self {
        let backend = RedisBackend::connect(&RedisConfig::new(url))
            .await
            .expect("bench: Redis");
        let pool = backend.pool().expect("a standalone Redis").clone();
        let cache = CacheService::new(
            Arc::new(backend),
            CacheConfig::with_prefix(unique_prefix(name)),
        )
        .expect("bench: cache");
        let key = cache.key(Namespace::new("item"), 42);
        let loaded: Option<Item> = cache
            .get_or_load(&key, || async { Ok::<_, ()>(Some(Item::warm())) })
            .await
            .expect("bench: warm-up");
        assert_eq!(loaded, Some(Item::warm()));
        Self { cache, pool, key }
    }
}

/// A key prefix no other run uses.
pub fn unique_prefix(name: &str) -> String {
    format!("bench_{name}_{:08x}", rand::random::<u32>())
}

/// The Redis a benchmark runs against.
#[derive(Debug)]
pub struct Redis {
    child: Option<Child>,
    url: String,
    dir: Option<PathBuf>,
}

impl Redis {
    /// `BENCH_REDIS_URL` if set, else a private server.
    pub fn start() -> Self {
        if let Ok(url) = std::env::var(BENCH_REDIS_URL) {
            eprintln!("bench: using BENCH_REDIS_URL={url} (never flushed)");
            return Self {
                child: None,
                url,
                dir: None,
            };
        }
        Self::start_private()
    }

    /// A private server, whatever `BENCH_REDIS_URL` says.
    pub fn start_private() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "bench-redis-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("bench: cannot create a directory for Redis");
        let mut last = None;
        for _ in 0..5 {
            let port = free_port().expect("bench: no free port");
            match spawn_verified(port, &dir) {
                Ok(child) => {
                    return Self {
                        child: Some(child),
                        url: format!("redis://127.0.0.1:{port}"),
                        dir: Some(dir),
                    };
                }
                Err(error) => last = Some(error),
            }
        }
        panic!("bench: cannot start redis-server (is it on PATH?): {last:?}");
    }

    /// `redis://…`
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether this is a server the benchmark started (and may flush).
    pub fn is_private(&self) -> bool {
        self.child.is_some()
    }

    /// The server's process id, if private.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts `redis-server` on `port` and waits until `INFO server` on that port reports
/// the child's process id (so a stray server on the port is never mistaken for ours).
fn spawn_verified(port: u16, dir: &std::path::Path) -> io::Result<Child> {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(["--enable-debug-command", "local"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(io::Error::other(format!("redis-server exited: {status}")));
        }
        if let Ok(info) = info_server(port)
            && info.contains(&format!("process_id:{}\r", child.id()))
        {
            return Ok(child);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(io::Error::other("redis-server did not answer in time"))
}

fn info_server(port: u16) -> io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&reply).contains("process_id:") || !reply.ends_with(b"\r\n\r\n")
    {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// The median of `values` (which it sorts).
pub fn median(values: &mut [f64]) -> f64 {
    assert!(!values.is_empty(), "median of nothing");
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// The variants' indexes in the order round `round` measures them: `0..n`, rotated by
/// one more each round, so that no variant always goes first (and always finds the
/// caches and connections as the one before it left them).
pub fn rotated(round: usize, n: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |k| (round + k) % n)
}

/// A fixture whose variants are ways of doing one operation, timed one after another
/// (latency) and spread over concurrent tasks (throughput). Cheap to clone into tasks.
/// Crate-visible, as is what uses it: a benchmark's own `Variant` is private to it.
pub(crate) trait Operation: Clone + Send + Sync + 'static {
    /// The ways being compared.
    type Variant: Copy + Send + 'static;

    /// How many concurrent tasks [`concurrent`] spreads the operations over.
    const TASKS: usize;

    /// One operation of `variant`.
    fn op(&self, variant: Self::Variant) -> impl Future<Output = ()> + Send;
}

/// The time `n` operations of `variant`, one after another, take.
pub(crate) async fn sequential<F: Operation>(fixture: &F, variant: F::Variant, n: u64) -> Duration {
    timed(n, || fixture.op(variant)).await
}

/// The time `n` operations of `variant` take, spread over [`Operation::TASKS`] tasks
/// (each on its own clone of `fixture`, running `n.div_ceil(TASKS)` of them).
pub(crate) async fn concurrent<F: Operation>(fixture: &F, variant: F::Variant, n: u64) -> Duration {
    let per_task = n.div_ceil(F::TASKS as u64);
    timed_tasks(F::TASKS, fixture, |fixture| async move {
        for _ in 0..per_task {
            fixture.op(variant).await;
        }
    })
    .await
}

/// How many operations [`latency_and_throughput`] times.
#[derive(Debug, Clone, Copy)]
pub struct Ops {
    /// Interleaved rounds.
    pub rounds: usize,
    /// Operations one after another, per variant and round.
    pub sequential: u64,
    /// Operations spread over the concurrent tasks, per variant and round.
    pub concurrent: u64,
}

/// Latency and throughput of each of `variants` in interleaved rounds: each round times
/// `ops.sequential` operations of each variant one after another ([`sequential`];
/// recorded in `latency` as µs per operation), then `ops.concurrent` of each spread over
/// the tasks ([`concurrent`]; recorded in `throughput` as operations per second,
/// counting all that ran).
pub(crate) async fn latency_and_throughput<F: Operation>(
    fixture: &F,
    variants: &[F::Variant],
    ops: Ops,
    latency: &mut Summary,
    throughput: &mut Summary,
) {
    let tasks = F::TASKS as u64;
    let done = ops.concurrent.div_ceil(tasks) * tasks;
    for round in 0..ops.rounds {
        for i in rotated(round, variants.len()) {
            let elapsed = sequential(fixture, variants[i], ops.sequential).await;
            latency.record(i, elapsed.as_secs_f64() * 1e6 / ops.sequential as f64);
        }
        for i in rotated(round, variants.len()) {
            let elapsed = concurrent(fixture, variants[i], ops.concurrent).await;
            throughput.record(i, done as f64 / elapsed.as_secs_f64());
        }
    }
}

/// Interleaved measurements of several variants: `record(round, variant, value)`.
#[derive(Debug)]
pub struct Summary {
    title: String,
    unit: &'static str,
    variants: Vec<String>,
    values: Vec<Vec<f64>>,
}

impl Summary {
    /// A summary of `variants`, whose values are in `unit`.
    pub fn new(title: impl Into<String>, unit: &'static str, variants: &[&str]) -> Self {
        Self {
            title: title.into(),
            unit,
            variants: variants.iter().map(|v| (*v).to_owned()).collect(),
            values: vec![Vec::new(); variants.len()],
        }
    }

    /// Records one round's value of variant `index`.
    pub fn record(&mut self, index: usize, value: f64) {
        self.values[index].push(value);
    }

    /// The median of variant `index`.
    pub fn median(&self, index: usize) -> f64 {
        median(&mut self.values[index].clone())
    }

    /// The median over rounds of `values[a] / values[b]` (rounds measured together).
    pub fn ratio(&self, a: usize, b: usize) -> f64 {
        let mut ratios: Vec<f64> = self.values[a]
            .iter()
            .zip(&self.values[b])
            .map(|(x, y)| x / y)
            .collect();
        median(&mut ratios)
    }

    /// Prints the medians and the ratios of every variant to `baseline`, as a Markdown
    /// table, to stdout and to `target/bench-results/{file}.md`.
    pub fn print(&self, baseline: usize, file: &str) {
        let rounds = self.values[baseline].len();
        let mut out = format!(
            "\n### {} ({rounds} interleaved rounds)\n\n| variant | median ({}) | ratio to `{}` (median of per-round ratios) |\n|---|---|---|\n",
            self.title, self.unit, self.variants[baseline]
        );
        for (i, name) in self.variants.iter().enumerate() {
            out.push_str(&format!(
                "| `{name}` | {} | {:.3} |\n",
                format_value(self.median(i)),
                self.ratio(i, baseline)
            ));
        }
        println!("{out}");
        write_result(file, &out);
    }
}

fn format_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// Appends `text` to `target/bench-results/{file}.md` (best effort).
pub fn write_result(file: &str, text: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-results");
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{file}.md")))
    {
        let _ = f.write_all(text.as_bytes());
    }
}

/// A one-line description of the machine, for the results.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}
