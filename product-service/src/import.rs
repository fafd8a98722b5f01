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
//!    products are invalidated at their new versions, and the list group once.
//!
//! The database triggers record every change in `cache_outbox` in the same transaction,
//! so an invalidation that fails here (Redis down) is applied later by a relay; the
//! import's caller waits for that once, at the end ([`ProductService::settle_import`]),
//! instead of after every batch. Inline invalidation runs only at a checked cache epoch (the first
//! batch checks it). After a failed invalidation, inline invalidation pauses (1 s,
//! doubling up to 30 s) and the outbox keeps what is owed, so a dead or frozen Redis
//! costs a few timeouts, not one per batch. Replaying what was applied inline costs a
//! relay one fence read per product, no reload.
//!
//! A dry run executes the same statements in a transaction that is rolled back, and
//! invalidates nothing. It remembers what its earlier batches would have changed, so a
//! sku that appears in several batches is counted as the real import would count it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cache_service::Change;
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, SqlErr, Statement, Value,
};

use crate::domain::{Category, Description, PriceCents, ProductName, Sku, Stock, ValidationError};
use crate::entity::product;
use crate::error::Result;
use crate::service::{PRODUCT, ProductService, now};

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
    pub async fn import_batch(&self, rows: &[ProductImport], dry_run: bool) -> Result<BatchReport> {
        self.importer(dry_run).import_batch(rows).await
    }
}

impl Importer {
    /// Whether this importer writes nothing.
    pub fn is_dry_run(&self) -> bool {
        self.dry_run
    }

