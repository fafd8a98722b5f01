//! [`Coherence`]: the cache keeps its promises across processes, for any table.
//!
//! A [`CacheService`] alone keeps its promises inside one process. Writers in other
//! processes, Redis outages and Redis replacements need more, and this component is that
//! more, switched on by building it over a database (through sea-orm) and a cache:
//!
//! - **A transactional outbox.** Triggers ([`OutboxTable`]) record in `cache_outbox`,
//!   inside the writer's own transaction, the invalidation each change owes, whoever
//!   writes (this process, another program, `psql`).
//! - **A relay** ([`Coherence::spawn_relay`]) applies what is owed and deletes it: on
//!   PostgreSQL woken by `NOTIFY` and sharing the rows with other relays by
//!   `FOR UPDATE SKIP LOCKED`; on SQLite by polling.
//! - **One after-commit routine** ([`Coherence::after_commit`]) for every writer.
//! - **An epoch per Redis identity**, shared through the database (`cache_epoch`).
//! - **An auditor** ([`Coherence::spawn_auditor`], module [`audit`]) that samples rows
//!   and reports cached entries older than their row that nothing will remove; it only
//!   reads.
//!
//! # Invariants
//!
//! 1. **Every writer is in the epoch.** Nothing is invalidated inline, applied or settled
//!    before this process has checked which Redis it talks to and moved to that Redis's
//!    epoch ([`Coherence::join`], done lazily by the first write).
//! 2. **Acknowledged means applied.** [`after_commit`](Coherence::after_commit) returns
//!    once the write's invalidation was applied, inline or, when that was skipped (the
//!    cache is recovering) or failed, by some relay, which it wakes at once; only after
//!    [`CoherenceConfig::ack_timeout`] does it return with the invalidation still owed,
//!    and then every relay's gate keeps reads off entries it would remove.
//! 3. **Reads wait for the replay.** Once a relay runs, reads skip the cache after a
//!    backend failure until a pass of the relay has checked the Redis identity and
//!    applied every row that was owed when the pass began (also rows that another relay
//!    was holding); a reply that came over a connection opened after the last identity
//!    check is never served.
//! 4. **Versions only grow.** The triggers raise a version that an `UPDATE` left alone or
//!    lowered, and a created row owes an unconditional removal, so fences and replays
//!    are sound against restored rows and reused ids.
//! 5. **In-process caches are never shared.** [`Coherence::start_relay`] over an
//!    in-process cache refuses to start while another relay runs on the same database,
//!    and the reverse: the in-process cache cannot see other processes' invalidations.
//! 6. **Both sides of a move.** For a table with [`ScopedGroup`]s, every change moves the
//!    scopes of its row's value before and after it: the triggers record both (the
//!    only place that sees them exactly, whoever writes), a writer names them
//!    ([`Change::with_scopes`]) or the inline path reads them from the outbox, and a
//!    replay moves them again unless the row's fence stands at exactly that change's
//!    version (a later write's fence proves that write's scopes moved, not this one's).

mod after_commit;
pub mod audit;
mod background;
mod cache_epoch;
mod change;
mod relay;
mod replay;
mod schema;
mod session;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter};
use tokio::sync::Notify;

use crate::error::Result;
use crate::key::{Invalidation, Namespace, Scope};
use crate::service::{CacheService, Owed, ScopedOwed};

pub use audit::{AuditConfig, AuditReport, AuditTotals, AuditorHandle};
pub use change::{Applied, Change, CoherenceConfig};
pub use relay::RelayHandle;
pub use schema::{NOTIFY_SETTING, OutboxTable, ScopedGroup, tables_migration};
pub use session::{SessionSetting, check_session, connect_options, missing_settings};

use schema::{CHANNEL, outbox};

