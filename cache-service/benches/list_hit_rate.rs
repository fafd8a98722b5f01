//! List-page hit rate under a write load: with scopes, and with the table-wide group only.
//!
//! A table of items in [`CATEGORIES`] categories (an SQLite file with WAL, as a server
//! connects; the coherence component with its triggers and its relay; a private Redis).
//! Reader tasks read the pages of every category at a fixed pace, each a random page of
//! a random category, through [`CacheService::get_or_load_in`] (the loader is the
//! `SELECT` of that page). One writer changes random items of category 0 at a fixed rate
//! the way `ProductService` does: one `UPDATE … RETURNING`, then
//! [`Coherence::after_commit`].
//!
//! Variants (the same data, reads and writes; separate databases and key prefixes):
//! - `scoped`: the table declares `ScopedGroup { group: LIST, column: "category" }`, and a
//!   category's pages are read in its scope (`LIST.scope(category)`): a write moves the
//!   whole group (no page here is read in it) and its category's scope.
//! - `table_wide`: the table declares `groups: &[LIST]` only, and every page is read in
//!   the whole group, as every list page was before scopes: a write moves all of them.
//!
//! Reported, per write rate and variant (medians of interleaved rounds): the hit rate of
//! the written category's pages, of the other categories' pages, of all; the page loads
//! (database reads) per second; the reads and writes per second achieved.
//!
//! `cargo bench -p cache-service --bench list_hit_rate`; smoke: `cargo test -p
//! cache-service --bench list_hit_rate` (tiny sizes).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_service::{
    CacheConfig, CacheService, Cacheable, Change, Coherence, CoherenceConfig, Group, Namespace,
    OutboxTable, RedisConfig, RelayHandle, Scope, ScopedGroup, coherence,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement,
};
use sea_orm_migration::SchemaManager;
use serde::{Deserialize, Serialize};
use support::{Redis, median};

const ITEM: Namespace = Namespace::new("bench_item");
const LIST: Group = Group::new("bench_item_list");
const SCOPED: OutboxTable = OutboxTable {
    table: "bench_item",
    id_column: "id",
    version_column: "version",
    namespace: ITEM,
    groups: &[LIST],
    scoped_groups: &[ScopedGroup {
        group: LIST,
        column: "category",
    }],
};
const TABLE_WIDE: OutboxTable = OutboxTable {
    scoped_groups: &[],
    ..SCOPED
};

/// Categories; the writer writes into category 0 only.
const CATEGORIES: i64 = 20;
/// Pages per category (of [`PER_PAGE`] items).
const PAGES: i64 = 2;
const PER_PAGE: i64 = 20;
/// Reader tasks, and the pace of each.
const READERS: usize = 4;
const READS_PER_READER_PER_SEC: u64 = 250;

support::variants! {
    Scoped => "scoped",
    TableWide => "table_wide",
}

impl Variant {
    fn table(self) -> OutboxTable {
        match self {
            Variant::Scoped => SCOPED,
            Variant::TableWide => TABLE_WIDE,
        }
    }

    /// Where the pages of `category` are read.
    fn list(self, category: i64) -> Scope {
        match self {
            Variant::Scoped => LIST.scope(category),
            Variant::TableWide => LIST.into(),
        }
    }
}

/// A page of items: `(id, price)` pairs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Page {
    items: Vec<(i64, i64)>,
}

impl Cacheable for Page {
    fn version(&self) -> u64 {
        0
    }
}

/// Reads and loads, of the written category's pages (`hot`) and of the others (`cold`).
#[derive(Debug, Default)]
struct Counts {
    hot_reads: AtomicU64,
    hot_loads: AtomicU64,
    cold_reads: AtomicU64,
    cold_loads: AtomicU64,
    writes: AtomicU64,
}

impl Counts {
    fn get(&self) -> [u64; 5] {
        [
            &self.hot_reads,
            &self.hot_loads,
            &self.cold_reads,
            &self.cold_loads,
            &self.writes,
        ]
        .map(|n| n.load(Ordering::Relaxed))
    }
}

/// One variant's database, cache and relay.
struct Fixture {
    variant: Variant,
    db: DatabaseConnection,
    coherence: Coherence,
    relay: Option<RelayHandle>,
    _dir: std::path::PathBuf,
}

