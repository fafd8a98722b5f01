//! Bulk upsert by sku: the write side of `api-server import`.
//!
//! An [`Importer`] applies batches of [`ProductImport`] rows, each batch in one write
//! transaction:
//!
//! 1. one `SELECT … WHERE sku IN (…)` reads the batch's existing products. On SQLite the
//!    `IMMEDIATE` transaction makes the importer the only writer until the commit; on
//!    PostgreSQL a product changed by someone else after this read fails the `UPDATE`
//!    below (its `WHERE` has the version read), and the batch is tried again, the last
//!    time with the rows locked `FOR UPDATE`;
//! 2. the rows are applied in order to an in-memory copy of those products: a new sku is
//!    created, a known one gets the fields the row gives, or is counted unchanged when
//!    they already hold those values. A sku may appear several times in one batch; each
//!    row sees the effect of the rows before it, exactly as if they were applied one by
//!    one;
//! 3. the net effect is written: one multi-row `INSERT` for the new products, and one
//!    atomic `UPDATE … FROM (VALUES …)` for the changed ones, which sets only the changed
//!    columns and `version = version + n` (`n`: the rows that changed the product), each
//!    row guarded by the version read (`WHERE version = …`). Final values and versions
//!    are those of applying the rows one by one, in three statements per batch;
//! 4. after the commit (never before, never for a rolled-back batch) the batch's changed
//!    products are invalidated at their new versions, and the list group and the scopes
//!    of the categories they touched (read from the batch's outbox rows) once.
//!
//! The database triggers record every change in `cache_outbox` in the same transaction,
//! so an invalidation that fails here (Redis down) is applied later by a relay; the
//! import's caller waits for that once, at the end ([`ProductService::settle_import`]),
//! instead of after every batch. Inline invalidation runs only at a checked cache epoch
//! (the first batch checks it). After a failed invalidation, inline invalidation pauses
//! (1 s, doubling up to 30 s) and the outbox keeps what is owed, so a dead or frozen
//! Redis costs a few timeouts, not one per batch. Replaying what was applied inline costs a
//! relay one fence read per product, no reload.
//!
//! A dry run executes the same statements in a transaction that is rolled back, and
//! invalidates nothing. It remembers what its earlier batches would have changed, so a
//! sku that appears in several batches is counted as the real import would count it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cache_service::Change;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, SqlErr, Statement,
};

use crate::domain::{
    Category, Description, PriceCents, ProductName, ProductPatch, Sku, Stock, ValidationError,
};
use crate::entity::product;
use crate::error::Result;
use crate::service::{PRODUCT, ProductService};

mod batch;

use batch::{Batch, Current, write};

/// How many times a batch is tried when another writer got in the way (PostgreSQL only:
/// on SQLite the importer is the only writer for the whole transaction). The first
/// tries are optimistic; the last locks the batch's rows (`FOR UPDATE`), so a product
/// that other writers keep changing cannot make the import fail.
const ATTEMPTS: usize = 3;

/// How long inline invalidation pauses after its first failure, and at most.
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// How long [`ProductService::settle_import`] waits for the servers' relays to apply what
/// an import owes, when it cannot apply it itself.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(1);

/// One imported row: a sku and the fields the row gives. `None` keeps the product's
/// current value; creating a product needs `name`, `price_cents` and `stock`
/// (`description` and `category` default to `""`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductImport {
    /// The product to create or update.
    pub sku: Sku,
    /// New name.
    pub name: Option<ProductName>,
    /// New description.
    pub description: Option<Description>,
    /// New price.
    pub price_cents: Option<PriceCents>,
    /// New stock.
    pub stock: Option<Stock>,
    /// New category.
    pub category: Option<Category>,
}

impl ProductImport {
    /// The fields the row gives, as a patch that keeps the sku (which names the product).
    pub(crate) fn fields(&self) -> ProductPatch {
        ProductPatch {
            sku: None,
            name: self.name.clone(),
            description: self.description.clone(),
            price_cents: self.price_cents,
            stock: self.stock,
            category: self.category.clone(),
        }
    }

