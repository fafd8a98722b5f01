//! Replaying the outbox: what rows are owed, applying them in batches (row by row when a
//! batch fails, so what healthy shards are owed is applied), and which shards the rest
//! still holds.

use std::collections::BTreeSet;

use sea_orm::sea_query::{Alias, Expr, LockType, SimpleExpr};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect, Select, TransactionTrait,
};

use super::schema::{SCOPE_COLUMNS, outbox};
use super::{Coherence, Owes};
use crate::error::{CacheError, Result};

/// An outbox row as the relay applies it: with the scope columns, where this component's
/// tables have scoped groups (their migrations added the columns; elsewhere they may not
/// exist, and read as `NULL`).
#[derive(Debug, FromQueryResult)]
struct OwedRow {
    id: i64,
    namespace: String,
    entity_id: i64,
    version: i64,
    old_scope: Option<String>,
    new_scope: Option<String>,
}

impl Coherence {
    /// [`drain`](Self::drain) after a successful [`join`](Self::join).
    pub(super) async fn drain_joined(&self) -> Result<usize> {
        let mut total = 0;
        let mut after = 0;
        let mut first_error = None;
        loop {
            let batch = self.apply_batch(after).await?;
            total += batch.applied;
            if let Some(error) = batch.error {
                first_error.get_or_insert(error);
            }
            match batch.last_id {
                Some(last) if batch.rows >= self.inner.config.batch_size as usize => after = last,
                _ => break,
            }
        }
        first_error.map_or(Ok(total), Err)
    }

    /// The highest outbox row id of this component's tables (0 when empty).
    pub(super) async fn high_water(&self) -> Result<i64> {
        let row = outbox::Entity::find()
            .select_only()
            .column_as(outbox::Column::Id.max(), "high")
            .filter(outbox::Column::Namespace.is_in(self.namespaces()))
            .into_tuple::<Option<i64>>()
            .one(&self.inner.db)
            .await?;
        Ok(row.flatten().unwrap_or(0))
    }

    /// Whether a row with an id up to `high` is still owed (rows other relays hold
    /// locked count too).
    pub(super) async fn owed_through(&self, high: i64) -> Result<bool> {
        Ok(outbox::Entity::find()
            .filter(outbox::Column::Namespace.is_in(self.namespaces()))
            .filter(outbox::Column::Id.lte(high))
            .limit(1)
            .one(&self.inner.db)
            .await?
            .is_some())
    }

    /// The cache shards that rows with an id up to `high` still owe invalidations to
    /// (rows other relays hold locked count too); `None` when there are too many rows to
    /// look at: then every shard counts as owed.
    pub(super) async fn owed_shards_through(&self, high: i64) -> Result<Option<BTreeSet<usize>>> {
        const LOOK_AT: u64 = 10_000;
        let rows = self
            .owed_rows(
                outbox::Entity::find()
                    .filter(outbox::Column::Namespace.is_in(self.namespaces()))
                    .filter(outbox::Column::Id.lte(high))
                    .limit(LOOK_AT),
            )
            .all(&self.inner.db)
            .await?;
        if rows.len() as u64 >= LOOK_AT {
            return Ok(None);
        }
        let owed = self.invalidations(owed(&rows));
        Ok(Some(
            self.inner.cache.shards_of(&owed.items, &owed.all_groups()),
        ))
    }

    /// `select` as [`OwedRow`]s.
    fn owed_rows(
        &self,
        select: Select<outbox::Entity>,
    ) -> sea_orm::Selector<sea_orm::SelectModel<OwedRow>> {
        let scope = |column: &str| -> SimpleExpr {
            if self.has_scopes() {
                Expr::col(Alias::new(column))
            } else {
                Expr::cust("CAST(NULL AS TEXT)")
            }
        };
        let [old, new] = SCOPE_COLUMNS;
        select
            .select_only()
            .column(outbox::Column::Id)
            .column(outbox::Column::Namespace)
            .column(outbox::Column::EntityId)
            .column(outbox::Column::Version)
            .column_as(scope(old), old)
            .column_as(scope(new), new)
            .into_model::<OwedRow>()
    }

