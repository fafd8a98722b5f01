//! The invalidation auditor: samples rows of every [`OutboxTable`], compares each row's
//! version with the version of its cached entry, and reports entries that are older
//! than their row although nothing is owed for it (the check memcache's operators ran
//! against their own invalidation pipeline: a stale entry nobody will remove is a bug
//! somewhere, and this is how it is seen before a user sees it).
//!
//! # What counts as a mismatch
//!
//! For a sampled row at version `v` whose entry (current epoch) holds version `c < v`
//! (a negative entry counts as version 0), all of these in this order:
//!
//! 1. no outbox row of that entity is owed: the outbox row is written in the write's
//!    own transaction and deleted only after its invalidation was applied, so "nothing
//!    owed" after "row at `v`" means the invalidation to `v` has been applied;
//! 2. the row is still at `v` (it did not change while it was checked);
//! 3. the entry, read again, is still below `v`, under the same key (the epoch did not
//!    move), and reads of that key were not held (an outage or an unchecked connection
//!    keeps entries from being served, whatever they hold).
//!
//! An entry found stale at step 3 was stored, or kept, after the invalidation that
//! should have removed it: no interleaving of correct readers and writers leaves one.
//!
//! # Invariant
//!
//! **It never modifies anything.** The database sees `SELECT`s only; the cache sees
//! reads of entries only (no lease, no fill, no invalidation). A mismatch is counted
//! and logged; repairing it is left to an operator (or the entry's TTL), so the auditor
//! can never hide the bug it found.

use std::time::Duration;

use sea_orm::{ConnectionTrait, Statement};
use tokio::sync::watch;

use super::background::Background;
use super::{Change, Coherence, OutboxTable};
use crate::codec;
use crate::error::Result;

/// How the auditor runs.
///
/// # Examples
///
/// ```
/// # fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use cache_service::AuditConfig;
///
/// let hourly = AuditConfig { every: Duration::from_secs(3600), ..AuditConfig::default() };
/// assert_eq!(hourly.sample, 100);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditConfig {
    /// Time between passes; the first one runs after one interval too (at start-up the
    /// cache is cold, and the process has better things to do).
    pub every: Duration,
    /// Rows sampled per table and pass.
    pub sample: u32,
}

impl Default for AuditConfig {
    /// A pass a minute, 100 rows per table: about 100 indexed `SELECT`s and 100 `GET`s
    /// a minute per table.
    fn default() -> Self {
        Self {
            every: Duration::from_secs(60),
            sample: 100,
        }
    }
}

/// What one audit pass found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Sampled rows whose entry was in the cache and was compared.
    pub checks: u64,
    /// Entries older than their row with nothing owed (see the module's rules).
    pub mismatches: u64,
    /// The keys of those entries.
    pub stale_keys: Vec<String>,
}

/// What a running auditor has found so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditTotals {
    /// Passes completed (a pass that failed on a database error counts too).
    pub passes: u64,
    /// Entries compared.
    pub checks: u64,
    /// Stale entries found.
    pub mismatches: u64,
}

/// The running auditor. [`shutdown`](Self::shutdown) stops it and returns its totals;
/// dropping the handle stops it without waiting (the task sees its stop channel close).
#[derive(Debug)]
pub struct AuditorHandle(Background<AuditTotals>);

impl AuditorHandle {
    /// The totals so far.
    pub fn totals(&self) -> AuditTotals {
        *self.0.progress().borrow()
    }

    /// Waits until `passes` passes have completed.
    pub async fn passes(&self, passes: u64) -> AuditTotals {
        let mut totals = self.0.progress().clone();
        let reached = totals.wait_for(|t| t.passes >= passes).await;
        reached.map_or_else(|_| self.totals(), |t| *t)
    }

    /// Stops the auditor (a pass under way is abandoned) and returns its totals.
    pub async fn shutdown(self) -> AuditTotals {
        let totals = self.0.stop("cache auditor").await;
        *totals.borrow()
    }
}

