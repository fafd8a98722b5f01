//! Seeds a database with products for `scripts/loadtest.sh`: `COUNT` products (skus
//! `LOAD-000001`…) through the one write path (`Importer`, batches of 1000), then drains
//! the outbox so the server starts with nothing owed.
//!
//! ```sh
//! DATABASE_URL='sqlite:///tmp/load.db?mode=rwc' COUNT=100000 \
//!   cargo run --release -p api-server --example bench_seed
//! ```
//!
//! The cache is an in-process one that is thrown away: the server's Redis starts empty,
//! so there is nothing in it to invalidate.

use anyhow::Context;
use cache_service::{CacheConfig, CacheService};
use product_service::{
    Category, Description, PriceCents, ProductImport, ProductName, ProductService, Sku, Stock,
};

const BATCH: usize = 1000;
/// Products are spread over this many categories (`cat-0` …), for list pages by category.
const CATEGORIES: usize = 10;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL").context("DATABASE_URL must be set")?;
    let count: usize = std::env::var("COUNT")
        .unwrap_or_else(|_| "1000".to_owned())
        .parse()
        .context("COUNT must be a number")?;
    let db = product_service::connect(&url)
        .await
        .context("failed to connect")?;
    product_service::migrate(&db)
        .await
        .context("failed to migrate")?;
    let cache = CacheService::in_memory(CacheConfig::with_prefix("seed"), 1)?;
    let service = ProductService::new(db, cache).await?;
    let mut importer = service.importer(false);
    let started = std::time::Instant::now();
    for start in (0..count).step_by(BATCH) {
        let rows: Vec<ProductImport> = (start..(start + BATCH).min(count))
            .map(|i| -> anyhow::Result<ProductImport> {
                let n = i + 1;
                Ok(ProductImport {
                    name: Some(ProductName::parse(format!("Load test product {n}"))?),
                    description: Some(Description::parse(format!(
                        "Product number {n}, made by the load test seeder."
                    ))?),
                    price_cents: Some(PriceCents::parse(100 + (n as i64 * 37) % 100_000)?),
                    stock: Some(Stock::parse((n as i64 * 7) % 1000)?),
                    category: Some(Category::parse(format!("cat-{}", n % CATEGORIES))?),
                    ..ProductImport::new(Sku::parse(format!("LOAD-{n:06}"))?)
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let report = importer.import_batch(&rows).await?;
        anyhow::ensure!(
            report.failures.is_empty(),
            "rows failed: {:?}",
            report.failures
        );
    }
    let drained = service.relay(1000).drain().await?;
    eprintln!(
        "seeded {count} products in {:.1} s ({drained} outbox rows drained)",
        started.elapsed().as_secs_f64()
    );
    service.close().await?;
    Ok(())
}
