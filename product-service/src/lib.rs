//! Products: validated domain types, the database schema, and [`ProductService`], the one
//! way to change a product.
//!
//! # Layout
//!
//! - [`domain`]: types that validate once at the edge ([`Sku`], [`ProductName`],
//!   [`PriceCents`], …) and the inputs built only from them ([`NewProduct`],
//!   [`ProductPatch`], [`PageQuery`]). Each type carries its rule's numbers as constants
//!   ([`Sku::MAX_LEN`], [`PriceCents::MAX`], …): the one place of every contract number.
//! - [`service`]: [`ProductService`]: reads through the cache, writes in one transaction
//!   each, then invalidation.
//! - [`jobs`]: reprice jobs, stored in the database and run in batches by a worker.
//! - [`import`]: [`Importer`]: bulk upsert by sku in batches (one transaction each, then
//!   invalidation), behind `api-server import`; [`ProductService::settle_import`] waits,
//!   at the end, for the cache to show what it wrote.
//! - The outbox, its relay and the cache epoch are `cache-service`'s
//!   [`Coherence`] component; this crate declares the product
//!   table to it ([`PRODUCT_TABLE`]) and installs its triggers in a migration.
//! - [`db`]: connecting (SQLite or PostgreSQL) and [`migrate`].
//! - `entity` (private): the sea-orm entity. Its write side never leaves this crate.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
//! use cache_service::{CacheConfig, CacheService};
//! use product_service::{
//!     Category, Description, NewProduct, PriceCents, ProductId, ProductName, ProductPatch,
//!     ProductService, Sku, Stock,
//! };
//!
//! let db = product_service::connect("sqlite::memory:").await?;
//! product_service::migrate(&db).await?;
//! let cache = CacheService::in_memory(CacheConfig::with_prefix("shop"), 10_000)?;
//! let service = ProductService::new(db, cache).await?;
//!
//! let created = service
//!     .create(NewProduct {
//!         sku: Sku::parse("KB-001")?,
//!         name: ProductName::parse("Mechanical keyboard")?,
//!         description: Description::default(),
//!         price_cents: PriceCents::parse(8_999)?,
//!         stock: Stock::parse(12)?,
//!         category: Category::parse("keyboards")?,
//!     })
//!     .await?;
//! let id = ProductId::parse(created.id)?;
//! assert_eq!(service.find_by_id(id).await?, created); // now cached
//!
//! let patch = ProductPatch { price_cents: Some(PriceCents::parse(7_999)?), ..Default::default() };
//! service.patch(id, patch, None).await?; // commit, then invalidate
//! assert_eq!(service.find_by_id(id).await?.price_cents, 7_999);
//! # Ok(())
//! # }
//! ```
//!
//! # Invariants
//!
//! 1. **Single write path.** Outside this crate no code can insert, update or delete a
//!    product row through this crate's types without [`ProductService`]: the entity is
//!    private, and the service takes only validated inputs.
//! 2. **Invalidate after commit.** Each write method commits, then invalidates the
//!    product's key (fenced at the new version), the list group and the scopes of the
//!    categories the write touched (both, when a product moved); a rolled-back write
//!    invalidates nothing.
//! 3. **Nothing lost.** Triggers record the invalidation each change owes in
//!    `cache_outbox`, in the change's own transaction, whoever made it; the relay applies
//!    and deletes them. A crash, a Redis outage or a raw SQL write delays an
//!    invalidation, never loses it.
//! 4. **Versions are atomic.** `version` is bumped by the same `UPDATE` that changes the
//!    row, with the expected version in its `WHERE` clause; there is no read-modify-write.
//!
//! The rule is checked by the compiler. Outside this crate, the entity's write side
//! cannot be named:
//!
//! ```compile_fail
//! use product_service::entity::product::ActiveModel;
//! ```
//!
//! nor can the service's database connection be reached:
//!
//! ```compile_fail
//! fn bypass(service: &product_service::ProductService) -> &sea_orm::DatabaseConnection {
//!     &service.db
//! }
//! ```
//!
//! nor can an unvalidated input be built:
//!
//! ```compile_fail
//! let sku = product_service::Sku(String::from("not validated"));
//! ```

pub mod db;
pub mod domain;
pub mod import;
pub mod jobs;
pub mod service;

mod entity;
mod error;
mod migration;

pub use cache_service::CachedJson;
pub use cache_service::{Coherence, CoherenceConfig, RelayHandle};
pub use db::{connect, connect_with_pool_size, migrate};
pub use domain::{
    Category, Description, NewProduct, PageQuery, PriceCents, ProductId, ProductName, ProductPatch,
    Sku, Stock, ValidationError, Version,
};
pub use error::{Error, Result};
pub use import::{BatchReport, ImportFailure, Importer, ProductImport};
pub use jobs::{JobConfig, JobStatus, JobWorker, RepriceJob, RepricePercent};
/// The database handle [`connect`] returns and [`ProductService::new`] takes.
pub use sea_orm::DatabaseConnection;
pub use service::{PRODUCT, PRODUCT_LIST, PRODUCT_TABLE, Product, ProductPage, ProductService};