impl Coherence {
    /// Starts the invalidation auditor in the background (see the [`audit`](self)
    /// module): every `config.every`, [`audit`](Self::audit) with `config.sample` rows
    /// per table. It counts `cache_audit_checks_total{namespace}` and
    /// `cache_audit_mismatches_total{namespace}`, and logs a warning naming each stale
    /// key. It never modifies the database or the cache.
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
    /// use std::time::Duration;
    /// use cache_service::AuditConfig;
    ///
    /// let auditor = coherence.spawn_auditor(AuditConfig {
    ///     every: Duration::from_millis(10),
    ///     sample: 100,
    /// });
    /// let totals = auditor.passes(2).await;
    /// assert_eq!(totals.mismatches, 0);
    /// auditor.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn spawn_auditor(&self, config: AuditConfig) -> AuditorHandle {
        let coherence = self.clone();
        AuditorHandle(Background::spawn(
            AuditTotals::default(),
            |stopped, report| run(coherence, config, stopped, report),
        ))
    }

    /// One audit pass: `sample` rows of each table, each compared with its cached entry.
    /// Fails on a database error; a cache error skips the row it happened on.
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
    /// db.execute_unprepared("INSERT INTO notes (id, body) VALUES (1, 'a')").await?;
    /// coherence.drain().await?;
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Note {
    ///     body: String,
    ///     version: u64,
    /// }
    /// impl Cacheable for Note {
    ///     fn version(&self) -> u64 {
    ///         self.version
    ///     }
    /// }
    /// // A read caches the row at version 1, as it is in the database.
    /// let key = coherence.cache().key(NOTE, 1);
    /// let note = Note { body: "a".into(), version: 1 };
    /// coherence
    ///     .cache()
    ///     .get_or_load(&key, || async { Ok::<_, CacheError>(Some(note)) })
    ///     .await?;
    /// let report = coherence.audit(10).await?;
    /// assert_eq!((report.checks, report.mismatches), (1, 0));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn audit(&self, sample: u32) -> Result<AuditReport> {
        let mut report = AuditReport::default();
        for table in &self.inner.tables {
            let namespace = table.namespace.name();
            let mut checks = 0;
            for (id, version) in sample_rows(self, table, sample).await? {
                match self.check(table, id, version).await? {
                    Check::NotCached => {}
                    Check::Fresh => checks += 1,
                    Check::Stale(key) => {
                        checks += 1;
                        report.mismatches += 1;
                        metrics::counter!("cache_audit_mismatches_total", "namespace" => namespace)
                            .increment(1);
                        tracing::warn!(
                            key = %key,
                            namespace,
                            id,
                            database_version = version,
                            "cache audit: the cached entry is older than its row and no \
                             invalidation is owed for it"
                        );
                        report.stale_keys.push(key);
                    }
                }
            }
            metrics::counter!("cache_audit_checks_total", "namespace" => namespace)
                .increment(checks);
            report.checks += checks;
        }
        Ok(report)
    }

    /// Compares row `id`, read at `version`, with its cached entry (the module's rules).
    async fn check(&self, table: &OutboxTable, id: i64, version: i64) -> Result<Check> {
        let cache = &self.inner.cache;
        let key = cache.key(table.namespace, id);
        let Some(cached) = self.cached_version(&key).await else {
            return Ok(Check::NotCached);
        };
        let version = version.unsigned_abs();
        if cached >= version {
            return Ok(Check::Fresh);
        }
        // 1. Owed: the write's invalidation is on its way.
        if self
            .owes(&[Change::at_version(table.namespace, id, 0)])
            .await?
        {
            return Ok(Check::Fresh);
        }
        // 2. The row moved on while it was checked.
        if row_version(self, table, id).await? != Some(version) {
            return Ok(Check::Fresh);
        }
        // 3. The entry, read again under the same key.
        let again = cache.key(table.namespace, id);
        if again != key {
            return Ok(Check::Fresh);
        }
        match self.cached_version(&key).await {
            Some(cached) if cached < version => Ok(Check::Stale(key.as_str().to_owned())),
            _ => Ok(Check::Fresh),
        }
    }

    /// The version of the entry under `key` (0 for a negative entry); `None` when there
    /// is none, it is not in this release's format, reads of it are held, or the cache
    /// did not answer.
    async fn cached_version(&self, key: &crate::CacheKey) -> Option<u64> {
        let cache = &self.inner.cache;
        if cache.is_degraded_for(key) {
            return None;
        }
        match cache.backend().get(key).await {
            Ok(bytes) => codec::version_of(&bytes?),
            Err(error) => {
                tracing::debug!(%error, key = %key, "cache audit: entry not read");
                None
            }
        }
    }
}

