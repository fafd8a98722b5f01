//! `orders-example`: a short scripted run of [`OrderService`] against the database and
//! cache you name, printing what each step reads. See `examples/README.md`.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cache_service::{CacheConfig, CacheService, RedisConfig};
use clap::Parser;
use orders_example::{
    CustomerPage, NewOrder, OrderId, OrderService, OrderStatus, TotalCents, connect, migrate,
};
use sea_orm::ConnectionTrait;

/// Places, reads, lists and changes a few orders, and changes one behind the service's
/// back, showing that every read after a write sees it.
#[derive(Debug, Parser)]
#[command(version)]
struct Settings {
    /// `sqlite::memory:` (nothing left behind), `sqlite://orders.db?mode=rwc` or
    /// `postgres://user@host/db`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite::memory:")]
    database_url: String,
    /// `redis://host:6379` (or `rediss://`, `redis-cluster://`, `redis-sentinel://`);
    /// unset: an in-process cache.
    #[arg(long, env = "REDIS_URL")]
    redis_url: Option<String>,
    /// Every cache key starts with `{prefix}:`.
    #[arg(long, env = "CACHE_PREFIX", default_value = "orders_example")]
    cache_prefix: String,
    /// The customer whose orders the run places and lists.
    #[arg(long, default_value_t = 7)]
    customer: i64,
}

/// `println!` that returns an error instead of panicking when stdout is gone (the demo
/// piped into `head`, say).
macro_rules! say {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*).context("failed to write to stdout")?
    };
}

#[tokio::main]
async fn main() -> Result<()> {
    let settings = Settings::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    run(&settings).await
}

async fn run(settings: &Settings) -> Result<()> {
    let customer = CustomerPage::parse(settings.customer, 1, 20)?;
    let db = connect(&settings.database_url)
        .await
        .context("failed to connect to the database")?;
    migrate(&db).await.context("failed to migrate")?;
    let config = CacheConfig::with_prefix(settings.cache_prefix.clone());
    let (cache, cache_name) = match &settings.redis_url {
        Some(url) => (
            CacheService::connect_redis(&RedisConfig::new(url.clone()), config)
                .await
                .context("failed to connect to Redis")?,
            "Redis",
        ),
        None => (CacheService::in_memory(config, 10_000)?, "in-process"),
    };
    let service = OrderService::new(db.clone(), cache)
        .await
        .context("the database connection cannot serve the orders")?;
    let relay = service
        .start_relay()
        .await
        .context("failed to start the relay")?;
    relay.first_pass().await;
    say!("database {}, {cache_name} cache", backend_name(&db));

    let mut placed = Vec::new();
    for cents in [2_500, 4_000] {
        let new = NewOrder {
            customer: customer.customer(),
            total: TotalCents::parse(cents)?,
        };
        placed.push(service.place(new).await?);
    }
    let first = OrderId::parse(placed[0].id)?;
    say!("placed orders {} and {}", placed[0].id, placed[1].id);

    show(&service, first, &customer).await?;
    let paid = service.set_status(first, OrderStatus::Paid, None).await?;
    say!(
        "set order {first} to {} (version {})",
        paid.status,
        paid.version
    );
    show(&service, first, &customer).await?;

    // An admin tool's UPDATE, on the database directly: the trigger records what it owes,
    // the relay applies it.
    db.execute_unprepared(&format!(
        "UPDATE orders SET status = 'shipped' WHERE id = {first}"
    ))
    .await
    .context("the raw UPDATE failed")?;
    say!("raw SQL: UPDATE orders SET status = 'shipped' WHERE id = {first}");
    wait_for_relay(&service).await?;
    show(&service, first, &customer).await?;

    relay.shutdown().await;
    db.close().await.context("failed to close the database")?;
    Ok(())
}

/// Prints order `id` and the customer's first page, as read through the cache.
async fn show(service: &OrderService, id: OrderId, customer: &CustomerPage) -> Result<()> {
    let order = service.find(id).await?;
    let page = service.find_page(customer).await?;
    // Whether the read left the order in the cache, for the next read to hit.
    let cached = matches!(
        service.cache().backend().get(&service.order_key(id)).await,
        Ok(Some(_))
    );
    let statuses: Vec<String> = page
        .items
        .iter()
        .map(|o| format!("{}:{}", o.id, o.status))
        .collect();
    say!(
        "  read order {}: {} (version {}{}); customer {} page 1: [{}]",
        order.id,
        order.status,
        order.version,
        if cached { ", now cached" } else { "" },
        page.customer_id,
        statuses.join(", ")
    );
    Ok(())
}

/// Waits until the relay has applied every owed invalidation. It polls every 250 ms: the
/// raw `UPDATE` ran on the service's own pool, whose PostgreSQL sessions do not
/// `NOTIFY` (see [`connect`]); another program's `UPDATE` would wake it at once.
async fn wait_for_relay(service: &OrderService) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while service.coherence().backlog().await? > 0 {
        if Instant::now() >= deadline {
            bail!("the relay did not apply the raw UPDATE's invalidation within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    say!("  the relay applied what the UPDATE owed");
    Ok(())
}

fn backend_name(db: &sea_orm::DatabaseConnection) -> &'static str {
    match db.get_database_backend() {
        sea_orm::DbBackend::Postgres => "PostgreSQL",
        sea_orm::DbBackend::Sqlite => "SQLite",
        _ => "other",
    }
}
