//! Schema migrations, applied by [`migrate`](crate::migrate).
//!
//! The database may be shared with another embedder of `cache-service` (an application
//! with its own tables and its own sea-orm migrator): product-service records its
//! migrations in a table of its own ([`MIGRATION_TABLE`]), and every migration that
//! touches the shared coherence tables looks at what is there first, so it works
//! whether the other application migrated before or after it.

use sea_orm::TransactionTrait;
use sea_orm::sea_query::{Alias, IntoIden};
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

mod legacy;

use legacy::FIRST_MIGRATION;
pub(crate) use legacy::{MIGRATION_TABLE, adopt_legacy_rows};

pub(crate) struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migration_table_name() -> DynIden {
        Alias::new(MIGRATION_TABLE).into_iden()
    }

    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(create_product()),
            Box::new(CreateOutbox),
            Box::new(create_reprice_job()),
            Box::new(create_cache_epoch()),
            Box::new(QuietServiceWrites),
            Box::new(RepriceJobOwner),
            Box::new(GenericOutbox),
            cache_service::coherence::tables_migration(),
            // The outbox records each change's category before and after it, and the
            // list pages of a category move only with changes that touch it.
            crate::service::PRODUCT_TABLE.migration("m20261129_000009_category_scoped_lists"),
        ]
    }
}

#[derive(DeriveIden)]
enum Product {
    Table,
    Id,
    Sku,
    Name,
    Description,
    PriceCents,
    Stock,
    Category,
    Version,
    CreatedAt,
    UpdatedAt,
}

/// The product table, and the index the list pages of one category are read by.
fn create_product() -> CreateTable {
    CreateTable {
        name: FIRST_MIGRATION,
        table: || {
            Table::create()
                .table(Product::Table)
                .if_not_exists()
                .col(big_pk_auto(Product::Id))
                .col(string_len_uniq(Product::Sku, 64))
                .col(string_len(Product::Name, 200))
                .col(text(Product::Description).default(""))
                .col(big_integer(Product::PriceCents))
                .col(big_integer(Product::Stock))
                .col(string_len(Product::Category, 100).default(""))
                .col(big_integer(Product::Version).default(1))
                .col(timestamp_with_time_zone(Product::CreatedAt))
                .col(timestamp_with_time_zone(Product::UpdatedAt))
                .to_owned()
        },
        index: Some(("idx_product_category_id", &["category", "id"])),
    }
}

