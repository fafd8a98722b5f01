use std::time::Duration;

/// Errors from a cache backend. Reads never return them to callers (they fail open to the
/// loader); invalidation and set-up do.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// use cache_service::{CacheConfig, CacheError, CacheService};
/// use std::time::Duration;
///
/// let config = CacheConfig { fence_ttl: Duration::from_millis(1), ..CacheConfig::with_prefix("x") };
/// assert!(matches!(CacheService::in_memory(config, 10), Err(CacheError::Config(_))));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The backend did not answer within the command timeout.
    #[error("cache backend timed out after {0:?}")]
    Timeout(Duration),
    /// The backend answered with an error, or could not be reached.
    #[error("cache backend error: {0}")]
    Backend(String),
    /// The backend answered with something this crate did not write.
    #[error("unexpected reply from cache backend: {0}")]
    Protocol(String),
    /// A value could not be serialized (see [`CacheService::get_or_load_json`]).
    ///
    /// [`CacheService::get_or_load_json`]: crate::CacheService::get_or_load_json
    #[error("value cannot be serialized: {0}")]
    Serialize(String),
    /// The configuration cannot work (for example a fence shorter than a lease).
    #[error("invalid cache configuration: {0}")]
    Config(String),
    /// The database behind the outbox or the epoch failed (see
    /// [`Coherence`](crate::Coherence)).
    #[error("cache coherence: database error")]
    Database(#[source] sea_orm::DbErr),
    /// Another process shares the database in a set-up whose caches would disagree: an
    /// in-process cache cannot see another process's invalidations.
    #[error("{0}")]
    Incoherent(String),
    /// The database connection handed to [`Coherence::new`](crate::Coherence::new) lacks
    /// session settings the component relies on (see
    /// [`SessionSetting`](crate::coherence::SessionSetting)): set them in the pool's
    /// connect options.
    #[error("the database connection lacks session settings: {}", crate::coherence::SessionSetting::list(.0))]
    MissingSessionSettings(Vec<crate::coherence::SessionSetting>),
}

impl From<sea_orm::DbErr> for CacheError {
    fn from(error: sea_orm::DbErr) -> Self {
        Self::Database(error)
    }
}

/// Result type of this crate.
pub type Result<T, E = CacheError> = std::result::Result<T, E>;
