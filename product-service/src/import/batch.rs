//! One batch of an import in memory: the products it touches as its rows leave them,
//! and the statements that write the net effect (see the [parent module](super)).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait,
    Statement, Value,
};

use super::ProductImport;
use crate::domain::{Category, Description, PriceCents, ProductName, Sku, Stock, ValidationError};
use crate::entity::product;
use crate::service::now;

/// The products a batch touches, in order: the existing ones by id, then the new ones
/// in the order the rows created them (so ids follow the file).
#[derive(Debug, Default)]
pub(super) struct Batch {
    pub(super) rows: Vec<Current>,
    by_sku: HashMap<String, usize>,
}

impl Batch {
    pub(super) fn get_mut(&mut self, sku: &Sku) -> Option<&mut Current> {
        let index = *self.by_sku.get(sku.as_str())?;
        self.rows.get_mut(index)
    }

    pub(super) fn push(&mut self, sku: &str, current: Current) {
        self.by_sku.insert(sku.to_owned(), self.rows.len());
        self.rows.push(current);
    }

    /// Replaces the product with this sku, or adds it.
    pub(super) fn put(&mut self, sku: &str, current: Current) {
        match self.by_sku.get(sku) {
            Some(&index) => self.rows[index] = current,
            None => self.push(sku, current),
        }
    }
}

/// Which columns the batch changed.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Changed {
    name: bool,
    description: bool,
    price_cents: bool,
    stock: bool,
    category: bool,
}

/// A product as the batch's rows have left it so far.
#[derive(Debug, Clone)]
pub(super) struct Current {
    /// `None` for a product that is not in the database yet: created by this batch (or
    /// by an earlier, rolled-back dry-run batch).
    id: Option<i64>,
    pub(super) sku: String,
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
    pub(super) fn stored(m: product::Model) -> Self {
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
    pub(super) fn create(row: &ProductImport) -> Result<Self, ValidationError> {
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
    pub(super) fn apply(&mut self, row: &ProductImport) -> bool {
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
    pub(super) fn is_dirty(&self) -> bool {
        self.version != self.stored_version
    }

    /// The state a later batch starts from (dry run).
    pub(super) fn settled(mut self) -> Self {
        self.stored_version = self.version;
        self.changed = Changed::default();
        self
    }

    pub(super) fn insert_model(&self, now: DateTime<Utc>) -> product::ActiveModel {
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

pub(super) fn set_text(field: &mut String, value: Option<&str>, changed: &mut bool) -> bool {
    match value {
        Some(value) if value != field.as_str() => {
            value.clone_into(field);
            *changed = true;
            true
        }
        _ => false,
    }
}

pub(super) fn set_integer(field: &mut i64, value: Option<i64>, changed: &mut bool) -> bool {
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
pub(super) fn update_statement(
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
pub(super) async fn write(
    txn: &DatabaseTransaction,
    batch: &Batch,
) -> Result<Vec<(i64, i64)>, DbErr> {
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