/// A migration that creates one table, if it is missing, and one index on it, if
/// given; undone by dropping the table. The tables product-service has to itself.
struct CreateTable {
    /// The name the migration is recorded under.
    name: &'static str,
    table: fn() -> TableCreateStatement,
    /// The index's name and its columns, in order.
    index: Option<(&'static str, &'static [&'static str])>,
}

impl CreateTable {
    fn table_name(&self, table: &TableCreateStatement) -> Result<TableRef, DbErr> {
        table
            .get_table_name()
            .cloned()
            .ok_or_else(|| DbErr::Migration(format!("{}: the table has no name", self.name)))
    }
}

impl MigrationName for CreateTable {
    fn name(&self) -> &str {
        self.name
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateTable {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let table = (self.table)();
        let table_name = self.table_name(&table)?;
        manager.create_table(table).await?;
        let Some((name, columns)) = self.index else {
            return Ok(());
        };
        let mut index = Index::create();
        index.if_not_exists().name(name).table(table_name);
        for column in columns {
            index.col(Alias::new(*column));
        }
        manager.create_index(index).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let table_name = self.table_name(&(self.table)())?;
        manager
            .drop_table(Table::drop().table(table_name).to_owned())
            .await
    }
}

/// The transactional outbox: triggers on `product` record, in the same transaction as
/// any change made by anyone (this service, `psql`, `sqlite3`, another program), the
/// invalidation it owes: the product id and the version its cached copies must reach.
/// An `UPDATE` that does not bump `version` gets it bumped by a trigger, so "+1 on
/// every change" holds for every writer. On PostgreSQL the trigger also sends
/// `NOTIFY cache_outbox` to wake the relays.
struct CreateOutbox;

impl MigrationName for CreateOutbox {
    fn name(&self) -> &str {
        "m20261126_000002_create_cache_outbox"
    }
}

const POSTGRES_OUTBOX: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS cache_outbox (
        id BIGSERIAL PRIMARY KEY,
        product_id BIGINT NOT NULL,
        version BIGINT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )",
    "CREATE OR REPLACE FUNCTION product_bump_version() RETURNS trigger AS $$
    BEGIN
        IF NEW.version = OLD.version AND NEW IS DISTINCT FROM OLD THEN
            NEW.version := OLD.version + 1;
        END IF;
        RETURN NEW;
    END $$ LANGUAGE plpgsql",
    "DROP TRIGGER IF EXISTS product_bump_version ON product",
    "CREATE TRIGGER product_bump_version BEFORE UPDATE ON product
        FOR EACH ROW EXECUTE FUNCTION product_bump_version()",
    "CREATE OR REPLACE FUNCTION product_owe_invalidation() RETURNS trigger AS $$
    BEGIN
        IF TG_OP = 'DELETE' THEN
            INSERT INTO cache_outbox (product_id, version) VALUES (OLD.id, OLD.version + 1);
        ELSIF TG_OP = 'INSERT' OR NEW.version <> OLD.version THEN
            INSERT INTO cache_outbox (product_id, version) VALUES (NEW.id, NEW.version);
        END IF;
        PERFORM pg_notify('cache_outbox', '');
        RETURN NULL;
    END $$ LANGUAGE plpgsql",
    "DROP TRIGGER IF EXISTS product_owe_invalidation ON product",
    "CREATE TRIGGER product_owe_invalidation AFTER INSERT OR UPDATE OR DELETE ON product
        FOR EACH ROW EXECUTE FUNCTION product_owe_invalidation()",
];

/// SQLite triggers cannot change `NEW`, so an `UPDATE` that left `version` alone is
/// followed by a second one that bumps it; only a version change owes an invalidation.
/// (SQLite does not fire a trigger from its own statements, so this cannot recurse.)
const SQLITE_OUTBOX: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS cache_outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        product_id INTEGER NOT NULL,
        version INTEGER NOT NULL,
        created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
    )",
    "CREATE TRIGGER IF NOT EXISTS product_bump_version AFTER UPDATE ON product
        WHEN NEW.version = OLD.version
        BEGIN
            UPDATE product SET version = OLD.version + 1 WHERE id = NEW.id;
        END",
    "CREATE TRIGGER IF NOT EXISTS product_owe_insert AFTER INSERT ON product
        BEGIN
            INSERT INTO cache_outbox (product_id, version) VALUES (NEW.id, NEW.version);
        END",
    "CREATE TRIGGER IF NOT EXISTS product_owe_update AFTER UPDATE ON product
        WHEN NEW.version <> OLD.version
        BEGIN
            INSERT INTO cache_outbox (product_id, version) VALUES (NEW.id, NEW.version);
        END",
    "CREATE TRIGGER IF NOT EXISTS product_owe_delete AFTER DELETE ON product
        BEGIN
            INSERT INTO cache_outbox (product_id, version) VALUES (OLD.id, OLD.version + 1);
        END",
];

#[async_trait::async_trait]
impl MigrationTrait for CreateOutbox {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if has_generic_outbox(manager).await? {
            // Another embedder created the generic outbox first: these triggers would
            // write columns it does not have. The generic ones come with migration 7.
            return Ok(());
        }
        let statements = match manager.get_database_backend() {
            sea_orm::DbBackend::Postgres => POSTGRES_OUTBOX,
            sea_orm::DbBackend::Sqlite => SQLITE_OUTBOX,
            other => {
                return Err(DbErr::Migration(format!(
                    "the outbox triggers support PostgreSQL and SQLite, not {other:?}"
                )));
            }
        };
        execute(manager, statements).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let statements: &[&str] = match manager.get_database_backend() {
            sea_orm::DbBackend::Postgres => &[
                "DROP TRIGGER IF EXISTS product_owe_invalidation ON product",
                "DROP TRIGGER IF EXISTS product_bump_version ON product",
                "DROP FUNCTION IF EXISTS product_owe_invalidation()",
                "DROP FUNCTION IF EXISTS product_bump_version()",
                "DROP TABLE IF EXISTS cache_outbox",
            ],
            _ => &[
                "DROP TRIGGER IF EXISTS product_owe_delete",
                "DROP TRIGGER IF EXISTS product_owe_update",
                "DROP TRIGGER IF EXISTS product_owe_insert",
                "DROP TRIGGER IF EXISTS product_bump_version",
                "DROP TABLE IF EXISTS cache_outbox",
            ],
        };
        execute(manager, statements).await
    }
}

