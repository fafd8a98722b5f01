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
mod m20261126_000002_create_cache_outbox;
mod m20261126_000005_quiet_service_writes;
mod m20261129_000006_reprice_job_owner;
mod m20261129_000007_generic_outbox;

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
            Box::new(m20261126_000002_create_cache_outbox::Migration),
            Box::new(create_reprice_job()),
            Box::new(create_cache_epoch()),
            Box::new(m20261126_000005_quiet_service_writes::Migration),
            Box::new(m20261129_000006_reprice_job_owner::Migration),
            Box::new(m20261129_000007_generic_outbox::Migration),
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
