use crate::domain::{ProductId, Sku, ValidationError, Version};

/// Why a product operation failed. Constraint violations are mapped here, at the layer
/// that knows the schema; callers never inspect SQL errors.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// use cache_service::{CacheConfig, CacheService};
/// use product_service::{Error, ProductId, ProductService};
///
/// let db = product_service::connect("sqlite::memory:").await?;
/// product_service::migrate(&db).await?;
/// let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 10)?;
/// let service = ProductService::new(db, cache).await?;
/// match service.find_by_id(ProductId::parse(7)?).await {
///     Err(Error::NotFound { id }) => assert_eq!(id.get(), 7),
///     other => panic!("unexpected: {other:?}"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No product has this id.
    #[error("product {id} not found")]
    NotFound {
        /// The id that was asked for.
        id: ProductId,
    },
    /// Another product already has this sku.
    #[error("sku: {0} is already used by another product")]
    DuplicateSku(Sku),
    /// The caller expected another version (optimistic concurrency); nothing changed.
    #[error("version mismatch: expected {expected}, current is {actual}")]
    VersionMismatch {
        /// The version the caller expected.
        expected: Version,
        /// The version the row has.
        actual: Version,
    },
    /// An input failed validation.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A reprice job was taken over by another worker (its heartbeat had expired).
    #[error("the job was taken over by another worker")]
    JobLost,
    /// The cache failed where it cannot fail open (replaying owed invalidations, or
    /// serializing a value for a JSON read).
    #[error("cache error")]
    Cache(#[from] cache_service::CacheError),
    /// The database connection handed to
    /// [`ProductService::new`](crate::ProductService::new) lacks session settings that
    /// [`connect`](crate::connect) applies; build the pool with them (or with
    /// `connect`).
    #[error("the database connection lacks session settings: {}", cache_service::coherence::SessionSetting::list(.0))]
    MissingSessionSettings(Vec<cache_service::coherence::SessionSetting>),
    /// The database failed.
    #[error("database error")]
    Database(#[from] sea_orm::DbErr),
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
