//! The relay task: checks the Redis identity, applies what the outbox owes, reopens the
//! cache to reads once an outage is resolved, and reports the backlog.

use std::time::{Duration, Instant};

use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter,
};
use tokio::sync::watch;

use super::Coherence;
use super::background::Background;
use super::schema::{CHANNEL, instance};
use crate::error::{CacheError, Result};

/// A registration older than this belongs to a process that is gone.
const STALE_AFTER: Duration = Duration::from_secs(3);
/// A registration this old is deleted by the next relay that registers.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// How often a running relay renews its registration.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// The running relay. [`shutdown`](Self::shutdown) stops it after one last drain and
/// waits; dropping the handle stops it the same way without waiting.
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
/// let relay = coherence.spawn_relay();
/// relay.first_pass().await; // the cache is open to reads from here on
/// relay.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RelayHandle(Background<u64>);

impl RelayHandle {
    /// Waits until the relay has made its first pass (checked which Redis this is and
    /// applied what was owed), so a server can start serving with its cache open.
    pub async fn first_pass(&self) {
        let mut passes = self.0.progress().clone();
        let _ = passes.wait_for(|n| *n > 0).await;
    }

    /// Applies what is still owed, then stops.
    pub async fn shutdown(self) {
        self.0.stop("outbox relay").await;
    }
}

pub(super) fn spawn(coherence: Coherence) -> RelayHandle {
    spawn_registered(coherence, None)
}

pub(super) fn spawn_registered(coherence: Coherence, instance: Option<Instance>) -> RelayHandle {
    let cache = coherence.cache();
    cache.hold_reads_after_outage(true);
    // Until the first pass has checked which Redis this is, its entries wait.
    cache.hold_reads_until_resync();
    RelayHandle(Background::spawn(0, |stopped, passed| {
        run(coherence, instance, stopped, passed)
    }))
}

async fn run(
    coherence: Coherence,
    mut instance: Option<Instance>,
    mut stopped: watch::Receiver<bool>,
    passed: watch::Sender<u64>,
) {
    let poll_interval = coherence.inner.config.poll_interval;
    if instance.is_none() {
        match Instance::insert(&coherence.inner.db, coherence.is_in_process()).await {
            Ok(registered) => instance = Some(registered),
            Err(error) => tracing::debug!(%error, "relay not registered"),
        }
    }
    if let Some(instance) = &instance {
        *super::lock(&coherence.inner.relay_id) = Some(instance.id().to_owned());
    }
    let mut listener = listen(&coherence.inner.db).await;
    loop {
        tick(&coherence).await;
        if let Some(instance) = &mut instance {
            instance.heartbeat().await;
        }
        passed.send_modify(|n| *n += 1);
        tokio::select! {
            _ = stopped.changed() => break,
            () = tokio::time::sleep(poll_interval) => {}
            () = notified(&mut listener) => {}
            () = coherence.inner.wake.notified() => {}
            () = coherence.cache().backend().reconnected() => {}
        }
    }
    match coherence.drain().await {
        Ok(applied) => tracing::info!(applied, "outbox: drained before shutdown"),
        Err(error) => tracing::warn!(%error, "outbox: invalidations left for the next start"),
    }
    if let Some(instance) = instance {
        *super::lock(&coherence.inner.relay_id) = None;
        instance.deregister().await;
    }
}

impl Coherence {
    /// Whether a relay of another process is registered and alive (its heartbeat is
    /// fresh). An error counts as "yes": the caller then waits as if one were.
    pub(super) async fn other_relays_alive(&self) -> bool {
        let own = super::lock(&self.inner.relay_id).clone();
        let fresh_since = now_ms() - STALE_AFTER.as_millis() as i64;
        let mut select =
            instance::Entity::find().filter(instance::Column::HeartbeatMs.gt(fresh_since));
        if let Some(own) = own {
            select = select.filter(instance::Column::Id.ne(own));
        }
        select
            .one(&self.inner.db)
            .await
            .map_or(true, |found| found.is_some())
    }
}