impl Fixture {
    async fn new(variant: Variant, redis_url: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "bench-hit-rate-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("bench: temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.join("items.db").display());
        // As a server connects: WAL, so readers do not block the writer; a busy timeout.
        let mut options = ConnectOptions::new(url);
        options.max_connections(8).sqlx_logging(false);
        options.map_sqlx_sqlite_opts(|o| {
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5))
        });
        let db = Database::connect(options).await.expect("bench: SQLite");
        db.execute_unprepared(
            "CREATE TABLE bench_item (id INTEGER PRIMARY KEY, category INTEGER NOT NULL, \
             price INTEGER NOT NULL, version INTEGER NOT NULL DEFAULT 1)",
        )
        .await
        .expect("bench: table");
        db.execute_unprepared("CREATE INDEX bench_item_category ON bench_item (category, id)")
            .await
            .expect("bench: index");
        let manager = SchemaManager::new(&db);
        coherence::tables_migration()
            .up(&manager)
            .await
            .expect("bench: coherence tables");
        variant
            .table()
            .migration("bench_item_outbox")
            .up(&manager)
            .await
            .expect("bench: triggers");
        let mut values = Vec::new();
        for category in 0..CATEGORIES {
            for k in 0..PAGES * PER_PAGE {
                values.push(format!(
                    "({}, {category}, 100)",
                    category * PAGES * PER_PAGE + k
                ));
            }
        }
        db.execute_unprepared(&format!(
            "INSERT INTO bench_item (id, category, price) VALUES {}",
            values.join(", ")
        ))
        .await
        .expect("bench: rows");
        let config = CacheConfig::with_prefix(support::unique_prefix(variant.name()));
        let cache = CacheService::connect_redis(&RedisConfig::new(redis_url), config)
            .await
            .expect("bench: Redis");
        let coherence = Coherence::new(
            db.clone(),
            cache,
            &[variant.table()],
            CoherenceConfig::default(),
        )
        .await
        .expect("bench: coherence");
        coherence.drain().await.expect("bench: the inserts' rows");
        let relay = coherence.spawn_relay();
        relay.first_pass().await;
        Self {
            variant,
            db,
            coherence,
            relay: Some(relay),
            _dir: dir,
        }
    }

    /// Page `page` of `category`, through the cache; counted.
    async fn read(&self, category: i64, page: i64, counts: &Counts) {
        let (reads, loads) = if category == 0 {
            (&counts.hot_reads, &counts.hot_loads)
        } else {
            (&counts.cold_reads, &counts.cold_loads)
        };
        reads.fetch_add(1, Ordering::Relaxed);
        let member = format!("c{category}:p{page}:n{PER_PAGE}");
        self.coherence
            .cache()
            .get_or_load_in(self.variant.list(category), member, || async {
                loads.fetch_add(1, Ordering::Relaxed);
                self.load(category, page).await
            })
            .await
            .expect("bench: page");
    }

    /// The loader: the page's `SELECT`.
    async fn load(&self, category: i64, page: i64) -> Result<Option<Page>, sea_orm::DbErr> {
        let rows = self
            .db
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "SELECT id, price FROM bench_item WHERE category = ? ORDER BY id LIMIT ? OFFSET ?",
                [
                    category.into(),
                    PER_PAGE.into(),
                    ((page - 1) * PER_PAGE).into(),
                ],
            ))
            .await?;
        let items = rows
            .iter()
            .map(|row| Ok((row.try_get("", "id")?, row.try_get("", "price")?)))
            .collect::<Result<_, sea_orm::DbErr>>()?;
        Ok(Some(Page { items }))
    }

    /// One write into category 0, as `ProductService` writes: the statement, its commit,
    /// then the invalidation it owes.
    async fn write(&self, rng: &mut impl Rng) {
        let id = rng.random_range(0..PAGES * PER_PAGE);
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "UPDATE bench_item SET price = price + 1, version = version + 1 WHERE id = ? \
                 RETURNING version",
                [id.into()],
            ))
            .await
            .expect("bench: UPDATE")
            .expect("bench: the row");
        let version: i64 = row.try_get("", "version").expect("bench: version");
        let change = Change::at_version(ITEM, id, version).with_scopes([0]);
        self.coherence.after_commit(&[change]).await;
    }

    /// Reads every page once (so the measurement starts warm).
    async fn warm(&self) {
        let counts = Counts::default();
        for category in 0..CATEGORIES {
            for page in 1..=PAGES {
                self.read(category, page, &counts).await;
            }
        }
    }

    /// Readers and the writer for `duration`, writes at `write_rate` per second.
    async fn measure(self: &Arc<Self>, write_rate: u64, duration: Duration) -> Measured {
        self.warm().await;
        let counts = Arc::new(Counts::default());
        let started = Instant::now();
        let stop = started + duration;
        let mut tasks = Vec::new();
        for _ in 0..READERS {
            let (fixture, counts) = (self.clone(), counts.clone());
            tasks.push(tokio::spawn(async move {
                let mut rng = StdRng::from_os_rng();
                let mut pace = Pace::new(READS_PER_READER_PER_SEC, stop);
                while pace.running() {
                    let category = rng.random_range(0..CATEGORIES);
                    let page = rng.random_range(1..=PAGES);
                    fixture.read(category, page, &counts).await;
                    pace.wait().await;
                }
            }));
        }
        if write_rate > 0 {
            let (fixture, counts) = (self.clone(), counts.clone());
            tasks.push(tokio::spawn(async move {
                let mut rng = StdRng::from_os_rng();
                let mut pace = Pace::new(write_rate, stop);
                while pace.running() {
                    fixture.write(&mut rng).await;
                    counts.writes.fetch_add(1, Ordering::Relaxed);
                    pace.wait().await;
                }
            }));
        }
        for task in tasks {
            task.await.expect("bench: task");
        }
        Measured::of(counts.get(), started.elapsed())
    }
}