#[derive(DeriveIden)]
enum RepriceJob {
    Table,
    Id,
    Category,
    Percent,
    Status,
    Matched,
    Updated,
    Cursor,
    Error,
    HeartbeatAt,
    CreatedAt,
    UpdatedAt,
    Owner,
}

/// Reprice jobs, so a queued or running job survives a restart, and the index the
/// workers find the next queued job by.
fn create_reprice_job() -> CreateTable {
    CreateTable {
        name: "m20261126_000003_create_reprice_job",
        table: || {
            Table::create()
                .table(RepriceJob::Table)
                .if_not_exists()
                .col(string_len(RepriceJob::Id, 36).primary_key())
                .col(string_len_null(RepriceJob::Category, 100))
                .col(double(RepriceJob::Percent))
                .col(string_len(RepriceJob::Status, 16))
                .col(big_integer(RepriceJob::Matched).default(0))
                .col(big_integer(RepriceJob::Updated).default(0))
                .col(big_integer(RepriceJob::Cursor).default(0))
                .col(text_null(RepriceJob::Error))
                .col(timestamp_with_time_zone_null(RepriceJob::HeartbeatAt))
                .col(timestamp_with_time_zone(RepriceJob::CreatedAt))
                .col(timestamp_with_time_zone(RepriceJob::UpdatedAt))
                .to_owned()
        },
        index: Some(("idx_reprice_job_status_created", &["status", "created_at"])),
    }
}

#[derive(DeriveIden)]
enum CacheEpoch {
    Table,
    Id,
    Epoch,
    RedisId,
}

/// One row: the cache epoch every instance uses, and the Redis `run_id` it belongs to.
/// A Redis with another `run_id` (restarted from an old snapshot, a promoted replica)
/// moves everyone to the next epoch, so none of its old entries can be read.
fn create_cache_epoch() -> CreateTable {
    CreateTable {
        name: "m20261126_000004_create_cache_epoch",
        table: || {
            Table::create()
                .table(CacheEpoch::Table)
                .if_not_exists()
                .col(integer(CacheEpoch::Id).primary_key())
                .col(big_integer(CacheEpoch::Epoch))
                .col(string_len(CacheEpoch::RedisId, 64))
                .to_owned()
        },
        index: None,
    }
}

/// Makes the outbox trigger's `NOTIFY` skippable with
/// [`NOTIFY_SETTING`](cache_service::coherence::NOTIFY_SETTING) (off for one session).
/// SQLite has no `NOTIFY`; nothing changes there.
struct QuietServiceWrites;

impl MigrationName for QuietServiceWrites {
    fn name(&self) -> &str {
        "m20261126_000005_quiet_service_writes"
    }
}

const POSTGRES_OWE_INVALIDATION: &str =
    "CREATE OR REPLACE FUNCTION product_owe_invalidation() RETURNS trigger AS $$
    BEGIN
        IF TG_OP = 'DELETE' THEN
            INSERT INTO cache_outbox (product_id, version) VALUES (OLD.id, OLD.version + 1);
        ELSIF TG_OP = 'INSERT' OR NEW.version <> OLD.version THEN
            INSERT INTO cache_outbox (product_id, version) VALUES (NEW.id, NEW.version);
        END IF;
        IF current_setting('cache_outbox.notify', true) IS DISTINCT FROM 'off' THEN
            PERFORM pg_notify('cache_outbox', '');
        END IF;
        RETURN NULL;
    END $$ LANGUAGE plpgsql";

#[async_trait::async_trait]
impl MigrationTrait for QuietServiceWrites {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // On a generic outbox (created by another embedder) the product-only function
        // has no place: migration 7 installs the generic one, which is quiet already.
        if manager.get_database_backend() == sea_orm::DbBackend::Postgres
            && !has_generic_outbox(manager).await?
        {
            manager
                .get_connection()
                .execute_unprepared(POSTGRES_OWE_INVALIDATION)
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == sea_orm::DbBackend::Postgres {
            // The function as the outbox migration created it.
            let always_notify = POSTGRES_OUTBOX
                .iter()
                .find(|s| s.contains("FUNCTION product_owe_invalidation"))
                .ok_or_else(|| DbErr::Migration("the outbox trigger function is missing".into()))?;
            manager
                .get_connection()
                .execute_unprepared(always_notify)
                .await?;
        }
        Ok(())
    }
}

/// The owner token of a running reprice job: each claim sets a new one, and every later
/// write of the worker that claimed it is conditional on it, so a worker that was slow
/// (not dead) and lost its job to another cannot commit another batch of it.
struct RepriceJobOwner;