    /// A row for `sku` that gives no field (it changes nothing).
    pub fn new(sku: Sku) -> Self {
        Self {
            sku,
            name: None,
            description: None,
            price_cents: None,
            stock: None,
            category: None,
        }
    }
}

/// What one batch did (or, in a dry run, would have done).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Rows that created a product.
    pub created: u64,
    /// Rows that changed an existing product (or one created earlier in the batch).
    pub updated: u64,
    /// Rows whose fields already held the given values.
    pub unchanged: u64,
    /// Rows that were skipped, in input order.
    pub failures: Vec<ImportFailure>,
}

/// A row that was skipped: its position in the batch and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportFailure {
    /// Index of the row in the slice given to [`Importer::import_batch`].
    pub index: usize,
    /// The field and the rule it broke (a new product without a name, …).
    pub error: ValidationError,
}

/// Applies batches of imported rows; see the [module docs](self). Holds the service (a
/// shallow clone) and, in a dry run, what earlier batches would have changed.
#[derive(Debug)]
pub struct Importer {
    service: ProductService,
    dry_run: bool,
    /// Dry run only: the products as earlier batches left them (they were rolled back).
    simulated: HashMap<String, Current>,
    /// Whether [`Importer::analyze_once`] has run.
    analyzed: bool,
    /// After a failed invalidation, inline invalidation pauses until then (the outbox
    /// keeps what is owed meanwhile), and the pause doubles up to [`MAX_PAUSE`].
    paused_until: Option<Instant>,
    pause: Duration,
}

impl ProductService {
    /// An importer over this service. With `dry_run`, every batch runs in a transaction
    /// that is rolled back, and nothing is invalidated.
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
    /// let mut importer = service.importer(true);
    /// assert!(importer.is_dry_run());
    /// let row = ProductImport {
    ///     name: Some(ProductName::parse("Mouse")?),
    ///     price_cents: Some(PriceCents::parse(1_999)?),
    ///     stock: Some(Stock::parse(5)?),
    ///     ..ProductImport::new(Sku::parse("MS-1")?)
    /// };
    /// assert_eq!(importer.import_batch(&[row]).await?.created, 1);
    /// let all = service.find_in_page(&PageQuery::parse(1, 20, None)?).await?;
    /// assert_eq!(all.total, 0, "a dry run writes nothing");
    /// # Ok(())
    /// # }
    /// ```
    pub fn importer(&self, dry_run: bool) -> Importer {
        Importer {
            service: self.clone(),
            dry_run,
            simulated: HashMap::new(),
            analyzed: false,
            paused_until: None,
            pause: FIRST_PAUSE,
        }
    }

    /// At the end of an import: waits until a cache can show what it wrote. Applies what
    /// the import owes (after checking the cache epoch) or, when this process cannot
    /// (Redis unreachable, or no Redis: a server's in-process cache is reached through its
    /// relay alone), wakes the servers' relays and waits, up to [`SETTLE_TIMEOUT`], for
    /// one to apply it. Returns whether all was applied; what is left stays in the
    /// outbox for the relays, with a warning.
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
    /// let row = ProductImport {
    ///     name: Some(ProductName::parse("Mouse")?),
    ///     price_cents: Some(PriceCents::parse(1_999)?),
    ///     stock: Some(Stock::parse(5)?),
    ///     ..ProductImport::new(Sku::parse("MS-1")?)
    /// };
    /// service.import_batch(&[row], false).await?;
    /// // An in-process cache is a server's: its relay applies what the import owes.
    /// let relay = service.spawn_relay(CoherenceConfig::default());
    /// relay.first_pass().await;
    /// assert!(service.settle_import().await);
    /// relay.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn settle_import(&self) -> bool {
        let settled = self.coherence.flush(SETTLE_TIMEOUT).await;
        if !settled {
            tracing::warn!(
                "the cache could not be updated yet; the outbox keeps the import's invalidations until a server's relay applies them"
            );
        }
        settled
    }

    /// Applies one batch with a fresh [`Importer`] (see
    /// [`Importer::import_batch`]). A dry run over several batches should use one
    /// importer, which remembers what earlier batches would have changed.
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
    /// let row = ProductImport {
    ///     name: Some(ProductName::parse("Mouse")?),
    ///     price_cents: Some(PriceCents::parse(1_999)?),
    ///     stock: Some(Stock::parse(5)?),
    ///     category: Some(Category::parse("mice")?),
    ///     ..ProductImport::new(Sku::parse("MS-1")?)
    /// };
    /// let report = service.import_batch(&[row.clone()], false).await?;
    /// assert_eq!((report.created, report.updated), (1, 0));
    /// let again = service.import_batch(&[row], false).await?;
    /// assert_eq!(again.unchanged, 1, "the same row again changes nothing");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn import_batch(&self, rows: &[ProductImport], dry_run: bool) -> Result<BatchReport> {
        self.importer(dry_run).import_batch(rows).await
    }
}

