//! What a writer hands the coherence component ([`Change`]), what it gets back
//! ([`Applied`]), and how the component runs ([`CoherenceConfig`]).

use std::time::Duration;

use crate::key::Namespace;

/// How the coherence component runs.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use cache_service::CoherenceConfig;
///
/// let config = CoherenceConfig {
///     poll_interval: Duration::from_millis(50),
///     ..CoherenceConfig::default()
/// };
/// assert_eq!(config.batch_size, 500);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct CoherenceConfig {
    /// How often a relay looks for owed invalidations without being woken.
    pub poll_interval: Duration,
    /// Rows applied per batch.
    pub batch_size: u64,
    /// How long a write whose invalidation could not be applied inline waits for a
    /// relay to apply it before it returns anyway.
    pub ack_timeout: Duration,
}

impl Default for CoherenceConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(250),
            batch_size: 500,
            ack_timeout: Duration::from_secs(1),
        }
    }
}

/// One committed change of a row of an [`OutboxTable`](super::OutboxTable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The table's namespace.
    pub namespace: Namespace,
    /// The row's id.
    pub id: i64,
    /// The row's version after the change (its last version + 1 for a delete); 0 for a
    /// created row: whatever is cached under the id is removed, whatever its version
    /// (an earlier incarnation of the id may have been cached at a higher one).
    pub version: u64,
    /// For a table with [`ScopedGroup`](super::ScopedGroup)s: the values of its scope
    /// column that the change touched (before and after it; one when it did not move),
    /// when the writer knows them ([`with_scopes`](Self::with_scopes)). `None`: they are
    /// read from the outbox rows the triggers wrote for the row (one query), which see
    /// them exactly, whoever wrote.
    pub scopes: Option<Vec<String>>,
}

impl Change {
    /// The row of `id` is at `version` now (a deleted row: its last version + 1).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// use cache_service::{Change, Namespace};
    /// const NOTE: Namespace = Namespace::new("note");
    ///
    /// // A row updated to version 3, and a row deleted at version 4 (it owes 5).
    /// assert_eq!(Change::at_version(NOTE, 1, 3).version, 3);
    /// assert_eq!(Change::at_version(NOTE, 2, 4 + 1).version, 5);
    /// assert_eq!(Change::created(NOTE, 3).version, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn at_version(namespace: Namespace, id: i64, version: i64) -> Self {
        Self {
            namespace,
            id,
            version: version.unsigned_abs(),
            scopes: None,
        }
    }

    /// The row of `id` was created.
    pub fn created(namespace: Namespace, id: i64) -> Self {
        Self {
            namespace,
            id,
            version: 0,
            scopes: None,
        }
    }

    /// The change with the values of its table's scope column that it touched: the
    /// value before and the value after it (one value when it did not change, or for a
    /// created or deleted row), as text (see [`ScopedGroup`](super::ScopedGroup)). A
    /// writer that does not know them (an `UPDATE` that may have moved the row) leaves
    /// them out, and the component reads them from the outbox.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// use cache_service::{Change, Namespace};
    /// const ORDER: Namespace = Namespace::new("order");
    ///
    /// // Order 3 of customer 42 changed to version 2 (the customer did not change).
    /// let change = Change::at_version(ORDER, 3, 2).with_scopes([42]);
    /// assert_eq!(change.scopes, Some(vec!["42".to_owned()]));
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_scopes<V: std::fmt::Display>(
        mut self,
        values: impl IntoIterator<Item = V>,
    ) -> Self {
        let mut scopes: Vec<String> = values.into_iter().map(|v| v.to_string()).collect();
        scopes.sort_unstable();
        scopes.dedup();
        self.scopes = Some(scopes);
        self
    }
}

/// How a write's invalidation was applied (see [`Coherence::after_commit`](super::Coherence::after_commit)).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// use cache_service::{Applied, CacheConfig, CacheService, Change, Coherence, CoherenceConfig};
/// use cache_service::{Namespace, OutboxTable, coherence};
/// use sea_orm::{ConnectionTrait, Database};
/// use sea_orm_migration::{MigrationTrait, SchemaManager};
///
/// const NOTE: Namespace = Namespace::new("note");
/// const NOTES: OutboxTable = OutboxTable {
///     table: "notes", id_column: "id", version_column: "version", namespace: NOTE, groups: &[], scoped_groups: &[],
/// };
/// let db = Database::connect("sqlite::memory:").await?;
/// db.execute_unprepared("CREATE TABLE notes (id INTEGER PRIMARY KEY, version INTEGER NOT NULL DEFAULT 1)")
///     .await?;
/// let manager = SchemaManager::new(&db);
/// coherence::tables_migration().up(&manager).await?;
/// NOTES.migration("m_notes_outbox").up(&manager).await?;
/// let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 10)?;
/// let coherence = Coherence::new(db.clone(), cache, &[NOTES], CoherenceConfig::default()).await?;
///
/// db.execute_unprepared("INSERT INTO notes (id) VALUES (1)").await?;
/// match coherence.after_commit(&[Change::created(NOTE, 1)]).await {
///     Applied::Inline | Applied::ByRelay => {} // a read that starts now sees the write
///     Applied::Owed => eprintln!("the invalidation waits in the outbox"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// By this process, right after the commit.
    Inline,
    /// By a relay (this process's or another's) while the write waited.
    ByRelay,
    /// Not yet: no relay applied it within the acknowledgement bound; it stays owed.
    Owed,
}