    /// Applies one batch of the rows after id `after`. The caller has checked the epoch.
    async fn apply_batch(&self, after: i64) -> Result<Batch> {
        let db = &self.inner.db;
        let select = outbox::Entity::find()
            .filter(outbox::Column::Namespace.is_in(self.namespaces()))
            .filter(outbox::Column::Id.gt(after))
            .order_by_asc(outbox::Column::Id)
            .limit(self.inner.config.batch_size);
        if db.get_database_backend() == DbBackend::Postgres {
            // Row locks held while the cache is updated: other relays skip these rows.
            let txn = db.begin().await?;
            let rows = self
                .owed_rows(select.lock_with_behavior(
                    LockType::Update,
                    sea_orm::sea_query::LockBehavior::SkipLocked,
                ))
                .all(&txn)
                .await?;
            let (applied, error) = self.apply(&rows).await;
            delete(&txn, &applied).await?;
            txn.commit().await?;
            Ok(Batch::of(&rows, applied.len(), error))
        } else {
            // SQLite has one writer; holding its lock across Redis calls would stall
            // every write. Two relays on one file may apply a row twice: harmless.
            let rows = self.owed_rows(select).all(db).await?;
            let (applied, error) = self.apply(&rows).await;
            delete(db, &applied).await?;
            Ok(Batch::of(&rows, applied.len(), error))
        }
    }

    /// Replays what `rows` owe; returns the rows applied, and the error that left the
    /// others owed. A "created" row removes whatever is cached under its id (it may come
    /// from an earlier incarnation of the id); a creator that applied that removal
    /// itself deleted the row already ([`after_commit`](Self::after_commit)).
    ///
    /// All rows in one step; if that fails (a cluster master is down, say), row by row,
    /// so that what the healthy shards are owed is applied and only the rest waits.
    async fn apply<'r>(&self, rows: &'r [OwedRow]) -> (Vec<&'r OwedRow>, Option<CacheError>) {
        let cache = &self.inner.cache;
        if rows.is_empty() {
            return (Vec::new(), None);
        }
        let Err(error) = cache.replay(&self.invalidations(owed(rows))).await else {
            return (rows.iter().collect(), None);
        };
        let mut applied = Vec::new();
        for row in rows {
            let owed = self.invalidations(owed(std::slice::from_ref(row)));
            if cache.replay(&owed).await.is_ok() {
                applied.push(row);
            }
        }
        (applied, Some(error))
    }
}

/// What one batch of outbox rows came to.
struct Batch {
    rows: usize,
    last_id: Option<i64>,
    applied: usize,
    /// Why some rows are still owed.
    error: Option<CacheError>,
}

impl Batch {
    fn of(rows: &[OwedRow], applied: usize, error: Option<CacheError>) -> Self {
        Self {
            rows: rows.len(),
            last_id: rows.last().map(|row| row.id),
            applied,
            error,
        }
    }
}

/// What outbox rows owe, as [`Coherence::invalidations`] takes it: a "created" row
/// (stored as `-version`) owes an unconditional removal (version 0); the scopes are the
/// row's values before and after the change.
fn owed(rows: &[OwedRow]) -> impl Iterator<Item = Owes<'_>> {
    rows.iter().map(|row| {
        let version = if row.version < 0 {
            0
        } else {
            row.version.unsigned_abs()
        };
        let mut scopes: Vec<&str> = [&row.old_scope, &row.new_scope]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        scopes.dedup();
        Owes {
            namespace: row.namespace.as_str(),
            id: row.entity_id,
            version,
            scopes,
        }
    })
}

async fn delete(db: &impl ConnectionTrait, rows: &[&OwedRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    outbox::Entity::delete_many()
        .filter(outbox::Column::Id.is_in(rows.iter().map(|r| r.id)))
        .exec(db)
        .await?;
    Ok(())
}
