//! The cache epoch: which Redis this process talks to, checked against the identity every
//! process recorded in the database, and moved (for all) when it changed.

use sea_orm::sea_query::LockType;
use sea_orm::{
    ActiveValue::Set, DbBackend, EntityTrait, QuerySelect, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
};

use super::schema::epoch;
use super::{Coherence, lock};
use crate::error::{CacheError, Result};

impl Coherence {
    /// Checks which Redis the cache talks to and moves this process to the epoch every
    /// process uses for it (a Redis not seen before starts a new epoch for all). Writers
    /// need not call it: the first write does, and relays do on every pass.
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
    /// coherence.join().await?; // the memory store has no identity to check: nothing moves
    /// assert_eq!(coherence.cache().epoch(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn join(&self) -> Result<()> {
        let cache = &self.inner.cache;
        let before = cache.backend().refresh_reconnects();
        let identity = match cache.backend().identity().await {
            Ok(identity) => identity,
            Err(error) => {
                cache.hold_reads_until_resync();
                return Err(error);
            }
        };
        if let Some(identity) = identity {
            let checked = lock(&self.inner.checked_identity).clone();
            if checked.as_deref() != Some(identity.as_str()) {
                let epoch = self.epoch_for(&identity).await?;
                if epoch != cache.epoch() {
                    tracing::info!(epoch, redis = %identity, "cache epoch changed: entries from before are ignored");
                    cache.set_epoch(epoch);
                }
                *lock(&self.inner.checked_identity) = Some(identity);
            }
        }
        let after = cache.backend().refresh_reconnects();
        if before != after {
            return Err(CacheError::Backend(
                "the cache reconnected while its identity was checked".into(),
            ));
        }
        cache.set_verified(after);
        Ok(())
    }

    /// The epoch for the Redis with this identity, moving every process to a new one if
    /// the identity is new. One transaction with the row locked, so processes agree.
    pub(super) async fn epoch_for(&self, identity: &str) -> Result<u64> {
        let db = &self.inner.db;
        let txn = db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await?;
        let mut select = epoch::Entity::find_by_id(1);
        if db.get_database_backend() == DbBackend::Postgres {
            select = select.lock(LockType::Update);
        }
        let epoch = match select.one(&txn).await? {
            Some(row) if row.redis_id == identity => row.epoch,
            Some(row) => {
                let next = row.epoch + 1;
                epoch::Entity::update(epoch::ActiveModel {
                    id: Set(1),
                    epoch: Set(next),
                    redis_id: Set(identity.to_owned()),
                })
                .exec(&txn)
                .await?;
                next
            }
            None => {
                epoch::Entity::insert(epoch::ActiveModel {
                    id: Set(1),
                    epoch: Set(0),
                    redis_id: Set(identity.to_owned()),
                })
                .exec(&txn)
                .await?;
                0
            }
        };
        txn.commit().await?;
        Ok(epoch.unsigned_abs())
    }
}
