//! Bulk upsert by sku: the write side of `api-server import`.
//!
//! An [`Importer`] applies batches of [`ProductImport`] rows, each batch in one write
//! transaction:
//!
//! 1. one `SELECT … WHERE sku IN (…)` reads the batch's existing products (on PostgreSQL
//!    `FOR UPDATE`, in id order; on SQLite the `IMMEDIATE` transaction already makes the
//!    importer the only writer), so nobody changes them until the commit;
//! 2. the rows are applied in order to an in-memory copy of those products: a new sku is
//!    created, a known one gets the fields the row gives, or is counted unchanged when
//!    they already hold those values. A sku may appear several times in one batch; each
//!    row sees the effect of the rows before it, exactly as if they were applied one by
//!    one;
//! 3. the net effect is written: one multi-row `INSERT` for the new products, and per
//!    changed product one atomic `UPDATE` of only the changed columns with
//!    `version = version + n` (`n`: the rows that changed it). Final values and versions
//!    are those of applying the rows one by one, in far fewer statements;
//! 4. after the commit (never before, never for a rolled-back batch) the batch's changed
//!    products are invalidated at their new versions and the list group once.
//!
//! The database triggers record every change in `cache_outbox` in the same transaction,
//! so an invalidation that fails here (Redis down) is applied later by a relay
//! ([`ProductService::relay`]). After the first failure the importer stops trying
//! inline for the rest of the import and leaves the invalidations to the outbox, so a
//! dead or frozen Redis costs one timeout, not one per batch.
//!
//! A dry run executes the same statements in a transaction that is rolled back, and
//! invalidates nothing. It remembers what its earlier batches would have changed, so a
//! sku that appears in several batches is counted as the real import would count it.

use std::collections::HashMap;

use cache_service::Invalidation;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr,
    EntityTrait, ExprTrait, QueryFilter, QueryOrder, QuerySelect, SqlErr,
};

use crate::domain::{Category, Description, PriceCents, ProductName, Sku, Stock, ValidationError};
use crate::entity::product;
use crate::error::Result;
use crate::service::{PRODUCT, PRODUCT_LIST, ProductService, now};

/// How many times a batch is tried when a concurrent writer created one of its new skus
/// between the batch's `SELECT` and its `INSERT` (PostgreSQL only: on SQLite the
/// importer is the only writer for the whole transaction).
const ATTEMPTS: usize = 3;

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
    /// Cleared after the first failed invalidation; the outbox keeps the rest.
    invalidate_inline: bool,
}

impl ProductService {
    /// An importer over this service. With `dry_run`, every batch runs in a transaction
    /// that is rolled back, and nothing is invalidated.
    pub fn importer(&self, dry_run: bool) -> Importer {
        Importer {
            service: self.clone(),
            dry_run,
            simulated: HashMap::new(),
            invalidate_inline: true,
        }
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
            match self.try_batch(rows).await? {
                Attempt::Done(report) => return Ok(report),
                Attempt::Conflict(error) if attempt < ATTEMPTS => {
                    tracing::debug!(%error, attempt, "import: another writer created a sku of this batch; trying again");
                    attempt += 1;
                }
                Attempt::Conflict(error) => return Err(error.into()),
            }
        }
    }

    async fn try_batch(&mut self, rows: &[ProductImport]) -> Result<Attempt> {
        let mut report = BatchReport::default();
        if rows.is_empty() {
            return Ok(Attempt::Done(report));
        }
        let txn = self.service.begin_write().await?;
        let mut batch = self.load(&txn, rows).await?;
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
        } else {
            txn.commit().await?;
            self.invalidate(&written).await;
        }
        Ok(Attempt::Done(report))
    }

    /// The batch's existing products, locked until the commit, overlaid in a dry run
    /// with what earlier batches would have made of them.
    async fn load(&self, txn: &DatabaseTransaction, rows: &[ProductImport]) -> Result<Batch> {
        let mut skus: Vec<&str> = rows.iter().map(|r| r.sku.as_str()).collect();
        skus.sort_unstable();
        skus.dedup();
        let mut select = product::Entity::find()
            .filter(product::Column::Sku.is_in(skus.iter().copied()))
            .order_by_asc(product::Column::Id);
        if txn.get_database_backend() == DbBackend::Postgres {
            // SQLite has no row locks (and needs none: the transaction is IMMEDIATE).
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

    /// After the commit: the changed products at their new versions, the list group once.
    async fn invalidate(&mut self, written: &[(i64, i64)]) {
        let cache = &self.service.cache;
        if written.is_empty() || !self.invalidate_inline || cache.needs_resync() {
            return;
        }
        let items: Vec<Invalidation> = written
            .iter()
            .map(|&(id, version)| {
                Invalidation::at_version(cache.key(PRODUCT, id), version.unsigned_abs())
            })
            .collect();
        if let Err(error) = cache.invalidate_write(&items, &[PRODUCT_LIST]).await {
            self.invalidate_inline = false;
            tracing::warn!(%error, "import: cache invalidation failed; the outbox keeps the invalidations of this and later batches for the relay");
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

/// Writes the batch's net effect; returns `(id, version)` of every product it created
/// or changed, for the invalidation after commit.
async fn write(txn: &DatabaseTransaction, batch: &Batch) -> Result<Vec<(i64, i64)>, DbErr> {
    use product::Column as C;
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

    for current in batch.rows.iter().filter(|c| c.is_dirty()) {
        let Some(id) = current.id else { continue }; // inserted above
        let changed = current.changed;
        let mut update = product::Entity::update_many()
            .col_expr(
                C::Version,
                Expr::col(C::Version).add(current.version - current.stored_version),
            )
            .col_expr(C::UpdatedAt, Expr::value(now))
            .filter(C::Id.eq(id))
            .filter(C::Version.eq(current.db_version));
        if changed.name {
            update = update.col_expr(C::Name, Expr::value(current.name.clone()));
        }
        if changed.description {
            update = update.col_expr(C::Description, Expr::value(current.description.clone()));
        }
        if changed.price_cents {
            update = update.col_expr(C::PriceCents, Expr::value(current.price_cents));
        }
        if changed.stock {
            update = update.col_expr(C::Stock, Expr::value(current.stock));
        }
        if changed.category {
            update = update.col_expr(C::Category, Expr::value(current.category.clone()));
        }
        if update.exec(txn).await?.rows_affected != 1 {
            // Cannot happen: the row is locked (PostgreSQL) or the transaction is the
            // only writer (SQLite). Treated as a conflict: the batch is tried again.
            return Err(DbErr::RecordNotUpdated);
        }
        written.push((id, current.version));
    }
    Ok(written)
}
