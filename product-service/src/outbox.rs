//! The outbox relay: applies the invalidations that triggers recorded with every change
//! to a product, so none is lost to a crash, a Redis outage, or a writer that bypassed
//! [`ProductService`](crate::ProductService).
//!
//! Every server instance runs one ([`ProductService::spawn_relay`](crate::ProductService::spawn_relay)). It is the safety
//! net: the service still invalidates inline after commit, so a client reads its own
//! write at once; replaying an invalidation that was already applied costs nothing
//! ([`CacheService::replay_write`]). Delivery is at-least-once and idempotent. Relays
//! poll, and share the work with `FOR UPDATE SKIP LOCKED` on PostgreSQL, where a
//! change made outside the service also wakes them at once with `NOTIFY cache_outbox`
//! (the service's own connections skip it: they invalidate inline).
//!
//! After a cache outage the relay also reopens the cache to reads, only once what was
//! owed has been applied ([`CacheService::resume`]); and on every pass it checks which
//! Redis the cache talks to ([`OutboxRelay::sync_epoch`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_service::{CacheService, Invalidation};
use sea_orm::sea_query::{LockBehavior, LockType};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, DbBackend, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, SqliteTransactionMode, TransactionOptions,
    TransactionTrait,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::entity::{cache_epoch, cache_outbox};
use crate::error::{Error, Result};
use crate::service::{PRODUCT, PRODUCT_LIST};

/// How the relay runs.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// How often to look for owed invalidations without a notification.
    pub poll_interval: Duration,
    /// Rows applied per batch (one group bump and one `DELETE` per batch).
    pub batch_size: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(250),
            batch_size: 500,
        }
    }
}

/// Applies owed invalidations, and keeps this process on the shared cache epoch.
#[derive(Debug, Clone)]
pub struct OutboxRelay {
    db: DatabaseConnection,
    cache: CacheService,
    batch_size: u64,
    /// The Redis identity this process last checked its epoch against.
    checked_identity: Arc<Mutex<Option<String>>>,
}

impl OutboxRelay {
    pub(crate) fn new(db: DatabaseConnection, cache: CacheService, batch_size: u64) -> Self {
        Self {
            db,
            cache,
            batch_size: batch_size.max(1),
            checked_identity: Arc::default(),
        }
    }

    /// Number of invalidations owed (rows in the outbox).
    pub async fn backlog(&self) -> Result<u64> {
        Ok(cache_outbox::Entity::find().count(&self.db).await?)
    }

    /// Applies one batch; returns how many rows it resolved.
    pub async fn apply_batch(&self) -> Result<usize> {
        if self.db.get_database_backend() == DbBackend::Postgres {
            // Row locks held while the cache is updated: other relays skip these rows.
            let txn = self.db.begin().await?;
            let rows = cache_outbox::Entity::find()
                .order_by_asc(cache_outbox::Column::Id)
                .limit(self.batch_size)
                .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
                .all(&txn)
                .await?;
            self.apply(&rows).await?;
            delete(&txn, &rows).await?;
            txn.commit().await?;
            Ok(rows.len())
        } else {
            // SQLite has one writer; holding its lock across Redis calls would stall
            // every write. Two relays on one file may apply a row twice: harmless.
            let rows = cache_outbox::Entity::find()
                .order_by_asc(cache_outbox::Column::Id)
                .limit(self.batch_size)
                .all(&self.db)
                .await?;
            self.apply(&rows).await?;
            delete(&self.db, &rows).await?;
            Ok(rows.len())
        }
    }

    /// Applies batches until the outbox is empty; returns how many rows it resolved.
    pub async fn drain(&self) -> Result<usize> {
        let mut total = 0;
        loop {
            let applied = self.apply_batch().await?;
            total += applied;
            if applied < self.batch_size as usize {
                return Ok(total);
            }
        }
    }

    async fn apply(&self, rows: &[cache_outbox::Model]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        // One invalidation per product, at the highest version owed.
        let mut owed = BTreeMap::new();
        for row in rows {
            let version = owed.entry(row.product_id).or_insert(row.version);
            *version = (*version).max(row.version);
        }
        let items: Vec<_> = owed
            .into_iter()
            .map(|(id, version)| {
                Invalidation::at_version(self.cache.key(PRODUCT, id), version.unsigned_abs())
            })
            .collect();
        self.cache
            .replay_write(&items, &[PRODUCT_LIST])
            .await
            .map_err(Error::Cache)
    }

    /// Checks which Redis the cache talks to, and moves to the shared epoch for it: a
    /// Redis not seen before (restarted from an old snapshot, a promoted replica) starts
    /// a new epoch for every instance, so entries it holds from before are never read.
    pub async fn sync_epoch(&self) -> Result<()> {
        let Some(identity) = self.cache.backend_identity().await.map_err(Error::Cache)? else {
            return Ok(()); // an in-process cache cannot be replaced behind our back
        };
        if lock(&self.checked_identity).as_deref() == Some(identity.as_str()) {
            return Ok(());
        }
        let epoch = self.epoch_for(&identity).await?;
        if epoch != self.cache.epoch() {
            tracing::info!(epoch, redis = %identity, "cache epoch changed: entries from before are ignored");
            self.cache.set_epoch(epoch);
        }
        *lock(&self.checked_identity) = Some(identity);
        Ok(())
    }

