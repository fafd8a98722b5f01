//! After a commit: invalidate inline when this process trusts the cache, else wake every
//! relay and wait (up to the acknowledgement bound) until one has applied the change.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use sea_orm::sea_query::{Alias, Expr};
use sea_orm::{ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QuerySelect};

use super::schema::outbox;
use super::{Applied, CHANNEL, Change, Coherence, Owes};
use crate::error::Result;

impl Coherence {
    /// Inline invalidation, only at a checked epoch and with no outage unresolved.
    pub(super) async fn invalidate_inline(&self, changes: &[Change]) -> bool {
        let cache = &self.inner.cache;
        let looked_up = match self.scopes_in_outbox(changes).await {
            Ok(found) => found,
            Err(error) => {
                tracing::debug!(%error, "cannot read a change's scopes; the relays invalidate");
                return false;
            }
        };
        let owed = self.invalidations(changes.iter().map(|c| {
            Owes {
                namespace: c.namespace.name(),
                id: c.id,
                version: c.version,
                scopes: match &c.scopes {
                    Some(known) => known.iter().map(String::as_str).collect(),
                    None => looked_up
                        .get(&(c.namespace.name(), c.id))
                        .map(|found| found.iter().map(String::as_str).collect())
                        .unwrap_or_default(),
                },
            }
        }));
        let (items, groups) = (&owed.items, owed.all_groups());
        if cache.needs_resync_for(items, &groups) {
            return false;
        }
        if !cache.is_verified()
            && let Err(error) = self.join().await
        {
            tracing::debug!(%error, "cache: cannot check which Redis this is; the relays invalidate");
            return false;
        }
        if let Err(error) = cache.invalidate_scopes(items, &groups).await {
            tracing::warn!(%error, "invalidation after commit failed; waiting for a relay");
            return false;
        }
        self.settle_created(changes).await;
        true
    }

    /// The scope values that the outbox rows of `changes` whose writer did not name them
    /// record (every row of those entities still owed), for tables with scoped groups.
    /// A row that is gone was applied by a relay, which moved its scopes.
    async fn scopes_in_outbox(
        &self,
        changes: &[Change],
    ) -> Result<HashMap<(&'static str, i64), Vec<String>>> {
        let unknown = changes.iter().filter(|c| {
            c.scopes.is_none()
                && self
                    .table(c.namespace.name())
                    .is_some_and(|table| table.scope_column().is_some())
        });
        let mut found: HashMap<(&'static str, i64), Vec<String>> = HashMap::new();
        for (namespace, ids) in ids_by_namespace(unknown) {
            for ids in ids.chunks(500) {
                let rows: Vec<(i64, Option<String>, Option<String>)> = outbox::Entity::find()
                    .select_only()
                    .column(outbox::Column::EntityId)
                    .column_as(Expr::col(Alias::new("old_scope")), "old_scope")
                    .column_as(Expr::col(Alias::new("new_scope")), "new_scope")
                    .filter(outbox::Column::Namespace.eq(namespace))
                    .filter(outbox::Column::EntityId.is_in(ids.iter().copied()))
                    .into_tuple()
                    .all(&self.inner.db)
                    .await?;
                for (id, old, new) in rows {
                    let values = found.entry((namespace, id)).or_default();
                    for value in [old, new].into_iter().flatten() {
                        if !values.contains(&value) {
                            values.push(value);
                        }
                    }
                }
            }
        }
        Ok(found)
    }

    /// Deletes the "created" rows of `changes`, whose removal was just applied at a
    /// checked epoch: a relay cannot tell an applied creation from one that was not
    /// (nothing in Redis records it), and would remove the entry again, costing a load.
    async fn settle_created(&self, changes: &[Change]) {
        let created = changes.iter().filter(|c| c.version == 0);
        for (namespace, ids) in ids_by_namespace(created) {
            let deleted = outbox::Entity::delete_many()
                .filter(outbox::Column::Namespace.eq(namespace))
                .filter(outbox::Column::EntityId.is_in(ids))
                .filter(outbox::Column::Version.lt(0))
                .exec(&self.inner.db)
                .await;
            if let Err(error) = deleted {
                tracing::debug!(%error, "created rows left for the relay");
            }
        }
    }

    /// Wakes every relay (this process's at once, others by `NOTIFY` on PostgreSQL; on
    /// SQLite they poll) and waits until none of `changes`' rows is owed any more.
    ///
    /// When nobody can apply it (this process's Redis does not answer, and no relay of
    /// another process is registered), it returns at once: waiting would only slow every
    /// write of an outage down.
    pub(super) async fn wait_for_relays(&self, changes: &[Change]) -> Applied {
        let deadline = Instant::now() + self.inner.config.ack_timeout;
        if self.inner.cache.ping().await.is_err() && !self.other_relays_alive().await {
            tracing::debug!("no relay can apply the write's invalidation now; it stays owed");
            return Applied::Owed;
        }
        self.wake_relays().await;
        loop {
            match self.owes(changes).await {
                Ok(false) => return Applied::ByRelay,
                Ok(true) => {}
                Err(error) => {
                    tracing::warn!(%error, "cannot tell whether a relay applied a write's invalidation");
                    return Applied::Owed;
                }
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    timeout = ?self.inner.config.ack_timeout,
                    "no relay applied a write's invalidation in time; it stays owed"
                );
                return Applied::Owed;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub(super) async fn wake_relays(&self) {
        self.inner.wake.notify_one();
        if self.inner.db.get_database_backend() == DbBackend::Postgres
            && let Err(error) = self
                .inner
                .db
                .execute_unprepared(&format!("SELECT pg_notify('{CHANNEL}', '')"))
                .await
        {
            tracing::warn!(%error, "cannot wake the other relays");
        }
    }

    /// Whether any outbox row of these entities is still owed.
    pub(super) async fn owes(&self, changes: &[Change]) -> Result<bool> {
        for (namespace, ids) in ids_by_namespace(changes.iter()) {
            for ids in ids.chunks(500) {
                let found = outbox::Entity::find()
                    .filter(outbox::Column::Namespace.eq(namespace))
                    .filter(outbox::Column::EntityId.is_in(ids.iter().copied()))
                    .limit(1)
                    .one(&self.inner.db)
                    .await?;
                if found.is_some() {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

/// The ids of `changes`, by namespace name.
fn ids_by_namespace<'a>(
    changes: impl Iterator<Item = &'a Change>,
) -> BTreeMap<&'static str, Vec<i64>> {
    let mut by_namespace: BTreeMap<&'static str, Vec<i64>> = BTreeMap::new();
    for change in changes {
        by_namespace
            .entry(change.namespace.name())
            .or_default()
            .push(change.id);
    }
    by_namespace
}