    /// Applies `rows` in one transaction (keep batches to a few hundred rows). Rows that
    /// cannot be applied (a new sku without a name, price or stock) are reported in
    /// [`BatchReport::failures`]; the others are applied. Fails, with nothing of this
    /// batch written, only if the database does.
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
                    if current.apply(row) {
                        report.updated += 1;
                    } else {
                        report.unchanged += 1;
                    }
                }
                None => match Current::create(row) {
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
                    .insert(current.sku.clone(), current.settled());
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

    /// After the commit: the changed products at their new versions, the list group
    /// once. Returns whether it was applied; if not, the outbox still owes it.
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

/// The products a batch touches, in order: the existing ones by id, then the new ones
/// in the order the rows created them (so ids follow the file).
#[derive(Debug, Default)]
struct Batch {
    rows: Vec<Current>,
    by_sku: HashMap<String, usize>,
}

impl Batch {
    fn get_mut(&mut self, sku: &Sku) -> Option<&mut Current> {
        let index = *self.by_sku.get(sku.as_str())?;
        self.rows.get_mut(index)
    }

    fn push(&mut self, sku: &str, current: Current) {
        self.by_sku.insert(sku.to_owned(), self.rows.len());
        self.rows.push(current);
    }

    /// Replaces the product with this sku, or adds it.
    fn put(&mut self, sku: &str, current: Current) {
        match self.by_sku.get(sku) {
            Some(&index) => self.rows[index] = current,
            None => self.push(sku, current),
        }
    }
}

/// Which columns the batch changed.
#[derive(Debug, Clone, Copy, Default)]
struct Changed {
    name: bool,
    description: bool,
    price_cents: bool,
    stock: bool,
    category: bool,
}

/// A product as the batch's rows have left it so far.
#[derive(Debug, Clone)]
struct Current {
    /// `None` for a product that is not in the database yet: created by this batch (or
    /// by an earlier, rolled-back dry-run batch).
    id: Option<i64>,
    sku: String,
    name: String,
    description: String,
    price_cents: i64,
    stock: i64,
    category: String,
    /// The version after the rows applied so far.
    version: i64,
    /// The version this batch started from; 0 for a new product.
    stored_version: i64,
    /// The version of the database row (the `WHERE` of the update); differs from
    /// `stored_version` only in a dry run, for a product an earlier batch changed.
    db_version: i64,
    changed: Changed,
}

impl Current {
    fn stored(m: product::Model) -> Self {
        Self {
            id: Some(m.id),
            sku: m.sku,
            name: m.name,
            description: m.description,
            price_cents: m.price_cents,
            stock: m.stock,
            category: m.category,
            version: m.version,
            stored_version: m.version,
            db_version: m.version,
            changed: Changed::default(),
        }
    }

    /// A new product from a row that gives every required field.
    fn create(row: &ProductImport) -> Result<Self, ValidationError> {
        let required = |field| ValidationError::new(field, "is required to create a product");
        let name = row.name.as_ref().ok_or_else(|| required("name"))?;
        let price_cents = row.price_cents.ok_or_else(|| required("price_cents"))?;
        let stock = row.stock.ok_or_else(|| required("stock"))?;
        Ok(Self {
            id: None,
            sku: row.sku.as_str().to_owned(),
            name: name.as_str().to_owned(),
            description: row
                .description
                .as_ref()
                .map_or_else(String::new, |d| d.as_str().to_owned()),
            price_cents: price_cents.get(),
            stock: stock.get(),
            category: row
                .category
                .as_ref()
                .map_or_else(String::new, |c| c.as_str().to_owned()),
            version: 1,
            stored_version: 0,
            db_version: 0,
            changed: Changed::default(),
        })
    }

    /// Applies the row's fields; returns whether anything changed (then the version
    /// moves on by one, as a single update would move it).
    fn apply(&mut self, row: &ProductImport) -> bool {
        let mut changed = false;
        changed |= set_text(
            &mut self.name,
            row.name.as_ref().map(ProductName::as_str),
            &mut self.changed.name,
        );
        changed |= set_text(
            &mut self.description,
            row.description.as_ref().map(Description::as_str),
            &mut self.changed.description,
        );
        changed |= set_integer(
            &mut self.price_cents,
            row.price_cents.map(PriceCents::get),
            &mut self.changed.price_cents,
        );
        changed |= set_integer(
            &mut self.stock,
            row.stock.map(Stock::get),
            &mut self.changed.stock,
        );
        changed |= set_text(
            &mut self.category,
            row.category.as_ref().map(Category::as_str),
            &mut self.changed.category,
        );
        if changed {
            self.version += 1;
        }
        changed
    }

    /// Whether the batch has something to write for this product.
    fn is_dirty(&self) -> bool {
        self.version != self.stored_version
    }

    /// The state a later batch starts from (dry run).
    fn settled(mut self) -> Self {
        self.stored_version = self.version;
        self.changed = Changed::default();
        self
    }

    fn insert_model(&self, now: DateTime<Utc>) -> product::ActiveModel {
        product::ActiveModel {
            sku: Set(self.sku.clone()),
            name: Set(self.name.clone()),
            description: Set(self.description.clone()),
            price_cents: Set(self.price_cents),
            stock: Set(self.stock),
            category: Set(self.category.clone()),
            version: Set(self.version),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        }
    }
}

fn set_text(field: &mut String, value: Option<&str>, changed: &mut bool) -> bool {
    match value {
        Some(value) if value != field.as_str() => {
            value.clone_into(field);
            *changed = true;
            true
        }
        _ => false,
    }
}

fn set_integer(field: &mut i64, value: Option<i64>, changed: &mut bool) -> bool {
    match value {
        Some(value) if value != *field => {
            *field = value;
            *changed = true;
            true
        }
        _ => false,
    }
}

/// One `UPDATE` for every changed product of the batch, each row guarded by the version
/// it was read at: `WITH v(…) AS (VALUES …) UPDATE product SET … FROM v WHERE
/// product.id = v.id AND product.version = v.expected` (PostgreSQL, and SQLite ≥ 3.33).
/// A column the batch did not change is `NULL` in `v` and keeps its value
/// (`COALESCE`); `version` moves on by the number of rows that changed the product.
fn update_statement(
    backend: DbBackend,
    changed: &[(i64, &Current)],
    now: DateTime<Utc>,
) -> Statement {
    let mut values: Vec<Value> = Vec::with_capacity(changed.len() * 8 + 1);
    // PostgreSQL cannot infer the types of parameters in VALUES: cast each one.
    let mut param = |value: Value, cast: &str| {
        values.push(value);
        match backend {
            DbBackend::Postgres => format!("${}::{cast}", values.len()),
            _ => "?".to_owned(),
        }
    };
    let mut rows = Vec::with_capacity(changed.len());
    for &(id, c) in changed {
        let set = c.changed;
        let cells = [
            param(id.into(), "bigint"),
            param(c.db_version.into(), "bigint"),
            param((c.version - c.stored_version).into(), "bigint"),
            param(set.name.then(|| c.name.clone()).into(), "text"),
            param(
                set.description.then(|| c.description.clone()).into(),
                "text",
            ),
            param(set.price_cents.then_some(c.price_cents).into(), "bigint"),
            param(set.stock.then_some(c.stock).into(), "bigint"),
            param(set.category.then(|| c.category.clone()).into(), "text"),
        ];
        rows.push(format!("({})", cells.join(", ")));
    }
    let now = param(now.into(), "timestamptz");
    let sql = format!(
        "WITH v (id, expected, bump, name, description, price_cents, stock, category) \
         AS (VALUES {}) \
         UPDATE product SET \
         name = COALESCE(v.name, product.name), \
         description = COALESCE(v.description, product.description), \
         price_cents = COALESCE(v.price_cents, product.price_cents), \
         stock = COALESCE(v.stock, product.stock), \
         category = COALESCE(v.category, product.category), \
         version = product.version + v.bump, \
         updated_at = {now} \
         FROM v WHERE product.id = v.id AND product.version = v.expected",
        rows.join(", ")
    );
    Statement::from_sql_and_values(backend, sql, values)
}

/// Writes the batch's net effect; returns `(id, version)` of every product it created
/// or changed, for the invalidation after commit.
async fn write(txn: &DatabaseTransaction, batch: &Batch) -> Result<Vec<(i64, i64)>, DbErr> {
    let now = now();
    let mut written = Vec::new();

    let new: Vec<product::ActiveModel> = batch
        .rows
        .iter()
        .filter(|c| c.id.is_none() && c.is_dirty())
        .map(|c| c.insert_model(now))
        .collect();
    if !new.is_empty() {
        let inserted = product::Entity::insert_many(new)
            .exec_with_returning(txn)
            .await?;
        written.extend(inserted.into_iter().map(|m| (m.id, m.version)));
    }

    let changed: Vec<(i64, &Current)> = batch
        .rows
        .iter()
        .filter(|c| c.is_dirty())
        .filter_map(|c| Some((c.id?, c)))
        .collect();
    if !changed.is_empty() {
        let statement = update_statement(txn.get_database_backend(), &changed, now);
        if txn.execute_raw(statement).await?.rows_affected() != changed.len() as u64 {
            // A product changed since it was read (PostgreSQL; SQLite has one writer):
            // a conflict, so the batch is tried again.
            return Err(DbErr::RecordNotUpdated);
        }
        written.extend(changed.iter().map(|(id, c)| (*id, c.version)));
    }
    Ok(written)
}
