use sea_orm_migration::prelude::*;

use super::has_generic_outbox;
use super::m20261126_000002_create_cache_outbox::POSTGRES_OUTBOX;

/// Makes the outbox trigger's `NOTIFY` skippable with
/// [`NOTIFY_SETTING`](cache_service::coherence::NOTIFY_SETTING) (off for one session).
/// SQLite has no `NOTIFY`; nothing changes there.
#[derive(DeriveMigrationName)]
pub(super) struct Migration;

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
impl MigrationTrait for Migration {
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
