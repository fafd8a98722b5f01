//! Write-path overhead: `ProductService::patch` (one atomic `UPDATE … RETURNING`, its
//! own transaction, outbox triggers, then inline invalidation of the product and the list
//! group in Redis, with the outbox relay running as in the server) against the same
//! atomic `UPDATE` through sea-orm with no cache and no triggers, on SQLite (a WAL file,
//! as the server uses it) and PostgreSQL.
//!
//! Variants, measured in alternating batches (rotated every round):
//! - `plain_update`: the naive alternative. The same `UPDATE … SET price_cents = ?,
//!   version = version + 1, updated_at = ? WHERE id = ? RETURNING *`, also a statement
//!   on its own, on a copy of the table without triggers.
//! - `update_with_triggers`: the same statement on the `product` table itself, so its
//!   outbox triggers run (the relay applies what they owe); no inline invalidation.
//!   Splits the overhead into its database part and its cache part.
//! - `service_patch`: `ProductService::patch` with a Redis cache.
//!
//! Each with one writer (latency) and with [`WRITERS`] concurrent writers on distinct
//! products (throughput). Target: `service_patch` costs at most 20% more than
//! `plain_update`.
//!
//! PostgreSQL: `BENCH_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`)
//! names the server; the benchmark creates its own database `bench_write_<hex>` and drops
//! it. Without a reachable server the PostgreSQL half is skipped loudly (a failure with
//! `CI=true`). Redis: a private `redis-server`, or `BENCH_REDIS_URL`.
//!
//! With `BENCH_NO_RELAY=1` no relay runs (the outbox only grows): isolates what the
//! relay's work costs the writers.
//!
//! `cargo bench -p api-server --bench write_path`; smoke: add `-- --test`.

#[path = "../../cache-service/benches/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use cache_service::{CacheConfig, CacheService, RedisConfig};
use chrono::{SubsecRound, Utc};
use product_service::{
    CoherenceConfig, NewProduct, PriceCents, ProductId, ProductName, ProductPatch, ProductService,
    RelayHandle, Sku, Stock,
};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, ExprTrait, QueryFilter, Schema,
};
use support::{Operation, Ops, Redis, Summary};

/// Concurrent writers of the throughput variants.
const WRITERS: usize = 8;

/// An entity with the product table's columns, mapped onto `$table`.
macro_rules! product_columns {
    ($module:ident, $table:literal) => {
        mod $module {
            use sea_orm::entity::prelude::*;

            #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
            #[sea_orm(table_name = $table)]
            pub struct Model {
                #[sea_orm(primary_key)]
                pub id: i64,
                #[sea_orm(unique)]
                pub sku: String,
                pub name: String,
                pub description: String,
                pub price_cents: i64,
                pub stock: i64,
                pub category: String,
                pub version: i64,
                pub created_at: DateTimeUtc,
                pub updated_at: DateTimeUtc,
            }

            #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
            pub enum Relation {}

            impl ActiveModelBehavior for ActiveModel {}
        }
    };
}

// A trigger-free copy of the product table, for the baseline.
product_columns!(plain, "bench_plain_product");
// The real `product` table (its triggers fire).
product_columns!(triggered, "product");

support::variants! {
    Plain => "plain_update",
    Triggers => "update_with_triggers",
    Service => "service_patch",
}

#[derive(Debug, Clone)]
struct Fixture {
    db: DatabaseConnection,
    service: ProductService,
    ids: Arc<Vec<i64>>,
    next: Arc<AtomicI64>,
}

macro_rules! atomic_update {
    ($entity:ident, $db:expr, $id:expr, $price:expr) => {{
        use $entity::Column as C;
        let updated = $entity::Entity::update_many()
            .col_expr(C::Version, Expr::col(C::Version).add(1))
            .col_expr(C::UpdatedAt, Expr::value(Utc::now().trunc_subsecs(0)))
            .col_expr(C::PriceCents, Expr::value($price))
            .filter(C::Id.eq($id))
            .exec_with_returning(&$db)
            .await
            .expect("bench: UPDATE")
            .pop()
            .expect("bench: the row exists");
        updated.version
    }};
}

impl Fixture {
    async fn new(url: &str, redis_url: &str, products: usize) -> (Self, Option<RelayHandle>) {
        let db = product_service::connect(url)
            .await
            .expect("bench: database");
        product_service::migrate(&db).await.expect("bench: migrate");
        let cache = CacheService::connect_redis(
            &RedisConfig::new(redis_url),
            CacheConfig::with_prefix(support::unique_prefix("write")),
        )
        .await
        .expect("bench: Redis");
        let service = ProductService::new(db.clone(), cache)
            .await
            .expect("service");
        let mut ids = Vec::with_capacity(products);
        for i in 0..products {
            let product = service
                .create(NewProduct {
                    sku: Sku::parse(format!("BENCH-{i:06}")).expect("sku"),
                    name: ProductName::parse(format!("Bench product {i}")).expect("name"),
                    description: Default::default(),
                    price_cents: PriceCents::parse(1000).expect("price"),
                    stock: Stock::parse(10).expect("stock"),
                    category: Default::default(),
                })
                .await
                .expect("bench: create");
            ids.push(product.id);
        }
        let backend = db.get_database_backend();
        db.execute(&Schema::new(backend).create_table_from_entity(plain::Entity))
            .await
            .expect("bench: create the plain table");
        db.execute_unprepared("INSERT INTO bench_plain_product SELECT id, sku, name, description, price_cents, stock, category, version, created_at, updated_at FROM product")
            .await
            .expect("bench: copy the products");
        let relay = (std::env::var_os("BENCH_NO_RELAY").is_none())
            .then(|| service.spawn_relay(CoherenceConfig::default()));
        // The relay checks the Redis identity before reads use the cache; writes do not
        // wait for it, but give it its first pass so the rounds start in steady state.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let fixture = Self {
            db,
            service,
            ids: Arc::new(ids),
            next: Arc::default(),
        };
        (fixture, relay)
    }
}