/// One pass: check the Redis identity, apply what is owed, reopen reads if everything
/// owed when the pass began is applied, report the backlog. The outbox's high-water mark
/// is read only while reads are held: in the steady state a pass costs the identity
/// check, one select (and what it applies) and the backlog count.
async fn tick(coherence: &Coherence) {
    let cache = coherence.cache();
    let resync = if cache.needs_resync() {
        let marks = cache.outage_mark();
        match coherence.high_water().await {
            Ok(high) => Some((marks, high)),
            Err(error) => {
                tracing::warn!(%error, "outbox: cannot read the outbox; will retry");
                return;
            }
        }
    } else {
        None
    };
    if let Err(error) = coherence.join().await {
        tracing::warn!(%error, "cache: cannot check which Redis this is; reads stay off it");
        return;
    }
    match coherence.drain_joined().await {
        Ok(applied) if applied > 0 => tracing::debug!(applied, "outbox: invalidations applied"),
        Ok(_) => {}
        // What the healthy shards were owed is applied: they may resume below.
        Err(error) => tracing::warn!(%error, "outbox: invalidations still owed; will retry"),
    }
    if let Some((marks, high)) = resync {
        // Rows another relay still holds count as owed: they may not be applied yet.
        let Ok(owed) = coherence.owed_shards_through(high).await else {
            return;
        };
        let answering = cache.backend().ping_shards().await;
        if cache.is_verified() {
            cache.resume(&marks, |shard| {
                owed.as_ref().is_none_or(|owed| owed.contains(&shard))
                    || !answering.get(shard).copied().unwrap_or(false)
            });
            if !cache.needs_resync() {
                tracing::info!("cache back: owed invalidations applied, reads use it again");
            }
        }
    }
    match coherence.backlog().await {
        Ok(n) => metrics::gauge!("cache_invalidation_backlog").set(n as f64),
        Err(error) => tracing::warn!(%error, "outbox: cannot count the backlog"),
    }
}

/// This process's registration as a relay (see [`Coherence::start_relay`]).
pub(super) struct Instance {
    db: DatabaseConnection,
    id: String,
    last_beat: Instant,
}

impl Instance {
    pub(super) async fn register(db: &DatabaseConnection, in_process: bool) -> Result<Self> {
        let deadline = Instant::now() + STALE_AFTER + Duration::from_millis(500);
        loop {
            let fresh_since = now_ms() - STALE_AFTER.as_millis() as i64;
            let others = instance::Entity::find()
                .filter(instance::Column::HeartbeatMs.gt(fresh_since))
                .all(db)
                .await?;
            let conflict = others.iter().find(|other| in_process || other.in_process);
            let Some(conflict) = conflict else {
                break;
            };
            if Instant::now() >= deadline {
                return Err(CacheError::Incoherent(if in_process {
                    format!(
                        "another process ({}) serves this database: an in-process cache cannot see \
                         its writes; give every process the same Redis",
                        conflict.id
                    )
                } else {
                    format!(
                        "another process ({}) serves this database with an in-process cache, which \
                         cannot see this process's writes; give every process the same Redis",
                        conflict.id
                    )
                }));
            }
            // Maybe a crashed process's registration: wait for it to go stale.
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Self::insert(db, in_process).await
    }

    /// Registers without looking for conflicts (a relay started by
    /// [`Coherence::spawn_relay`]): so that writers know a relay runs here.
    pub(super) async fn insert(db: &DatabaseConnection, in_process: bool) -> Result<Self> {
        // Registrations of processes that crashed an hour ago or more: nobody's.
        instance::Entity::delete_many()
            .filter(instance::Column::HeartbeatMs.lt(now_ms() - FORGET_AFTER.as_millis() as i64))
            .exec(db)
            .await?;
        let id = uuid_v4();
        instance::Entity::insert(instance::ActiveModel {
            id: Set(id.clone()),
            in_process: Set(in_process),
            heartbeat_ms: Set(now_ms()),
        })
        .exec(db)
        .await?;
        Ok(Self {
            db: db.clone(),
            id,
            last_beat: Instant::now(),
        })
    }

    pub(super) fn id(&self) -> &str {
        &self.id
    }

    async fn heartbeat(&mut self) {
        if self.last_beat.elapsed() < HEARTBEAT_EVERY {
            return;
        }
        let result = instance::Entity::update_many()
            .col_expr(
                instance::Column::HeartbeatMs,
                sea_orm::sea_query::Expr::value(now_ms()),
            )
            .filter(instance::Column::Id.eq(self.id.as_str()))
            .exec(&self.db)
            .await;
        match result {
            Ok(_) => self.last_beat = Instant::now(),
            Err(error) => tracing::warn!(%error, "cannot renew this process's registration"),
        }
    }

    async fn deregister(self) {
        if let Err(error) = instance::Entity::delete_by_id(self.id.clone())
            .exec(&self.db)
            .await
        {
            tracing::warn!(%error, "cannot remove this process's registration");
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A random id for a registration.
fn uuid_v4() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
    match listener.listen(CHANNEL).await {
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
