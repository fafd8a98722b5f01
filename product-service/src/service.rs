//! [`ProductService`]: the one way to read and change products.
//!
//! Reads go through the cache: a product under its id in [`PRODUCT`], list pages in the
//! [`PRODUCT_LIST`] group: the unfiltered pages in the whole group, the pages of one
//! category in that category's scope of it. Each write is one SQL statement, which is
//! its own transaction (the outbox triggers run inside it). After it commits, the
//! coherence component moves the whole list group and the scopes of the categories the
//! write touched (the old and the new one, when a product moves) to new generations and
//! invalidates the product's key, fenced at the row's new version
//! ([`Coherence::after_commit`]). When that cannot be done inline (Redis
//! unreachable, or recovering from an outage) the write waits, up to a bound, for a relay
//! to apply it; past the bound it returns, and the invalidation stays owed in the outbox.

use cache_service::{
    CacheError, CacheService, Change, Coherence, CoherenceConfig, Group, Namespace, OutboxTable,
    RelayHandle, ScopedGroup,
};
use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{
    DatabaseConnection, DatabaseTransaction, DbErr, SqlErr, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
};

mod model;
mod read;
mod write;

pub use model::{Product, ProductPage};

use crate::domain::Sku;
use crate::error::{Error, Result};

/// Cache namespace of single products (also the `namespace` metric label).
pub const PRODUCT: Namespace = Namespace::new("product");
/// Cache group of list pages (also the `namespace` metric label). Unfiltered pages are
/// members of the whole group; the pages of one category, of its scope
/// (`PRODUCT_LIST.scope(category)`).
pub const PRODUCT_LIST: Group = Group::new("product_list");

/// The `product` table as the coherence component knows it: its triggers record every
/// change of a product in the outbox, whoever makes it, with its category before and
/// after the change, so the pages of both categories move.
///
/// # Examples
///
/// ```
/// # fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// use cache_service::ScopedGroup;
/// use product_service::{PRODUCT, PRODUCT_LIST, PRODUCT_TABLE};
///
/// assert_eq!((PRODUCT_TABLE.table, PRODUCT_TABLE.namespace), ("product", PRODUCT));
/// assert_eq!(PRODUCT_TABLE.groups, &[PRODUCT_LIST]);
/// let by_category = ScopedGroup { group: PRODUCT_LIST, column: "category" };
/// assert_eq!(PRODUCT_TABLE.scoped_groups, &[by_category]);
/// # Ok(())
/// # }
/// ```
pub const PRODUCT_TABLE: OutboxTable = OutboxTable {
    table: "product",
    id_column: "id",
    version_column: "version",
    namespace: PRODUCT,
    groups: &[PRODUCT_LIST],
    scoped_groups: &[ScopedGroup {
        group: PRODUCT_LIST,
        column: "category",
    }],
};

/// Reads and writes products; the only write path. Cloning is shallow (the connection
/// pool and the cache are shared).
#[derive(Debug, Clone)]
pub struct ProductService {
    pub(crate) db: DatabaseConnection,
    /// The cache (reads go through [`Coherence::cache`]), invalidation after commit, the
    /// outbox relay and the epoch (see [`cache_service::coherence`]).
    pub(crate) coherence: Coherence,
    /// Test-only fault injection: hang every write between commit and invalidation.
    #[cfg(feature = "fault-injection")]
    pause_after_commit: bool,
}

