use sea_orm_migration::prelude::*;

use super::{OUTBOX, execute};

/// The outbox becomes the coherence component's, shared by any table: rows name their
/// `namespace` and `entity_id`, and the product triggers are the ones
/// [`OutboxTable`](cache_service::OutboxTable) writes (versions never go back, a created
/// row owes an unconditional removal, a changed id owes both ids).
///
/// The columns change only where they are still the product-only ones: another embedder
/// of `cache-service` may have created the generic outbox
/// ([`tables_migration`](cache_service::coherence::tables_migration)) before
/// product-service first migrated this database.
#[derive(DeriveMigrationName)]
pub(super) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
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
