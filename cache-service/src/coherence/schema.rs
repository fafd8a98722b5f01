//! The coherence tables and the triggers that fill the outbox.
//!
//! - `cache_outbox`: one row per invalidation owed: `namespace`, `entity_id`, `version`:
//!   positive, the version cached copies must reach; negative, the row was created (or
//!   re-created) at version `-version`, and an entry cached under its id may belong to
//!   an earlier incarnation with a higher version. For a table with
//!   [`ScopedGroup`]s, also `old_scope` and `new_scope`: the value of its scope column
//!   before and after the change, as text (`NULL`: no row on that side, or a `NULL`
//!   value), so the scopes of both sides move, whoever wrote. These two columns are
//!   added by the first [`OutboxTable::migration`] of a table with scoped groups.
//! - `cache_epoch`: one row, the cache epoch every process uses and the Redis identity it
//!   belongs to.
//! - `cache_instance`: one row per running relay, with a heartbeat, so a process with an
//!   in-process cache can refuse to share the database with another one.
//!
//! [`OutboxTable`] writes the triggers for any table with an integer id and an integer
//! version column; they run inside the writer's own transaction, whoever the writer is.

use sea_orm::{DbBackend, TransactionTrait};
use sea_orm_migration::prelude::*;

use crate::error::CacheError;

mod triggers;

pub(crate) use triggers::SCOPE_COLUMNS;
pub use triggers::{OutboxTable, ScopedGroup};

/// The session setting that silences the outbox trigger's `NOTIFY` (PostgreSQL). A
/// process that invalidates inline after every commit sets it off on its pool: a
/// transaction that sent `NOTIFY` takes PostgreSQL's notify lock at commit and holds it
/// through its WAL flush, so concurrent committers line up one by one (8 writers: 3 600
/// commits/s without, 500 with). Every other writer (`psql`, an admin tool, a script)
/// still wakes the relays within milliseconds.
pub const NOTIFY_SETTING: &str = "cache_outbox.notify";

/// The `LISTEN`/`NOTIFY` channel the relays wait on.
pub(crate) const CHANNEL: &str = "cache_outbox";

pub(super) fn unsupported(backend: DbBackend) -> CacheError {
    CacheError::Config(format!(
        "the outbox supports PostgreSQL and SQLite, not {backend:?}"
    ))
}

pub(super) fn migration_error(error: CacheError) -> DbErr {
    DbErr::Migration(error.to_string())
}

/// Runs `statements` in one transaction: on one connection, so a `DROP` and the `CREATE`
/// after it cannot meet two pooled SQLite connections, one of which still has the old
/// schema cached (its `CREATE` then fails with "already exists").
pub(crate) async fn execute(
    manager: &SchemaManager<'_>,
    statements: &[String],
) -> Result<(), DbErr> {
    let txn = manager.get_connection().begin().await?;
    for statement in statements {
        txn.execute_unprepared(statement).await?;
    }
    txn.commit().await
}

/// The migration that creates the coherence tables (idempotent: `IF NOT EXISTS`).
/// Run it before any [`OutboxTable::migration`].
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
/// // Idempotent: a second embedder of the same database may run it again.
/// coherence::tables_migration().up(&manager).await?;
/// assert_eq!(coherence.backlog().await?, 0);
/// # Ok(())
/// # }
/// ```
pub fn tables_migration() -> Box<dyn MigrationTrait> {
    Box::new(CreateTables)
}

struct CreateTables;

impl MigrationName for CreateTables {
    fn name(&self) -> &str {
        "m20261129_000001_cache_coherence_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let statements =
            create_statements(manager.get_database_backend()).map_err(migration_error)?;
        execute(manager, &statements).await?;
        // The acknowledgement wait looks rows up by entity.
        execute(
            manager,
            &["CREATE INDEX IF NOT EXISTS idx_cache_outbox_entity ON cache_outbox (namespace, entity_id)".into()],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        execute(
            manager,
            &[
                "DROP TABLE IF EXISTS cache_instance".into(),
                "DROP TABLE IF EXISTS cache_epoch".into(),
                "DROP TABLE IF EXISTS cache_outbox".into(),
            ],
        )
        .await
    }
}

/// The coherence tables, each written once for both databases: only the column types
/// differ, so the two cannot disagree on a column.
fn create_statements(backend: DbBackend) -> Result<Vec<String>, CacheError> {
    let (serial_key, namespace, integer, insert_time, instance_id) = match backend {
        DbBackend::Postgres => (
            "BIGSERIAL PRIMARY KEY",
            "VARCHAR(64)",
            "BIGINT",
            "TIMESTAMPTZ NOT NULL DEFAULT now()",
            "VARCHAR(36)",
        ),
        DbBackend::Sqlite => (
            "INTEGER PRIMARY KEY AUTOINCREMENT",
            "TEXT",
            "INTEGER",
            "TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP",
            "TEXT",
        ),
        other => return Err(unsupported(other)),
    };
    Ok(vec![
        format!(
            "CREATE TABLE IF NOT EXISTS cache_outbox (
                    id {serial_key},
                    namespace {namespace} NOT NULL,
                    entity_id {integer} NOT NULL,
                    version {integer} NOT NULL,
                    created_at {insert_time}
                )"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS cache_epoch (
                    id INTEGER PRIMARY KEY,
                    epoch {integer} NOT NULL,
                    redis_id TEXT NOT NULL
                )"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS cache_instance (
                    id {instance_id} PRIMARY KEY,
                    in_process BOOLEAN NOT NULL,
                    heartbeat_ms {integer} NOT NULL
                )"
        ),
    ])
}

/// The sea-orm entities of the coherence tables.
pub(crate) mod outbox {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "cache_outbox")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub namespace: String,
        pub entity_id: i64,
        pub version: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod epoch {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "cache_epoch")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        pub epoch: i64,
        pub redis_id: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod instance {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "cache_instance")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub in_process: bool,
        pub heartbeat_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
