//! One batch of an import in memory: the products it touches as its rows leave them,
//! and the statements that write the net effect (see the [parent module](super)).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait,
    IdenStatic, Iterable, ModelTrait, Statement, Value,
};

use super::ProductImport;
use crate::domain::{PriceCents, ProductName, Sku, Stock, ValidationError};
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

/// A product as the batch's rows have left it so far.
#[derive(Debug, Clone)]
pub(super) struct Current {
    /// The product's columns after the rows applied so far (`version` included). For a
    /// product not in the database yet (created by this batch, or by an earlier,
    /// rolled-back dry-run batch) `id` means nothing and `in_database` is false.
    model: product::Model,
    in_database: bool,
    /// The version this batch started from; 0 for a new product.
    stored_version: i64,
    /// The version of the database row (the `WHERE` of the update); differs from
    /// `stored_version` only in a dry run, for a product an earlier batch changed.
    db_version: i64,
    /// The columns the batch changed, by name.
    changed: Vec<&'static str>,
}

impl Current {
    pub(super) fn stored(model: product::Model) -> Self {
        Self {
            in_database: true,
            stored_version: model.version,
            db_version: model.version,
            changed: Vec::new(),
            model,
        }
    }

    /// A new product from a row that gives every required field (`description` and
    /// `category` default to `""`); the inner error names a missing one. The outer error
    /// is sea-orm's refusal of a value for a column, as in [`apply`](Self::apply).
    pub(super) fn create(row: &ProductImport) -> Result<Result<Self, ValidationError>, DbErr> {
        let required = [
            (ProductName::FIELD, row.name.is_some()),
            (PriceCents::FIELD, row.price_cents.is_some()),
            (Stock::FIELD, row.stock.is_some()),
        ];
        if let Some((field, _)) = required.iter().find(|(_, given)| !given) {
            return Ok(Err(ValidationError::new(
                field,
                "is required to create a product",
            )));
        }
        let mut new = Self {
            model: product::Model {
                sku: row.sku.to_string(),
                ..product::Model::default()
            },
            in_database: false,
            stored_version: 0,
            db_version: 0,
            changed: Vec::new(),
        };
        new.apply(row)?;
        new.model.version = 1;
        Ok(Ok(new))
    }

    /// The product's sku.
    pub(super) fn sku(&self) -> &str {
        &self.model.sku
    }

    /// Applies the row's fields; returns whether anything changed (then the version
    /// moves on by one, as a single update would move it). Fails only if sea-orm refuses
    /// a value for its column, which `patch_columns` maps by the entity's own types.
    pub(super) fn apply(&mut self, row: &ProductImport) -> Result<bool, DbErr> {
        let mut changed = false;
        for (column, value) in product::patch_columns(&row.fields()) {
            if self.model.get(column) != value {
                self.model.try_set(column, value)?;
                if !self.changed.contains(&column.as_str()) {
                    self.changed.push(column.as_str());
                }
                changed = true;
            }
        }
        if changed {
            self.model.version += 1;
        }
        Ok(changed)
    }

    /// Whether the batch has something to write for this product.
    pub(super) fn is_dirty(&self) -> bool {
        self.model.version != self.stored_version
    }

    /// The state a later batch starts from (dry run).
    pub(super) fn settled(mut self) -> Self {
        self.stored_version = self.model.version;
        self.changed.clear();
        self
    }

    /// The row to insert: every column but the id, created and updated `now`.
    fn insert_model(&self, now: DateTime<Utc>) -> Result<product::ActiveModel, DbErr> {
        let mut insert = <product::ActiveModel as ActiveModelTrait>::default();
        for column in product::Column::iter() {
            match column {
                product::Column::Id => {}
                product::Column::CreatedAt | product::Column::UpdatedAt => {
                    insert.try_set(column, now.into())?;
                }
                _ => insert.try_set(column, self.model.get(column))?,
            }
        }
        Ok(insert)
    }
}

/// The columns an import may change: every column but the key, the sku that names the
/// product, and those the statement maintains itself.
fn importable_columns() -> impl Iterator<Item = product::Column> {
    use product::Column as C;
    C::iter().filter(|c| !matches!(c, C::Id | C::Sku | C::Version | C::CreatedAt | C::UpdatedAt))
}

/// The SQL type of a column's value, for PostgreSQL's casts.
fn sql_type(value: &Value) -> &'static str {
    match value {
        Value::BigInt(_) => "bigint",
        Value::Int(_) => "integer",
        Value::Double(_) => "double precision",
        Value::Bool(_) => "boolean",
        _ => "text",
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
    let columns: Vec<product::Column> = importable_columns().collect();
    let mut values: Vec<Value> = Vec::with_capacity(changed.len() * (columns.len() + 3) + 1);
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
        let mut cells = vec![
            param(id.into(), "bigint"),
            param(c.db_version.into(), "bigint"),
            param((c.model.version - c.stored_version).into(), "bigint"),
        ];
        for &column in &columns {
            let value = c.model.get(column);
            let cast = sql_type(&value);
            let value = if c.changed.contains(&column.as_str()) {
                value
            } else {
                value.as_null()
            };
            cells.push(param(value, cast));
        }
        rows.push(format!("({})", cells.join(", ")));
    }
    let now = param(now.into(), "timestamptz");
    let names: Vec<&str> = columns.iter().map(|c| c.as_str()).collect();
    let sets: Vec<String> = names
        .iter()
        .map(|n| format!("{n} = COALESCE(v.{n}, product.{n})"))
        .collect();
    let sql = format!(
        "WITH v (id, expected, bump, {}) AS (VALUES {}) \
         UPDATE product SET {}, version = product.version + v.bump, updated_at = {now} \
         FROM v WHERE product.id = v.id AND product.version = v.expected",
        names.join(", "),
        rows.join(", "),
        sets.join(", ")
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
        .filter(|c| !c.in_database && c.is_dirty())
        .map(|c| c.insert_model(now))
        .collect::<Result<_, _>>()?;
    if !new.is_empty() {
        let inserted = product::Entity::insert_many(new)
            .exec_with_returning(txn)
            .await?;
        written.extend(inserted.into_iter().map(|m| (m.id, m.version)));
    }

    let changed: Vec<(i64, &Current)> = batch
        .rows
        .iter()
        .filter(|c| c.in_database && c.is_dirty())
        .map(|c| (c.model.id, c))
        .collect();
    if !changed.is_empty() {
        let statement = update_statement(txn.get_database_backend(), &changed, now);
        if txn.execute_raw(statement).await?.rows_affected() != changed.len() as u64 {
            // A product changed since it was read (PostgreSQL; SQLite has one writer):
            // a conflict, so the batch is tried again.
            return Err(DbErr::RecordNotUpdated);
        }
        written.extend(changed.iter().map(|(id, c)| (*id, c.model.version)));
    }
    Ok(written)
}
