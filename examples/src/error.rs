//! Why an order operation failed, by cause.

use crate::domain::{OrderId, Version};

/// Why an order operation failed. Bad input never gets here: the inputs are parsed
/// types ([`crate::domain`]), whose errors name the field.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No order has this id.
    #[error("order {id} not found")]
    NotFound {
        /// The id that was asked for.
        id: OrderId,
    },
    /// The caller expected another version; nothing changed.
    #[error("version mismatch: expected {expected}, current is {actual}")]
    VersionMismatch {
        /// The version the caller expected.
        expected: Version,
        /// The version the order has.
        actual: i64,
    },
    /// The relay could not start (see
    /// [`OrderService::start_relay`](crate::OrderService::start_relay)): an incoherent
    /// set-up, or the database behind its registration failed. Reads and writes never
    /// fail because of the cache.
    #[error("cache error")]
    Cache(#[from] cache_service::CacheError),
    /// The database failed.
    #[error("database error")]
    Database(#[from] sea_orm::DbErr),
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