impl Operation for Fixture {
    type Variant = Variant;
    /// Writers take products round robin, so two writers rarely touch the same row at
    /// once (with ≥ 2 × WRITERS products, never).
    const TASKS: usize = WRITERS;

    /// One write of a new price to the next product (round robin).
    async fn op(&self, variant: Variant) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = self.ids[(n as usize) % self.ids.len()];
        let price = 1000 + n % 100_000;
        match variant {
            Variant::Plain => {
                atomic_update!(plain, self.db, id, price);
            }
            Variant::Triggers => {
                atomic_update!(triggered, self.db, id, price);
            }
            Variant::Service => {
                let patch = ProductPatch {
                    price_cents: Some(PriceCents::parse(price).expect("price")),
                    ..ProductPatch::default()
                };
                self.service
                    .patch(ProductId::parse(id).expect("id"), patch, None)
                    .await
                    .expect("bench: patch");
            }
        }
    }
}

async fn run(label: &str, url: &str, redis: &str, smoke: bool) {
    let (products, rounds, seq, conc) = if smoke {
        (2 * WRITERS, 1, 4, WRITERS as u64 * 2)
    } else {
        (1_000, 11, 200, 400)
    };
    let (fixture, relay) = Fixture::new(url, redis, products).await;
    let names: Vec<&str> = VARIANTS.iter().map(|v| v.name()).collect();
    let label = if relay.is_some() {
        label.to_owned()
    } else {
        format!("{label}, no relay")
    };
    let mut latency = Summary::new(format!("{label}: one writer, latency"), "µs/write", &names);
    let mut throughput = Summary::new(
        format!("{label}: {WRITERS} concurrent writers, throughput"),
        "writes/s",
        &names,
    );
    // Warm-up: connections, statement caches, page cache.
    for variant in VARIANTS {
        support::sequential(&fixture, variant, seq / 4 + 1).await;
    }
    let ops = Ops {
        rounds,
        sequential: seq,
        concurrent: conc,
    };
    support::latency_and_throughput(&fixture, &VARIANTS, ops, &mut latency, &mut throughput).await;
    if let Some(relay) = relay {
        relay.shutdown().await;
    }
    latency.print(0, "write_path");
    throughput.print(0, "write_path");
    if smoke {
        fixture.db.close().await.expect("bench: close");
        return; // a handful of writes on a debug build: the ratios mean nothing
    }
    let lat = latency.ratio(2, 0) - 1.0;
    let thr = 1.0 - throughput.ratio(2, 0);
    let verdict = format!(
        "{label} targets: service_patch latency overhead {:+.1}% (≤ 20%: {}); throughput overhead at {WRITERS} writers {:+.1}% (≤ 20%: {})\n",
        lat * 100.0,
        if lat <= 0.20 { "PASS" } else { "MISS" },
        thr * 100.0,
        if thr <= 0.20 { "PASS" } else { "MISS" },
    );
    println!("{verdict}");
    support::write_result("write_path", &verdict);
    fixture.db.close().await.expect("bench: close");
}

/// A PostgreSQL database of our own, dropped with the guard.
struct PgDatabase {
    admin_url: String,
    name: String,
}

impl PgDatabase {
    async fn create(admin_url: &str) -> Result<(Self, String), String> {
        let admin = sea_orm::Database::connect(admin_url)
            .await
            .map_err(|e| e.to_string())?;
        let name = format!("bench_write_{:08x}", rand::random::<u32>());
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .map_err(|e| e.to_string())?;
        let _ = admin.close().await;
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url, |(base, _)| base);
        let url = format!("{base}/{name}");
        Ok((
            Self {
                admin_url: admin_url.to_owned(),
                name,
            },
            url,
        ))
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // A runtime of its own: drop may run inside or outside the benchmark's.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("bench: runtime");
            rt.block_on(async {
                let admin = sea_orm::Database::connect(&admin_url).await?;
                admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await?;
                admin.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("bench: could not drop database {}", self.name);
        }
    }
}

fn main() {
    let smoke = support::smoke();
    let redis = Redis::start();
    let rt = support::runtime();
    support::write_result(
        "write_path",
        &format!(
            "\n## write_path {} (machine: {})\n",
            if smoke { "SMOKE" } else { "run" },
            support::machine()
        ),
    );
    let dir = tempfile::tempdir().expect("bench: temporary directory");
    let sqlite = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").to_string_lossy()
    );
    rt.block_on(run("SQLite (WAL file)", &sqlite, redis.url(), smoke));

    let admin = std::env::var("BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    match rt.block_on(PgDatabase::create(&admin)) {
        Ok((guard, url)) => {
            rt.block_on(run("PostgreSQL", &url, redis.url(), smoke));
            drop(guard);
        }
        Err(error) => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(
                !ci,
                "write_path: PostgreSQL at {admin} is required in CI: {error}"
            );
            eprintln!(
                "\n{rule}\nSKIPPED write_path on PostgreSQL: {admin}: {error}\n{rule}",
                rule = "=".repeat(72)
            );
        }
    }
    drop(rt);
    drop(redis);
}