/// What one sampled row's check came to.
enum Check {
    /// Nothing cached (or not readable now): nothing to compare.
    NotCached,
    /// The entry is as new as the row, or its staleness is explained.
    Fresh,
    /// A stale entry nobody will remove: its key.
    Stale(String),
}

async fn run(
    coherence: Coherence,
    config: AuditConfig,
    mut stopped: watch::Receiver<bool>,
    report: watch::Sender<AuditTotals>,
) {
    let every = config.every.max(Duration::from_millis(1));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            _ = ticks.tick() => {}
        }
        let found = tokio::select! {
            _ = stopped.changed() => return,
            found = coherence.audit(config.sample) => found,
        };
        let found = found.unwrap_or_else(|error| {
            tracing::warn!(%error, "cache audit pass failed");
            AuditReport::default()
        });
        report.send_modify(|totals| {
            totals.passes += 1;
            totals.checks += found.checks;
            totals.mismatches += found.mismatches;
        });
    }
}

/// Up to `sample` distinct rows of `table` as `(id, version)`: for each draw, the first
/// row at or after a random id between the lowest and the highest (one indexed lookup,
/// whatever the table's size; rows after a gap in the ids are drawn more often, which
/// is fine for an audit).
async fn sample_rows(
    coherence: &Coherence,
    table: &OutboxTable,
    sample: u32,
) -> Result<Vec<(i64, i64)>> {
    table.check()?;
    let (t, i, v) = (table.table, table.id_column, table.version_column);
    let bounds = query(
        coherence,
        &format!("SELECT CAST(MIN({i}) AS BIGINT) AS a, CAST(MAX({i}) AS BIGINT) AS b FROM {t}"),
    )
    .await?;
    let Some((Some(low), Some(high))) = bounds.first().copied() else {
        return Ok(Vec::new());
    };
    let mut rows: Vec<(i64, i64)> = Vec::new();
    for _ in 0..sample {
        let from = rand::random_range(low..=high);
        let found = query(
            coherence,
            &format!(
                "SELECT CAST({i} AS BIGINT) AS a, CAST({v} AS BIGINT) AS b FROM {t} \
                 WHERE {i} >= {from} ORDER BY {i} LIMIT 1"
            ),
        )
        .await?;
        if let Some((Some(id), Some(version))) = found.first().copied()
            && !rows.iter().any(|(seen, _)| *seen == id)
        {
            rows.push((id, version));
        }
    }
    Ok(rows)
}

/// The version row `id` of `table` is at now, if it exists.
async fn row_version(coherence: &Coherence, table: &OutboxTable, id: i64) -> Result<Option<u64>> {
    let (t, i, v) = (table.table, table.id_column, table.version_column);
    let found = query(
        coherence,
        &format!(
            "SELECT CAST({i} AS BIGINT) AS a, CAST({v} AS BIGINT) AS b FROM {t} WHERE {i} = {id}"
        ),
    )
    .await?;
    Ok(found
        .first()
        .and_then(|(_, version)| *version)
        .map(i64::unsigned_abs))
}

/// Runs `sql`, a `SELECT` of two integer columns `a` and `b`. The table and column names
/// in it come from an [`OutboxTable`] that [`sample_rows`] checked to be plain
/// identifiers; the numbers are this module's own.
async fn query(coherence: &Coherence, sql: &str) -> Result<Vec<(Option<i64>, Option<i64>)>> {
    let db = &coherence.inner.db;
    let rows = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("", "a")?, row.try_get("", "b")?)))
        .collect()
}
