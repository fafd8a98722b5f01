use sea_orm_migration::prelude::*;

use super::{execute, has_generic_outbox};

/// The transactional outbox: triggers on `product` record, in the same transaction as
/// any change made by anyone (this service, `psql`, `sqlite3`, another program), the
/// invalidation it owes: the product id and the version its cached copies must reach.
/// An `UPDATE` that does not bump `version` gets it bumped by a trigger, so "+1 on
/// every change" holds for every writer. On PostgreSQL the trigger also sends
/// `NOTIFY cache_outbox` to wake the relays.
#[derive(DeriveMigrationName)]
pub(super) struct Migration;

pub(super) const POSTGRES_OUTBOX: &[&str] = &[
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
impl MigrationTrait for Migration {
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