impl ProductService {
    /// A service over a database migrated by [`migrate`](crate::migrate) and a cache.
    ///
    /// `db` may be [`connect`](crate::connect)'s or the caller's own pool; either way its
    /// sessions must have the settings `connect` gives them (SQLite: WAL for a file, a
    /// busy timeout; PostgreSQL: the outbox trigger's `NOTIFY` off). They are checked
    /// here, and a pool without them is refused with [`Error::MissingSessionSettings`]
    /// naming each one: they would have to hold on every connection the pool opens,
    /// which only the pool's connect options can promise, so they are not applied from
    /// here. Fails with [`Error::Database`] if the database does not answer.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use cache_service::{CacheConfig, CacheService};
    /// use product_service::ProductService;
    ///
    /// let db = product_service::connect("sqlite::memory:").await?;
    /// product_service::migrate(&db).await?;
    /// let cache = CacheService::in_memory(CacheConfig::with_prefix("shop"), 10_000)?;
    /// let service = ProductService::new(db, cache).await?;
    /// # drop(service);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn new(db: DatabaseConnection, cache: CacheService) -> Result<Self> {
        Self::with_config(db, cache, CoherenceConfig::default()).await
    }

    /// [`new`](Self::new) with the coherence component's settings (relay pace, the
    /// bound on a write's wait for a relay).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use cache_service::{CacheConfig, CacheService, CoherenceConfig};
    /// use product_service::ProductService;
    ///
    /// let db = product_service::connect("sqlite::memory:").await?;
    /// product_service::migrate(&db).await?;
    /// let cache = CacheService::in_memory(CacheConfig::with_prefix("shop"), 10_000)?;
    /// let coherence = CoherenceConfig {
    ///     ack_timeout: Duration::from_millis(200),
    ///     ..CoherenceConfig::default()
    /// };
    /// let service = ProductService::with_config(db, cache, coherence).await?;
    /// assert_eq!(service.coherence().config().ack_timeout, Duration::from_millis(200));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn with_config(
        db: DatabaseConnection,
        cache: CacheService,
        config: CoherenceConfig,
    ) -> Result<Self> {
        let coherence = Coherence::new(db.clone(), cache, &[PRODUCT_TABLE], config)
            .await
            .map_err(|error| match error {
                CacheError::MissingSessionSettings(missing) => {
                    Error::MissingSessionSettings(missing)
                }
                other => Error::from(other),
            })?;
        Ok(Self {
            coherence,
            db,
            #[cfg(feature = "fault-injection")]
            pause_after_commit: false,
        })
    }

    /// **Test-only fault injection.** Every write then hangs forever between its commit
    /// and its invalidation, after printing `fault injection: … pausing before
    /// invalidation` on stderr, so a test can kill the process at exactly that point
    /// and check that the outbox makes up for the lost invalidation. The relay of this
    /// service then does not poll either (only its start and wake-ups run it), so it
    /// cannot apply the owed invalidation before the test has looked. Only with the
    /// `fault-injection` feature, which no release build enables.
    #[cfg(feature = "fault-injection")]
    pub fn pause_after_commit_for_tests(mut self) -> Self {
        self.pause_after_commit = true;
        self.coherence = self.coherence.with_config(CoherenceConfig {
            poll_interval: std::time::Duration::from_secs(3600),
            ..self.coherence.config().clone()
        });
        self
    }

    /// The cache the service invalidates.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use cache_service::{CacheConfig, CacheService};
    /// # use product_service::*;
    /// # let db = connect("sqlite::memory:").await?;
    /// # migrate(&db).await?;
    /// # let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 1_000)?;
    /// # let service = ProductService::new(db, cache).await?;
    /// assert_eq!(service.cache().config().prefix, "doc");
    /// let key = service.cache().key(PRODUCT, 1); // where product 1 is cached
    /// assert_eq!(key.as_str(), "doc:product:{1}");
    /// # Ok(())
    /// # }
    /// ```
    pub fn cache(&self) -> &CacheService {
        self.coherence.cache()
    }

    /// The coherence component: the outbox, its relay and the cache epoch.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use cache_service::{CacheConfig, CacheService};
    /// # use product_service::*;
    /// # let db = connect("sqlite::memory:").await?;
    /// # migrate(&db).await?;
    /// # let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 1_000)?;
    /// # let service = ProductService::new(db, cache).await?;
    /// assert_eq!(service.coherence().backlog().await?, 0, "nothing is owed");
    /// # Ok(())
    /// # }
    /// ```
    pub fn coherence(&self) -> &Coherence {
        &self.coherence
    }

    /// Checks that the database answers.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use cache_service::{CacheConfig, CacheService};
    /// # use product_service::*;
    /// # let db = connect("sqlite::memory:").await?;
    /// # migrate(&db).await?;
    /// # let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 1_000)?;
    /// # let service = ProductService::new(db, cache).await?;
    /// service.ping_database().await?;
    /// service.close().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn ping_database(&self) -> Result<()> {
        self.db.ping().await.map_err(Error::from)
    }

    /// Closes the database pool (at shutdown).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use cache_service::{CacheConfig, CacheService};
    /// # use product_service::*;
    /// # let db = connect("sqlite::memory:").await?;
    /// # migrate(&db).await?;
    /// # let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 1_000)?;
    /// # let service = ProductService::new(db, cache).await?;
    /// service.close().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn close(self) -> Result<()> {
        self.db.close().await.map_err(Error::from)
    }

    /// Write transactions on SQLite start `IMMEDIATE`, so concurrent writers queue on the
    /// busy timeout instead of failing at commit; other databases ignore the mode.
    pub(crate) async fn begin_write(&self) -> Result<DatabaseTransaction> {
        Ok(self
            .db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await?)
    }

    /// Runs after the commit, never before: the list group and the categories' scopes,
    /// then the product's key, fenced at `version`, inline; or, if the cache cannot take
    /// it now, by a relay while the write waits (see [`Coherence::after_commit`]).
    async fn invalidate_after_commit(&self, change: Change) {
        #[cfg(feature = "fault-injection")]
        if self.pause_after_commit {
            eprintln!(
                "fault injection: product {} committed ({change:?}); pausing before invalidation",
                change.id
            );
            std::future::pending::<()>().await;
        }
        self.coherence.after_commit(&[change]).await;
    }

    /// The coherence component with `batch_size` rows per batch, to drain or count the
    /// outbox (see [`Coherence::drain`], [`Coherence::backlog`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use cache_service::{CacheConfig, CacheService};
    /// # use product_service::*;
    /// # let db = connect("sqlite::memory:").await?;
    /// # migrate(&db).await?;
    /// # let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 1_000)?;
    /// # let service = ProductService::new(db, cache).await?;
    /// # let keyboard = NewProduct {
    /// #     sku: Sku::parse("KB-001")?,
    /// #     name: ProductName::parse("Mechanical keyboard")?,
    /// #     description: Description::default(),
    /// #     price_cents: PriceCents::parse(8_999)?,
    /// #     stock: Stock::parse(12)?,
    /// #     category: Category::parse("keyboards")?,
    /// # };
    /// service.create(keyboard).await?;
    /// let coherence = service.relay(100);
    /// coherence.drain().await?;
    /// assert_eq!(coherence.backlog().await?, 0, "nothing is owed after a drain");
    /// # Ok(())
    /// # }
    /// ```
    pub fn relay(&self, batch_size: u64) -> Coherence {
        self.coherence.with_config(CoherenceConfig {
            batch_size,
            ..self.coherence.config().clone()
        })
    }

    /// Starts the outbox relay in the background (see [`Coherence::spawn_relay`]).
    /// Every process that serves reads should run one; [`RelayHandle::shutdown`] drains
    /// it. A server uses [`Coherence::start_relay`], which also refuses incoherent
    /// set-ups.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use cache_service::{CacheConfig, CacheService};
    /// # use product_service::*;
    /// # let db = connect("sqlite::memory:").await?;
    /// # migrate(&db).await?;
    /// # let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 1_000)?;
    /// # let service = ProductService::new(db, cache).await?;
    /// # let keyboard = NewProduct {
    /// #     sku: Sku::parse("KB-001")?,
    /// #     name: ProductName::parse("Mechanical keyboard")?,
    /// #     description: Description::default(),
    /// #     price_cents: PriceCents::parse(8_999)?,
    /// #     stock: Stock::parse(12)?,
    /// #     category: Category::parse("keyboards")?,
    /// # };
    /// let relay = service.spawn_relay(CoherenceConfig::default());
    /// relay.first_pass().await;
    /// service.create(keyboard).await?;
    /// relay.shutdown().await; // applies what is still owed, then stops
    /// assert_eq!(service.coherence().backlog().await?, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn spawn_relay(&self, config: CoherenceConfig) -> RelayHandle {
        self.coherence.with_config(config).spawn_relay()
    }
}

pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0)
}

pub(crate) fn write_error(error: DbErr, sku: Option<&Sku>) -> Error {
    match (error.sql_err(), sku) {
        (Some(SqlErr::UniqueConstraintViolation(_)), Some(sku)) => Error::DuplicateSku(sku.clone()),
        _ => Error::Database(error),
    }
}
