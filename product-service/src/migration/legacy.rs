//! Where product-service records its migrations, and moving the records of a database
//! migrated before it had a table of its own.

use sea_orm_migration::prelude::*;

use super::Migrator;

/// Where product-service records its applied migrations. Not sea-orm's default
/// (`seaql_migrations`): a host application's own migrator keeps its rows there and
/// refuses to run beside rows of migrations it does not know.
pub(crate) const MIGRATION_TABLE: &str = "product_service_migrations";

/// sea-orm's default migration table, where product-service recorded its migrations
/// before it had [`MIGRATION_TABLE`].
pub(super) const LEGACY_MIGRATION_TABLE: &str = "seaql_migrations";

/// The first migration product-service ever applies: finding it in
/// [`LEGACY_MIGRATION_TABLE`] is what marks a database migrated the old way.
pub(super) const FIRST_MIGRATION: &str = "m20261126_000001_create_product";

/// Moves product-service's rows from [`LEGACY_MIGRATION_TABLE`] into
/// [`MIGRATION_TABLE`], so a database migrated before product-service had its own table
/// is not migrated again, and the default table is left to the host application.
///
/// Only when the legacy table holds product-service's first migration: sea-orm refuses
/// to run a migrator beside applied migrations it does not know, so a database that
/// product-service migrated the old way had no other migrator's rows in that table,
/// and every row there named like one of product-service's migrations is its own.
/// Rows of other names are never touched. Idempotent: a row already carried over is
/// not inserted twice, and once moved there is nothing left to move.
pub(crate) async fn adopt_legacy_rows(db: &sea_orm::DatabaseConnection) -> Result<(), DbErr> {
    use sea_orm::{ConnectionTrait, Statement, TransactionTrait};

    Migrator::install(db).await?;
    let manager = SchemaManager::new(db);
    if !manager.has_table(LEGACY_MIGRATION_TABLE).await? {
        return Ok(());
    }
    let backend = db.get_database_backend();
    let ours = Migrator::migrations()
        .iter()
        .map(|migration| format!("'{}'", migration.name()))
        .collect::<Vec<_>>()
        .join(", ");
    let legacy = db
        .query_one_raw(Statement::from_string(
            backend,
            format!(
                "SELECT version FROM {LEGACY_MIGRATION_TABLE} WHERE version = '{FIRST_MIGRATION}'"
            ),
        ))
        .await?;
    if legacy.is_none() {
        return Ok(());
    }
    let txn = db.begin().await?;
    txn.execute_unprepared(&format!(
        "INSERT INTO {MIGRATION_TABLE} (version, applied_at) \
         SELECT version, applied_at FROM {LEGACY_MIGRATION_TABLE} WHERE version IN ({ours}) \
         ON CONFLICT (version) DO NOTHING"
    ))
    .await?;
    txn.execute_unprepared(&format!(
        "DELETE FROM {LEGACY_MIGRATION_TABLE} WHERE version IN ({ours})"
    ))
    .await?;
    txn.commit().await?;
    tracing::info!(
        from = LEGACY_MIGRATION_TABLE,
        to = MIGRATION_TABLE,
        "product-service's applied migrations carried over to its own table"
    );
    Ok(())
}
