//! Writes: one statement each (its own transaction, the outbox triggers inside it),
//! then the invalidation after its commit.

use cache_service::Change;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait,
    ExprTrait, QueryFilter,
};

use super::{PRODUCT, Product, ProductService, now, write_error};
use crate::domain::{NewProduct, ProductId, ProductPatch, Version};
use crate::entity::product;
use crate::error::{Error, Result};

impl ProductService {
    /// Creates a product at version 1.
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
    /// let created = service.create(keyboard.clone()).await?;
    /// assert_eq!((created.sku.as_str(), created.version), ("KB-001", 1));
    /// assert!(matches!(service.create(keyboard).await, Err(Error::DuplicateSku(_))));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn create(&self, input: NewProduct) -> Result<Product> {
        let now = now();
        let mut row = product::ActiveModel {
            version: Set(1),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        };
        let sku = input.sku.clone();
        // Every writable field, as a full patch sets it.
        for (column, value) in product::patch_columns(&input.into()) {
            row.try_set(column, value)?;
        }
        let model = product::Entity::insert(row)
            .exec_with_returning(&self.db)
            .await
            .map_err(|e| write_error(e, Some(&sku)))?;
        let change = Change::created(PRODUCT, model.id).with_scopes([&model.category]);
        self.invalidate_after_commit(change).await;
        Ok(model.into())
    }

    /// Replaces every writable field (PUT). With `expected`, fails with
    /// [`Error::VersionMismatch`] unless the row is at that version.
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
    /// let created = service.create(keyboard.clone()).await?;
    /// let id = ProductId::parse(created.id)?;
    /// let cheaper = NewProduct { price_cents: PriceCents::parse(7_999)?, ..keyboard };
    /// let replaced = service.replace(id, cheaper.clone(), Some(Version::parse(1)?)).await?;
    /// assert_eq!((replaced.price_cents, replaced.version), (7_999, 2));
    /// // A stale version changes nothing.
    /// assert!(matches!(
    ///     service.replace(id, cheaper, Some(Version::parse(1)?)).await,
    ///     Err(Error::VersionMismatch { .. })
    /// ));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn replace(
        &self,
        id: ProductId,
        input: NewProduct,
        expected: Option<Version>,
    ) -> Result<Product> {
        self.update(id, input.into(), expected).await
    }

    /// Changes the given fields (PATCH). An empty patch changes nothing and returns the
    /// product as it is (still checking `expected`).
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
    /// let created = service.create(keyboard).await?;
    /// let id = ProductId::parse(created.id)?;
    /// let patch = ProductPatch { stock: Some(Stock::parse(3)?), ..ProductPatch::default() };
    /// let patched = service.patch(id, patch, None).await?;
    /// assert_eq!((patched.stock, patched.version), (3, 2));
    /// assert_eq!(service.find_by_id(id).await?, patched, "the read after the write sees it");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn patch(
        &self,
        id: ProductId,
        patch: ProductPatch,
        expected: Option<Version>,
    ) -> Result<Product> {
        if patch.is_empty() {
            let model = product::Entity::find_by_id(id.get())
                .one(&self.db)
                .await?
                .ok_or(Error::NotFound { id })?;
            check_expected(expected, model.version)?;
            return Ok(model.into());
        }
        self.update(id, patch, expected).await
    }

    /// Deletes the product. With `expected`, only if the row is at that version.
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
    /// let created = service.create(keyboard).await?;
    /// let id = ProductId::parse(created.id)?;
    /// service.delete(id, Some(Version::parse(1)?)).await?;
    /// assert!(matches!(service.find_by_id(id).await, Err(Error::NotFound { .. })));
    /// assert!(matches!(service.delete(id, None).await, Err(Error::NotFound { .. })));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn delete(&self, id: ProductId, expected: Option<Version>) -> Result<()> {
        let mut delete = product::Entity::delete_many().filter(product::Column::Id.eq(id.get()));
        if let Some(expected) = expected {
            delete = delete.filter(product::Column::Version.eq(expected.get()));
        }
        let Some(deleted) = delete.exec_with_returning(&self.db).await?.pop() else {
            return Err(diagnose_miss(&self.db, id, expected).await);
        };
        // A deleted row counts as one version past its last, so every cached copy and
        // every in-flight fill of an older version is refused.
        let change = Change::at_version(PRODUCT, deleted.id, deleted.version + 1)
            .with_scopes([&deleted.category]);
        self.invalidate_after_commit(change).await;
        Ok(())
    }

    async fn update(
        &self,
        id: ProductId,
        patch: ProductPatch,
        expected: Option<Version>,
    ) -> Result<Product> {
        use product::Column as C;
        let mut update = product::Entity::update_many()
            .col_expr(C::Version, Expr::col(C::Version).add(1))
            .col_expr(C::UpdatedAt, Expr::value(now()))
            .filter(C::Id.eq(id.get()));
        if let Some(expected) = expected {
            update = update.filter(C::Version.eq(expected.get()));
        }
        for (column, value) in product::patch_columns(&patch) {
            update = update.col_expr(column, Expr::value(value));
        }
        let updated = update
            .exec_with_returning(&self.db)
            .await
            .map_err(|e| write_error(e, patch.sku.as_ref()))?
            .pop();
        let Some(model) = updated else {
            return Err(diagnose_miss(&self.db, id, expected).await);
        };
        let mut change = Change::at_version(PRODUCT, model.id, model.version);
        // An update that leaves the category alone touched only its scope. One that sets
        // it may have moved the product: the category it had is in the outbox row the
        // trigger wrote, where the coherence component looks it up.
        if patch.category.is_none() {
            change = change.with_scopes([&model.category]);
        }
        self.invalidate_after_commit(change).await;
        Ok(model.into())
    }
}

fn check_expected(expected: Option<Version>, actual: i64) -> Result<()> {
    match expected {
        Some(expected) if expected.get() != actual => Err(Error::VersionMismatch {
            expected,
            actual: Version::from_db(actual),
        }),
        _ => Ok(()),
    }
}

/// An `UPDATE`/`DELETE` matched no row: either the id does not exist or the version
/// differs. Runs after the statement, so a concurrent write may have moved the row on.
async fn diagnose_miss(
    db: &impl ConnectionTrait,
    id: ProductId,
    expected: Option<Version>,
) -> Error {
    match product::Entity::find_by_id(id.get()).one(db).await {
        Ok(None) => Error::NotFound { id },
        // Also when the row is at `expected` by now: a concurrent write moved it there
        // after this statement missed it, so when it ran the precondition failed.
        Ok(Some(model)) => match expected {
            Some(expected) => Error::VersionMismatch {
                expected,
                actual: Version::from_db(model.version),
            },
            None => Error::Database(DbErr::RecordNotUpdated),
        },
        Err(error) => Error::Database(error),
    }
}