    /// The epoch for the Redis with this identity, moving every instance to a new one if
    /// the identity is new. One transaction with the row locked, so concurrent instances
    /// agree.
    async fn epoch_for(&self, identity: &str) -> Result<u64> {
        let txn = self
            .db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await?;
        let mut select = cache_epoch::Entity::find_by_id(1);
        if self.db.get_database_backend() == DbBackend::Postgres {
            select = select.lock(LockType::Update);
        }
        let epoch = match select.one(&txn).await? {
            Some(row) if row.redis_id == identity => row.epoch,
            Some(row) => {
                let next = row.epoch + 1;
                cache_epoch::Entity::update(cache_epoch::ActiveModel {
                    id: Set(1),
                    epoch: Set(next),
                    redis_id: Set(identity.to_owned()),
                })
                .exec(&txn)
                .await?;
                next
            }
            None => {
                cache_epoch::Entity::insert(cache_epoch::ActiveModel {
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

    /// One pass of the loop: check the Redis identity, replay what is owed, reopen the
    /// cache to reads if an outage is now resolved, report the backlog.
    async fn tick(&self) {
        let mark = self.cache.outage_mark();
        let identity_checked = match self.sync_epoch().await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "cache: cannot check which Redis this is; reads stay off it");
                false
            }
        };
        match self.drain().await {
            Ok(applied) => {
                if applied > 0 {
                    tracing::debug!(applied, "outbox: invalidations applied");
                }
                if identity_checked && self.cache.needs_resync() && self.cache.ping().await.is_ok()
                {
                    self.cache.resume(mark);
                    tracing::info!("cache back: owed invalidations applied, reads use it again");
                }
            }
            Err(error) => tracing::warn!(%error, "outbox: invalidations still owed; will retry"),
        }
        match self.backlog().await {
            Ok(n) => metrics::gauge!("cache_invalidation_backlog").set(n as f64),
            Err(error) => tracing::warn!(%error, "outbox: cannot count the backlog"),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn delete(db: &impl sea_orm::ConnectionTrait, rows: &[cache_outbox::Model]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    cache_outbox::Entity::delete_many()
        .filter(cache_outbox::Column::Id.is_in(rows.iter().map(|r| r.id)))
        .exec(db)
        .await?;
    Ok(())
}

/// The running relay. [`shutdown`](Self::shutdown) stops it after one last drain and
/// waits; dropping the handle stops it the same way without waiting.
#[derive(Debug)]
pub struct RelayHandle {
    stop: watch::Sender<bool>,
    passes: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl RelayHandle {
    pub(crate) fn spawn(relay: OutboxRelay, config: RelayConfig) -> Self {
        relay.cache.hold_reads_after_outage(true);
        // Until the first pass has checked which Redis this is, its entries wait.
        relay.cache.hold_reads_until_resync();
        let (stop, stopped) = watch::channel(false);
        let (passed, passes) = watch::channel(0);
        let task = tokio::spawn(run(relay, config, stopped, passed));
        Self { stop, passes, task }
    }

    /// Waits until the relay has made its first pass (checked which Redis this is and
    /// applied what was owed), so a server can start serving with its cache open.
    pub async fn first_pass(&self) {
        let mut passes = self.passes.clone();
        let _ = passes.wait_for(|n| *n > 0).await;
    }

    /// Applies what is still owed, then stops.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            tracing::error!(%error, "outbox relay task failed");
        }
    }
}

async fn run(
    relay: OutboxRelay,
    config: RelayConfig,
    mut stopped: watch::Receiver<bool>,
    passed: watch::Sender<u64>,
) {
    let mut listener = listen(&relay.db).await;
    loop {
        relay.tick().await;
        passed.send_modify(|n| *n += 1);
        tokio::select! {
            _ = stopped.changed() => break,
            () = tokio::time::sleep(config.poll_interval) => {}
            () = notified(&mut listener) => {}
        }
    }
    match relay.drain().await {
        Ok(applied) => tracing::info!(applied, "outbox: drained before shutdown"),
        Err(error) => tracing::warn!(%error, "outbox: invalidations left for the next start"),
    }
}

type Listener = Option<sea_orm::sqlx::postgres::PgListener>;

/// A `LISTEN cache_outbox` connection on PostgreSQL; `None` elsewhere or on failure
/// (the relay then polls).
async fn listen(db: &DatabaseConnection) -> Listener {
    if db.get_database_backend() != DbBackend::Postgres {
        return None;
    }
    let pool = db.get_postgres_connection_pool();
    let mut listener = match sea_orm::sqlx::postgres::PgListener::connect_with(pool).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::warn!(%error, "outbox: cannot LISTEN; polling instead");
            return None;
        }
    };
    match listener.listen("cache_outbox").await {
        Ok(()) => Some(listener),
        Err(error) => {
            tracing::warn!(%error, "outbox: cannot LISTEN; polling instead");
            None
        }
    }
}

/// Completes on a notification; never, without a listener.
async fn notified(listener: &mut Listener) {
    match listener {
        Some(l) => {
            if let Err(error) = l.recv().await {
                tracing::warn!(%error, "outbox: LISTEN connection failed; it reconnects on the next wait");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        None => std::future::pending().await,
    }
}
