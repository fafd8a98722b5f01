//! Connecting to the database and migrating it.

use cache_service::coherence::connect_options;
use sea_orm::{Database, DatabaseConnection, DbErr};
use sea_orm_migration::MigratorTrait;

use crate::migration::{Migrator, adopt_legacy_rows};

/// Connects to `url` (`sqlite://…` or `postgres://…`) with
/// [`connect_options`].
///
/// SQLite files get WAL and a 5 s busy timeout, so readers do not block the writer and
/// concurrent writers queue instead of failing. `sqlite::memory:` gets a single
/// connection, never recycled, because every connection to it would be a separate,
/// empty database. PostgreSQL sessions skip the outbox trigger's `NOTIFY`: the service
/// invalidates inline, and the relays' poll picks up what an inline invalidation could
/// not apply.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let db = product_service::connect("sqlite::memory:").await?;
/// product_service::migrate(&db).await?;
/// # Ok(())
/// # }
/// ```
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    connect_with_pool_size(url, None).await
}

/// [`connect`] with `pool_size` connections (default: 8 for an SQLite file, 16 for
/// PostgreSQL; `sqlite::memory:` always has one).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = std::env::temp_dir().join(format!("products-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let url = format!("sqlite://{}?mode=rwc", dir.join("products.db").display());
/// let db = product_service::connect_with_pool_size(&url, Some(2)).await?;
/// product_service::migrate(&db).await?;
/// # db.close().await?;
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
pub async fn connect_with_pool_size(
    url: &str,
    pool_size: Option<u32>,
) -> Result<DatabaseConnection, DbErr> {
    let default_size = if url.starts_with("sqlite:") { 8 } else { 16 };
    Database::connect(connect_options(
        url,
        Some(pool_size.unwrap_or(default_size)),
    ))
    .await
}

/// Applies the migrations that have not been applied yet.
///
/// They are recorded in product-service's own table (`product_service_migrations`), so
/// a host application's sea-orm migrator can keep its own in `seaql_migrations` on the
/// same database. A database migrated before that table existed has its
/// product-service rows carried over from `seaql_migrations` first (once; rows of other
/// applications stay), so nothing is applied twice.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let db = product_service::connect("sqlite::memory:").await?;
/// product_service::migrate(&db).await?;
/// product_service::migrate(&db).await?; // nothing left to apply
/// # Ok(())
/// # }
/// ```
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    adopt_legacy_rows(db).await?;
    Migrator::up(db, None).await
}