/// The coherence component. Cloning is shallow.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// use cache_service::{coherence, CacheConfig, CacheService, Change, Coherence, CoherenceConfig};
/// use cache_service::{Namespace, OutboxTable};
/// use sea_orm::{ConnectionTrait, Database};
/// use sea_orm_migration::{MigrationTrait, SchemaManager};
///
/// const NOTE: Namespace = Namespace::new("note");
/// const NOTES: OutboxTable = OutboxTable {
///     table: "notes",
///     id_column: "id",
///     version_column: "version",
///     namespace: NOTE,
///     groups: &[],
///     scoped_groups: &[],
/// };
///
/// // The table, the coherence tables, and the table's outbox triggers.
/// let db = Database::connect("sqlite::memory:").await?;
/// db.execute_unprepared(
///     "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 1)",
/// )
/// .await?;
/// let manager = SchemaManager::new(&db);
/// coherence::tables_migration().up(&manager).await?;
/// NOTES.migration("m20260101_000001_notes_outbox").up(&manager).await?;
///
/// let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 1_000)?;
/// let coherence = Coherence::new(db.clone(), cache, &[NOTES], CoherenceConfig::default()).await?;
///
/// // Every write, whoever makes it, owes an invalidation in the same transaction...
/// db.execute_unprepared("INSERT INTO notes (id, body) VALUES (1, 'hello')").await?;
/// assert_eq!(coherence.backlog().await?, 1);
/// // ...which the writer applies after its commit (or a relay does).
/// coherence.after_commit(&[Change::created(NOTE, 1)]).await;
/// assert_eq!(coherence.backlog().await?, 0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Coherence {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    db: DatabaseConnection,
    cache: CacheService,
    tables: Vec<OutboxTable>,
    config: CoherenceConfig,
    /// The Redis identity this process's epoch was last checked against.
    checked_identity: Arc<Mutex<Option<String>>>,
    /// Wakes this process's relay.
    wake: Arc<Notify>,
    /// This process's relay registration, while it runs.
    relay_id: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for Coherence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coherence")
            .field("tables", &self.inner.tables)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Coherence {
    /// The component over a database migrated with [`tables_migration`] and the
    /// tables' [`OutboxTable::migration`]s. Until [`spawn_relay`](Self::spawn_relay),
    /// reads are not gated (a process that only writes needs no relay).
    ///
    /// `db` is the caller's pool, so its session settings are checked here, not
    /// assumed ([`check_session`]): without them it fails with
    /// [`CacheError::MissingSessionSettings`](crate::CacheError::MissingSessionSettings) naming each one missing. They cannot be
    /// applied from here: a session setting must hold on every connection the pool
    /// will ever open, and only the pool's connect options reach those.
    pub async fn new(
        db: DatabaseConnection,
        cache: CacheService,
        tables: &[OutboxTable],
        config: CoherenceConfig,
    ) -> Result<Self> {
        check_session(&db).await?;
        let inner = Inner {
            db,
            cache,
            tables: tables.to_vec(),
            config: CoherenceConfig::default(),
            checked_identity: Arc::default(),
            wake: Arc::default(),
            relay_id: Arc::default(),
        };
        Ok(Self::with_inner(inner, config))
    }

    /// The same component (same cache, tables, epoch check and relay wake-ups) with
    /// another configuration, for a relay that polls at another pace, say.
    pub fn with_config(&self, config: CoherenceConfig) -> Self {
        Self::with_inner((*self.inner).clone(), config)
    }

    fn with_inner(inner: Inner, config: CoherenceConfig) -> Self {
        let config = CoherenceConfig {
            batch_size: config.batch_size.max(1),
            ..config
        };
        Self {
            inner: Arc::new(Inner { config, ..inner }),
        }
    }

    /// The cache.
    pub fn cache(&self) -> &CacheService {
        &self.inner.cache
    }

    /// The configuration in use.
    pub fn config(&self) -> &CoherenceConfig {
        &self.inner.config
    }

    /// The one after-commit routine: applies what `changes` made stale (each change's
    /// entry, fenced at its version, and its table's groups), inline when this process
    /// trusts the cache, else by waking every relay and waiting (up to
    /// [`CoherenceConfig::ack_timeout`]) until one has applied it. Call it after the
    /// write's transaction committed, never before. Never fails: what is not applied
    /// stays in the outbox.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// # use cache_service::*;
    /// # use sea_orm::{ConnectionTrait, Database};
    /// # use sea_orm_migration::{MigrationTrait, SchemaManager};
    /// # const NOTE: Namespace = Namespace::new("note");
    /// # const NOTES: OutboxTable = OutboxTable {
    /// #     table: "notes", id_column: "id", version_column: "version", namespace: NOTE, groups: &[], scoped_groups: &[],
    /// # };
    /// # let db = Database::connect("sqlite::memory:").await?;
    /// # db.execute_unprepared(
    /// #     "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 1)",
    /// # ).await?;
    /// # let manager = SchemaManager::new(&db);
    /// # coherence::tables_migration().up(&manager).await?;
    /// # NOTES.migration("m_notes_outbox").up(&manager).await?;
    /// # let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 1_000)?;
    /// # let coherence = Coherence::new(db.clone(), cache, &[NOTES], CoherenceConfig::default()).await?;
    /// db.execute_unprepared("INSERT INTO notes (id, body) VALUES (2, 'hi')").await?;
    /// // The transaction committed: now invalidate what it made stale.
    /// let applied = coherence.after_commit(&[Change::created(NOTE, 2)]).await;
    /// assert_eq!(applied, Applied::Inline);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn after_commit(&self, changes: &[Change]) -> Applied {
        if changes.is_empty() {
            return Applied::Inline;
        }
        if self.invalidate_inline(changes).await {
            return Applied::Inline;
        }
        self.wait_for_relays(changes).await
    }

    /// Like [`after_commit`](Self::after_commit) without the wait, for a bulk writer
    /// that waits once at its end ([`flush`](Self::flush)). Returns whether it was
    /// applied inline.
    pub async fn after_commit_deferred(&self, changes: &[Change]) -> bool {
        changes.is_empty() || self.invalidate_inline(changes).await
    }

    /// Applies everything owed now (after checking the epoch); if this process cannot,
    /// wakes every relay and waits up to `timeout` for the outbox to hold nothing that
    /// was owed when it was called. Returns whether nothing of that is owed any more.
    ///
    /// An in-process cache is never applied to here: in a process that is not the
    /// server (an import), it is private, and the rows are for the server's relay.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// # use cache_service::*;
    /// # use sea_orm::{ConnectionTrait, Database};
    /// # use sea_orm_migration::{MigrationTrait, SchemaManager};
    /// # const NOTE: Namespace = Namespace::new("note");
    /// # const NOTES: OutboxTable = OutboxTable {
    /// #     table: "notes", id_column: "id", version_column: "version", namespace: NOTE, groups: &[], scoped_groups: &[],
    /// # };
    /// # let db = Database::connect("sqlite::memory:").await?;
    /// # db.execute_unprepared(
    /// #     "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 1)",
    /// # ).await?;
    /// # let manager = SchemaManager::new(&db);
    /// # coherence::tables_migration().up(&manager).await?;
    /// # NOTES.migration("m_notes_outbox").up(&manager).await?;
    /// # let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 1_000)?;
    /// # let coherence = Coherence::new(db.clone(), cache, &[NOTES], CoherenceConfig::default()).await?;
    /// db.execute_unprepared("INSERT INTO notes (id, body) VALUES (1, 'a')").await?;
    /// // A bulk writer invalidates as it goes, then waits once at its end.
    /// coherence.after_commit_deferred(&[Change::created(NOTE, 1)]).await;
    /// assert!(coherence.flush(std::time::Duration::from_secs(1)).await);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn flush(&self, timeout: Duration) -> bool {
        let Ok(high) = self.high_water().await else {
            return false;
        };
        if !self.is_in_process() && self.drain().await.is_ok() {
            return true;
        }
        let deadline = Instant::now() + timeout;
        self.wake_relays().await;
        loop {
            if self.owed_through(high).await.is_ok_and(|owed| !owed) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Applies owed invalidations until none is left; returns how many rows it
    /// resolved. Checks the epoch first: nothing is applied at an unchecked one.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// # use cache_service::*;
    /// # use sea_orm::{ConnectionTrait, Database};
    /// # use sea_orm_migration::{MigrationTrait, SchemaManager};
    /// # const NOTE: Namespace = Namespace::new("note");
    /// # const NOTES: OutboxTable = OutboxTable {
    /// #     table: "notes", id_column: "id", version_column: "version", namespace: NOTE, groups: &[], scoped_groups: &[],
    /// # };
    /// # let db = Database::connect("sqlite::memory:").await?;
    /// # db.execute_unprepared(
    /// #     "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 1)",
    /// # ).await?;
    /// # let manager = SchemaManager::new(&db);
    /// # coherence::tables_migration().up(&manager).await?;
    /// # NOTES.migration("m_notes_outbox").up(&manager).await?;
    /// # let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 1_000)?;
    /// # let coherence = Coherence::new(db.clone(), cache, &[NOTES], CoherenceConfig::default()).await?;
    /// // Raw SQL writers do not call `after_commit`: what they owe waits in the outbox.
    /// db.execute_unprepared("INSERT INTO notes (id, body) VALUES (1, 'a'), (2, 'b')").await?;
    /// assert_eq!(coherence.drain().await?, 2);
    /// assert_eq!(coherence.backlog().await?, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn drain(&self) -> Result<usize> {
        self.join().await?;
        self.drain_joined().await
    }

    /// Number of invalidations owed (outbox rows of this component's tables).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// # use cache_service::*;
    /// # use sea_orm::{ConnectionTrait, Database};
    /// # use sea_orm_migration::{MigrationTrait, SchemaManager};
    /// # const NOTE: Namespace = Namespace::new("note");
    /// # const NOTES: OutboxTable = OutboxTable {
    /// #     table: "notes", id_column: "id", version_column: "version", namespace: NOTE, groups: &[], scoped_groups: &[],
    /// # };
    /// # let db = Database::connect("sqlite::memory:").await?;
    /// # db.execute_unprepared(
    /// #     "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 1)",
    /// # ).await?;
    /// # let manager = SchemaManager::new(&db);
    /// # coherence::tables_migration().up(&manager).await?;
    /// # NOTES.migration("m_notes_outbox").up(&manager).await?;
    /// # let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 1_000)?;
    /// # let coherence = Coherence::new(db.clone(), cache, &[NOTES], CoherenceConfig::default()).await?;
    /// assert_eq!(coherence.backlog().await?, 0);
    /// db.execute_unprepared("INSERT INTO notes (id, body) VALUES (1, 'a')").await?;
    /// assert_eq!(coherence.backlog().await?, 1, "the trigger recorded what the insert owes");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn backlog(&self) -> Result<u64> {
        Ok(outbox::Entity::find()
            .filter(outbox::Column::Namespace.is_in(self.namespaces()))
            .count(&self.inner.db)
            .await?)
    }

    /// Starts the relay in the background: from now on reads are gated (see the
    /// module's invariant 3), and held until its first pass. Every process that serves
    /// reads runs one; [`RelayHandle::shutdown`] drains it.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// # use cache_service::*;
    /// # use sea_orm::{ConnectionTrait, Database};
    /// # use sea_orm_migration::{MigrationTrait, SchemaManager};
    /// # const NOTE: Namespace = Namespace::new("note");
    /// # const NOTES: OutboxTable = OutboxTable {
    /// #     table: "notes", id_column: "id", version_column: "version", namespace: NOTE, groups: &[], scoped_groups: &[],
    /// # };
    /// # let db = Database::connect("sqlite::memory:").await?;
    /// # db.execute_unprepared(
    /// #     "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 1)",
    /// # ).await?;
    /// # let manager = SchemaManager::new(&db);
    /// # coherence::tables_migration().up(&manager).await?;
    /// # NOTES.migration("m_notes_outbox").up(&manager).await?;
    /// # let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 1_000)?;
    /// # let coherence = Coherence::new(db.clone(), cache, &[NOTES], CoherenceConfig::default()).await?;
    /// let relay = coherence.spawn_relay();
    /// relay.first_pass().await;
    /// db.execute_unprepared("INSERT INTO notes (id, body) VALUES (1, 'a')").await?;
    /// relay.shutdown().await; // a last drain, then it stops
    /// assert_eq!(coherence.backlog().await?, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn spawn_relay(&self) -> RelayHandle {
        relay::spawn(self.clone())
    }

    /// Like [`spawn_relay`](Self::spawn_relay), after registering this process on the
    /// database, which fails ([`CacheError::Incoherent`](crate::CacheError::Incoherent)) when the set-up would be
    /// incoherent: an in-process cache with any other relay on the database, or any
    /// cache with another relay's in-process cache. A registration left by a crashed
    /// process blocks for at most a few seconds.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// # use cache_service::*;
    /// # use sea_orm::{ConnectionTrait, Database};
    /// # use sea_orm_migration::{MigrationTrait, SchemaManager};
    /// # const NOTE: Namespace = Namespace::new("note");
    /// # const NOTES: OutboxTable = OutboxTable {
    /// #     table: "notes", id_column: "id", version_column: "version", namespace: NOTE, groups: &[], scoped_groups: &[],
    /// # };
    /// # let db = Database::connect("sqlite::memory:").await?;
    /// # db.execute_unprepared(
    /// #     "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 1)",
    /// # ).await?;
    /// # let manager = SchemaManager::new(&db);
    /// # coherence::tables_migration().up(&manager).await?;
    /// # NOTES.migration("m_notes_outbox").up(&manager).await?;
    /// # let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 1_000)?;
    /// # let coherence = Coherence::new(db.clone(), cache, &[NOTES], CoherenceConfig::default()).await?;
    /// let relay = coherence.start_relay().await?;
    /// // An in-process cache cannot share its database with another process's relay.
    /// let other = Coherence::new(
    ///     db.clone(),
    ///     CacheService::in_memory(CacheConfig::with_prefix("other"), 10)?,
    ///     &[NOTES],
    ///     CoherenceConfig::default(),
    /// )
    /// .await?;
    /// assert!(matches!(other.start_relay().await, Err(CacheError::Incoherent(_))));
    /// relay.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start_relay(&self) -> Result<RelayHandle> {
        let instance = relay::Instance::register(&self.inner.db, self.is_in_process()).await?;
        Ok(relay::spawn_registered(self.clone(), Some(instance)))
    }

    /// Warns when Redis may evict keys this component relies on, and says why. Returns
    /// the policy.
    pub async fn check_eviction_policy(&self) -> Option<String> {
        let policy = self
            .inner
            .cache
            .backend()
            .eviction_policy()
            .await
            .ok()
            .flatten()?;
        if policy != "noeviction" {
            tracing::warn!(
                maxmemory_policy = %policy,
                "Redis may evict keys: set maxmemory-policy to noeviction. Fences and leases \
                 have a TTL, so volatile-* policies evict exactly them and let a stale fill \
                 through; allkeys-* policies evict the group generation counters and fences"
            );
        }
        Some(policy)
    }

    pub(crate) fn is_in_process(&self) -> bool {
        self.inner.cache.backend().is_in_process()
    }

    fn namespaces(&self) -> Vec<&'static str> {
        self.inner
            .tables
            .iter()
            .map(|table| table.namespace.name())
            .collect()
    }

    fn table(&self, namespace: &str) -> Option<&OutboxTable> {
        self.inner
            .tables
            .iter()
            .find(|table| table.namespace.name() == namespace)
    }

    /// Whether some table of this component has scoped groups.
    fn has_scopes(&self) -> bool {
        self.inner
            .tables
            .iter()
            .any(|table| table.scope_column().is_some())
    }

    /// The invalidations that rows owe: per entity, an unconditional removal if one is
    /// owed, and a fence at the highest version owed; their tables' groups, once each;
    /// and per row the scopes it touched. Rows of tables this component does not know
    /// are skipped.
    fn invalidations<'a>(&self, rows: impl IntoIterator<Item = Owes<'a>>) -> Owed {
        let mut owed: BTreeMap<(&str, i64), (Namespace, bool, u64)> = BTreeMap::new();
        let mut groups: Vec<Scope> = Vec::new();
        let mut scoped = Vec::new();
        for Owes {
            namespace,
            id,
            version,
            scopes,
        } in rows
        {
            let Some(table) = self.table(namespace) else {
                continue;
            };
            for group in table.groups {
                let group = Scope::from(*group);
                if !groups.contains(&group) {
                    groups.push(group);
                }
            }
            if !table.scoped_groups.is_empty() && !scopes.is_empty() {
                let key = self.inner.cache.key(table.namespace, id);
                for scoped_group in table.scoped_groups {
                    for value in &scopes {
                        scoped.push(ScopedOwed {
                            key: key.clone(),
                            version,
                            scope: scoped_group.group.scope(value),
                        });
                    }
                }
            }
            let entry =
                owed.entry((table.namespace.name(), id))
                    .or_insert((table.namespace, false, 0));
            entry.1 |= version == 0;
            entry.2 = entry.2.max(version);
        }
        let mut items = Vec::new();
        for ((_, id), (namespace, remove, version)) in owed {
            let key = self.inner.cache.key(namespace, id);
            if remove {
                items.push(Invalidation::remove(key.clone()));
            }
            if version > 0 {
                items.push(Invalidation::at_version(key, version));
            }
        }
        Owed {
            items,
            groups,
            scoped,
        }
    }
}

/// What one change, or one outbox row, owes: an entity at a version (0: created), and
/// the values of its table's scope column it touched.
struct Owes<'a> {
    namespace: &'a str,
    id: i64,
    version: u64,
    scopes: Vec<&'a str>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