impl MigrationName for RepriceJobOwner {
    fn name(&self) -> &str {
        "m20261129_000006_reprice_job_owner"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for RepriceJobOwner {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(RepriceJob::Table)
                    .add_column(string_len_null(RepriceJob::Owner, 36))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(RepriceJob::Table)
                    .drop_column(RepriceJob::Owner)
                    .to_owned(),
            )
            .await
    }
}

/// The outbox becomes the coherence component's, shared by any table: rows name their
/// `namespace` and `entity_id`, and the product triggers are the ones
/// [`OutboxTable`](cache_service::OutboxTable) writes (versions never go back, a created
/// row owes an unconditional removal, a changed id owes both ids).
///
/// The columns change only where they are still the product-only ones: another embedder
/// of `cache-service` may have created the generic outbox
/// ([`tables_migration`](cache_service::coherence::tables_migration)) before
/// product-service first migrated this database.
struct GenericOutbox;

impl MigrationName for GenericOutbox {
    fn name(&self) -> &str {
        "m20261129_000007_generic_outbox"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for GenericOutbox {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        // The triggers as they were then (without scopes: migration 9 adds them).
        let table = cache_service::OutboxTable {
            scoped_groups: &[],
            ..crate::service::PRODUCT_TABLE
        };
        let to_db = |e: cache_service::CacheError| DbErr::Migration(e.to_string());
        // The old triggers write the old columns: gone before the columns change.
        let mut statements = table.uninstall_statements(backend).map_err(to_db)?;
        if manager.has_column(OUTBOX, "product_id").await? {
            statements.push(format!(
                "ALTER TABLE {OUTBOX} RENAME COLUMN product_id TO entity_id"
            ));
        }
        if !manager.has_column(OUTBOX, "namespace").await? {
            let namespace_type = match backend {
                sea_orm::DbBackend::Postgres => "VARCHAR(64)",
                _ => "TEXT",
            };
            statements.push(format!(
                "ALTER TABLE {OUTBOX} ADD COLUMN namespace {namespace_type} NOT NULL DEFAULT '{}'",
                table.namespace.name()
            ));
        }
        statements.extend(table.install_statements(backend).map_err(to_db)?);
        if backend == sea_orm::DbBackend::Postgres {
            // A cluster's identity names every master: longer than one run_id.
            statements.push("ALTER TABLE cache_epoch ALTER COLUMN redis_id TYPE TEXT".into());
        }
        execute(manager, &statements).await
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Err(DbErr::Migration(
            "the generic outbox cannot be turned back into the product-only one".into(),
        ))
    }
}

/// The outbox table, product-only (migrations 2–6) or generic (migration 7 on, or
/// another embedder's [`tables_migration`](cache_service::coherence::tables_migration)).
const OUTBOX: &str = "cache_outbox";

/// Whether `cache_outbox` exists in its generic form already.
async fn has_generic_outbox(manager: &SchemaManager<'_>) -> Result<bool, DbErr> {
    manager.has_column(OUTBOX, "entity_id").await
}

/// Runs `statements` in order in one transaction, stopping at the first error: on one
/// connection, so a `DROP` and the `CREATE` after it cannot meet two pooled SQLite
/// connections, one of which still has the old schema cached (its `CREATE` then fails
/// with "already exists").
async fn execute<S: AsRef<str>>(
    manager: &SchemaManager<'_>,
    statements: &[S],
) -> Result<(), DbErr> {
    let txn = manager.get_connection().begin().await?;
    for statement in statements {
        txn.execute_unprepared(statement.as_ref()).await?;
    }
    txn.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each table migration undoes itself: `down` drops the table its `up` created,
    /// index and all.
    #[tokio::test]
    async fn a_table_migration_drops_the_table_it_created() {
        let db = sea_orm::Database::connect("sqlite::memory:")
            .await
            .expect("connects");
        let manager = SchemaManager::new(&db);
        let tables = [
            ("product", create_product()),
            ("reprice_job", create_reprice_job()),
            ("cache_epoch", create_cache_epoch()),
        ];
        for (table, migration) in tables {
            migration.up(&manager).await.expect("up");
            assert!(manager.has_table(table).await.expect("looks"), "{table}");
            migration.down(&manager).await.expect("down");
            assert!(!manager.has_table(table).await.expect("looks"), "{table}");
        }
    }
}