impl Importer {
    /// Whether this importer writes nothing.
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
    /// assert!(!service.importer(false).is_dry_run());
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_dry_run(&self) -> bool {
        self.dry_run
    }

    /// Applies `rows` in one transaction (keep batches to a few hundred rows). Rows that
    /// cannot be applied (a new sku without a name, price or stock) are reported in
    /// [`BatchReport::failures`]; the others are applied. Fails, with nothing of this
    /// batch written, only if the database does.
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
    /// let mut importer = service.importer(false);
    /// let complete = ProductImport {
    ///     name: Some(ProductName::parse("Mouse")?),
    ///     price_cents: Some(PriceCents::parse(1_999)?),
    ///     stock: Some(Stock::parse(5)?),
    ///     ..ProductImport::new(Sku::parse("MS-1")?)
    /// };
    /// // A new sku without a name, price or stock cannot be created.
    /// let incomplete = ProductImport::new(Sku::parse("MS-2")?);
    /// let report = importer.import_batch(&[complete, incomplete]).await?;
    /// assert_eq!(report.created, 1);
    /// assert_eq!(report.failures.iter().map(|f| f.index).collect::<Vec<_>>(), vec![1]);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn import_batch(&mut self, rows: &[ProductImport]) -> Result<BatchReport> {
        let mut attempt = 1;
        loop {
            let lock = attempt == ATTEMPTS;
            match self.try_batch(rows, lock).await? {
                Attempt::Done(report) => return Ok(report),
                Attempt::Conflict(error) if attempt < ATTEMPTS => {
                    tracing::debug!(%error, attempt, "import: another writer changed a product of this batch; trying again");
                    attempt += 1;
                }
                Attempt::Conflict(error) => return Err(error.into()),
            }
        }
    }

    async fn try_batch(&mut self, rows: &[ProductImport], lock: bool) -> Result<Attempt> {
        let mut report = BatchReport::default();
        if rows.is_empty() {
            return Ok(Attempt::Done(report));
        }
        let started = Instant::now();
        let txn = self.service.begin_write().await?;
        let mut batch = self.load(&txn, rows, lock).await?;
        for (index, row) in rows.iter().enumerate() {
            match batch.get_mut(&row.sku) {
                Some(current) => {
                    if current.apply(row)? {
                        report.updated += 1;
                    } else {
                        report.unchanged += 1;
                    }
                }
                None => match Current::create(row)? {
                    Ok(current) => {
                        batch.push(row.sku.as_str(), current);
                        report.created += 1;
                    }
                    Err(error) => report.failures.push(ImportFailure { index, error }),
                },
            }
        }
        let written = match write(&txn, &batch).await {
            Ok(written) => written,
            Err(error) if is_conflict(&error) => {
                txn.rollback().await?;
                return Ok(Attempt::Conflict(error));
            }
            Err(error) => return Err(error.into()),
        };
        if self.dry_run {
            txn.rollback().await?;
            self.remember(batch);
            return Ok(Attempt::Done(report));
        }
        txn.commit().await?;
        let committed = Instant::now();
        if report.created > 0 {
            self.analyze_once().await;
        }
        self.invalidate(&written).await;
        tracing::debug!(
            rows = rows.len(),
            written = written.len(),
            database = ?committed - started,
            cache = ?committed.elapsed(),
            "import: batch applied"
        );
        Ok(Attempt::Done(report))
    }

    /// The batch's existing products (with `lock`, locked until the commit), overlaid in
    /// a dry run with what earlier batches would have made of them.
    async fn load(
        &self,
        txn: &DatabaseTransaction,
        rows: &[ProductImport],
        lock: bool,
    ) -> Result<Batch> {
        let mut skus: Vec<&str> = rows.iter().map(|r| r.sku.as_str()).collect();
        skus.sort_unstable();
        skus.dedup();
        let mut select = product::Entity::find()
            .filter(product::Column::Sku.is_in(skus.iter().copied()))
            .order_by_asc(product::Column::Id);
        // Without the lock, each UPDATE's `WHERE version = <read>` catches a concurrent
        // change (the batch is then tried again): locking 500 rows that are mostly left
        // unchanged would cost a write per row. SQLite has no row locks and needs none
        // (the transaction is IMMEDIATE).
        if lock && txn.get_database_backend() == DbBackend::Postgres {
            select = select.lock_exclusive();
        }
        let mut batch = Batch::default();
        for model in select.all(txn).await? {
            let sku = model.sku.clone();
            batch.push(&sku, Current::stored(model));
        }
        for sku in skus {
            if let Some(simulated) = self.simulated.get(sku) {
                batch.put(sku, simulated.clone());
            }
        }
        Ok(batch)
    }

    /// Dry run: keeps what this batch would have changed for the batches after it.
    fn remember(&mut self, batch: Batch) {
        for current in batch.rows {
            if current.is_dirty() {
                self.simulated
                    .insert(current.sku().to_owned(), current.settled());
            }
        }
    }

    /// PostgreSQL plans by statistics, and a table that was never analyzed (one that an
    /// import is filling from empty) gets none until autovacuum catches up: meanwhile
    /// the `sku IN (…)` lookups run as sequential scans, slower with every batch. Once
    /// the first batch has created products, a table without statistics is analyzed (a
    /// sample: milliseconds); later growth is then estimated from its size.
    async fn analyze_once(&mut self) {
        if self.analyzed || self.service.db.get_database_backend() != DbBackend::Postgres {
            return;
        }
        self.analyzed = true;
        let db = &self.service.db;
        let never_analyzed = db
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT relpages FROM pg_class WHERE oid = 'product'::regclass",
            ))
            .await
            .ok()
            .flatten()
            .and_then(|row| row.try_get::<i32>("", "relpages").ok())
            == Some(0);
        if never_analyzed && let Err(error) = db.execute_unprepared("ANALYZE product").await {
            tracing::debug!(%error, "import: cannot analyze the product table");
        }
    }

    /// After the commit: the changed products at their new versions, the list group and
    /// their categories' scopes once. Returns whether it was applied; if not, the outbox
    /// still owes it.
    async fn invalidate(&mut self, written: &[(i64, i64)]) -> bool {
        if written.is_empty() {
            return true;
        }
        if self.paused_until.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        // Only an insert leaves a product at version 1: an update raises it.
        let changes: Vec<Change> = written
            .iter()
            .map(|&(id, version)| match version {
                1 => Change::created(PRODUCT, id),
                _ => Change::at_version(PRODUCT, id, version),
            })
            .collect();
        if self.service.coherence.after_commit_deferred(&changes).await {
            self.paused_until = None;
            self.pause = FIRST_PAUSE;
            true
        } else {
            tracing::warn!(pause = ?self.pause, "import: cache invalidation not applied; the outbox keeps what is owed, and inline invalidation pauses");
            self.paused_until = Some(Instant::now() + self.pause);
            self.pause = (self.pause * 2).min(MAX_PAUSE);
            false
        }
    }
}

/// The outcome of one try at a batch.
enum Attempt {
    Done(BatchReport),
    /// Another writer got in the way (see [`is_conflict`]).
    Conflict(DbErr),
}

/// A unique violation (another writer created one of the batch's skus) or an update
/// that found its row at another version: the batch is tried again from the start.
fn is_conflict(error: &DbErr) -> bool {
    matches!(error, DbErr::RecordNotUpdated)
        || matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}