/// A task's schedule: `per_sec` steps a second until `stop`. The schedule is fixed: a
/// step that runs late shortens the next wait, so the rate holds over the measurement.
struct Pace {
    every: Duration,
    next: tokio::time::Instant,
    stop: Instant,
}

impl Pace {
    fn new(per_sec: u64, stop: Instant) -> Self {
        Self {
            every: Duration::from_secs(1) / per_sec as u32,
            next: tokio::time::Instant::now(),
            stop,
        }
    }

    /// Whether `stop` is still ahead.
    fn running(&self) -> bool {
        Instant::now() < self.stop
    }

    /// Waits until the next step is due.
    async fn wait(&mut self) {
        self.next += self.every;
        tokio::time::sleep_until(self.next).await;
    }
}

/// One measurement of one variant.
#[derive(Debug, Clone, Copy)]
struct Measured {
    hot: f64,
    cold: f64,
    all: f64,
    loads_per_sec: f64,
    reads_per_sec: f64,
    writes_per_sec: f64,
}

impl Measured {
    fn of(
        [hot_reads, hot_loads, cold_reads, cold_loads, writes]: [u64; 5],
        took: Duration,
    ) -> Self {
        let hit = |reads: u64, loads: u64| 1.0 - loads as f64 / reads.max(1) as f64;
        let secs = took.as_secs_f64();
        Self {
            hot: hit(hot_reads, hot_loads),
            cold: hit(cold_reads, cold_loads),
            all: hit(hot_reads + cold_reads, hot_loads + cold_loads),
            loads_per_sec: (hot_loads + cold_loads) as f64 / secs,
            reads_per_sec: (hot_reads + cold_reads) as f64 / secs,
            writes_per_sec: writes as f64 / secs,
        }
    }
}

fn main() {
    let smoke = support::smoke();
    let (rounds, duration, rates): (usize, Duration, &[u64]) = if smoke {
        (1, Duration::from_millis(300), &[10])
    } else {
        (3, Duration::from_secs(5), &[1, 10, 100])
    };
    let redis = Redis::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("bench: tokio runtime");
    let fixtures: Vec<Arc<Fixture>> = rt.block_on(async {
        let mut fixtures = Vec::new();
        for variant in VARIANTS {
            fixtures.push(Arc::new(Fixture::new(variant, redis.url()).await));
        }
        fixtures
    });
    // results[rate][variant] = one `Measured` per round.
    let mut results = vec![vec![Vec::new(); VARIANTS.len()]; rates.len()];
    rt.block_on(async {
        for round in 0..rounds {
            for (r, &rate) in rates.iter().enumerate() {
                for v in support::rotated(round, VARIANTS.len()) {
                    results[r][v].push(fixtures[v].measure(rate, duration).await);
                }
            }
        }
    });
    let mut out = format!(
        "\n## list_hit_rate {} (machine: {}; {CATEGORIES} categories of {PAGES} pages of \
         {PER_PAGE}; {READERS} readers at {READS_PER_READER_PER_SEC} page reads/s each, random \
         category and page; writes into category 0; {} s per measurement, {rounds} \
         interleaved rounds, medians)\n\n\
         | writes/s | variant | hit rate: written category | other categories | all pages | page loads/s | reads/s | writes/s achieved |\n\
         |---|---|---|---|---|---|---|---|\n",
        if smoke { "SMOKE" } else { "run" },
        support::machine(),
        duration.as_secs_f64(),
    );
    for (r, rate) in rates.iter().enumerate() {
        for (v, variant) in VARIANTS.iter().enumerate() {
            let runs = &results[r][v];
            let med = |f: fn(&Measured) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
            out.push_str(&format!(
                "| {rate} | `{}` | {:.3} | {:.3} | {:.3} | {:.1} | {:.0} | {:.1} |\n",
                variant.name(),
                med(|m| m.hot),
                med(|m| m.cold),
                med(|m| m.all),
                med(|m| m.loads_per_sec),
                med(|m| m.reads_per_sec),
                med(|m| m.writes_per_sec),
            ));
        }
    }
    println!("{out}");
    support::write_result("list_hit_rate", &out);
    rt.block_on(async {
        for fixture in fixtures {
            if let Ok(mut fixture) = Arc::try_unwrap(fixture) {
                if let Some(relay) = fixture.relay.take() {
                    relay.shutdown().await;
                }
                let _ = std::fs::remove_dir_all(&fixture._dir);
            }
        }
    });
    drop(rt);
    drop(redis);
}
