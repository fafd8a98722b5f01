//! Reprice jobs: background tasks that change the price of every product of a category
//! by a percentage, through the same write path as any other product change.
//!
//! Jobs live in the database (`reprice_job`), so a job queued or running when a server
//! stops is picked up again at the next start, by whichever instance claims it first.
//! A worker claims one job at a time (an atomic `UPDATE … WHERE status = 'queued'`; on
//! PostgreSQL `FOR UPDATE SKIP LOCKED` keeps instances off each other) and reprices in
//! batches. Each batch is one transaction that changes prices with the row's version in
//! the `WHERE` clause (a product changed by someone else meanwhile is re-read, never
//! overwritten with a price computed from a stale one) and advances the job's cursor,
//! so a batch is applied exactly once even across restarts. After each commit the batch's
//! products are invalidated at their new versions, and the list group and the scopes of
//! their categories once.
//!
//! A running job whose worker disappeared (a crash) stops sending heartbeats and is
//! queued again after [`STALE_AFTER`]. A worker that was only slow must then keep off it:
//! each claim sets a new owner token on the job, and every later write of that worker
//! (each batch's cursor advance, which is also its heartbeat, and the job's end or requeue)
//! is conditional on its token. A worker whose write matches no row has lost the job
//! ([`Error::JobLost`]): it rolls back and leaves the job to its new owner.

use std::time::Duration;

use cache_service::Change;
use sea_orm::sea_query::{Expr, LockBehavior, LockType};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, ExprTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::domain::{Category, PriceCents, ValidationError};
use crate::entity::{product, reprice_job};
use crate::error::{Error, Result};
use crate::service::{PRODUCT, ProductService, now};

mod percent;
mod status;

pub use percent::RepricePercent;
pub use status::{JobStatus, RepriceJob};

/// A running job whose heartbeat is older than this is considered abandoned.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// How a worker runs.
///
/// # Examples
///
/// ```
/// # fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use product_service::JobConfig;
///
/// // Small batches with a pause between them: a job that never crowds out requests.
/// let gentle = JobConfig {
///     batch_size: 100,
///     batch_pause: Duration::from_millis(50),
///     ..JobConfig::default()
/// };
/// assert_eq!(gentle.poll_interval, JobConfig::default().poll_interval);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// Products per batch (one transaction each).
    pub batch_size: u64,
    /// How often an idle worker looks for queued jobs.
    pub poll_interval: Duration,
    /// Pause between batches, to bound the load a job puts on the database.
    pub batch_pause: Duration,
}

impl Default for JobConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_millis(500),
            batch_pause: Duration::ZERO,
        }
    }
}

/// What one batch did.
struct BatchOutcome {
    seen: u64,
    changed: u64,
    done: bool,
}

/// A worker's claim on a job: the job as claimed, and the owner token the claim set on
/// it. Every write the worker makes to the job afterwards is conditional on the token.
/// Public for the test hooks only.
#[doc(hidden)]
#[derive(Debug)]
pub struct JobClaim {
    job: reprice_job::Model,
    owner: String,
}

impl JobClaim {
    /// The claimed job's id.
    pub fn job_id(&self) -> &str {
        &self.job.id
    }
}

impl ProductService {
    /// Queues a job that changes the price of every product of `category` (every
    /// product, with `None`) by `percent`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use cache_service::{CacheConfig, CacheService};
    /// # use product_service::*;
    /// # let db = connect("sqlite::memory:").await?;
    /// # migrate(&db).await?;
    /// # let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 1_000)?;
    /// # let service = ProductService::new(db, cache).await?;
    /// # let keyboard = NewProduct {
    /// #     sku: Sku::parse("KB-001")?,
    /// #     name: ProductName::parse("Mechanical keyboard")?,
    /// #     description: Description::default(),
    /// #     price_cents: PriceCents::parse(8_999)?,
    /// #     stock: Stock::parse(12)?,
    /// #     category: Category::parse("keyboards")?,
    /// # };
    /// service.create(keyboard).await?;
    /// let job = service
    ///     .enqueue_reprice(Some(Category::parse("keyboards")?), RepricePercent::parse(-10.0)?)
    ///     .await?;
    /// assert_eq!(job.status, JobStatus::Queued);
    /// assert_eq!(service.find_job(&job.id).await?.map(|j| j.id), Some(job.id));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn enqueue_reprice(
        &self,
        category: Option<Category>,
        percent: RepricePercent,
    ) -> Result<RepriceJob> {
        let at = now();
        let job = reprice_job::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            category: Set(category.map(String::from)),
            percent: Set(percent.get()),
            status: Set(JobStatus::Queued.as_str().to_owned()),
            matched: Set(0),
            updated: Set(0),
            cursor: Set(0),
            error: Set(None),
            heartbeat_at: Set(None),
            created_at: Set(at),
            updated_at: Set(at),
            owner: Set(None),
        };
        let model = reprice_job::Entity::insert(job)
            .exec_with_returning(&self.db)
            .await?;
        Ok(model.into())
    }

    /// The job with this id, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use cache_service::{CacheConfig, CacheService};
    /// # use product_service::*;
    /// # let db = connect("sqlite::memory:").await?;
    /// # migrate(&db).await?;
    /// # let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 1_000)?;
    /// # let service = ProductService::new(db, cache).await?;
    /// assert_eq!(service.find_job("no-such-job").await?, None);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn find_job(&self, id: &str) -> Result<Option<RepriceJob>> {
        Ok(reprice_job::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .map(RepriceJob::from))
    }

    /// Starts a worker that runs queued jobs one at a time. [`JobWorker::shutdown`] stops
    /// it between batches and queues its job again.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use cache_service::{CacheConfig, CacheService};
    /// # use product_service::*;
    /// # let db = connect("sqlite::memory:").await?;
    /// # migrate(&db).await?;
    /// # let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 1_000)?;
    /// # let service = ProductService::new(db, cache).await?;
    /// # let keyboard = NewProduct {
    /// #     sku: Sku::parse("KB-001")?,
    /// #     name: ProductName::parse("Mechanical keyboard")?,
    /// #     description: Description::default(),
    /// #     price_cents: PriceCents::parse(8_999)?,
    /// #     stock: Stock::parse(12)?,
    /// #     category: Category::parse("keyboards")?,
    /// # };
    /// let created = service.create(keyboard).await?;
    /// let job = service.enqueue_reprice(None, RepricePercent::parse(-10.0)?).await?;
    /// let worker = service.spawn_job_worker(JobConfig::default());
    /// while service.find_job(&job.id).await?.map(|j| j.status) != Some(JobStatus::Succeeded) {
    ///     tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    /// }
    /// worker.shutdown().await;
    /// let repriced = service.find_by_id(ProductId::parse(created.id)?).await?;
    /// assert_eq!(repriced.price_cents, 8_099); // 8 999 - 10 %, to the nearest cent
    /// # Ok(())
    /// # }
    /// ```
    pub fn spawn_job_worker(&self, config: JobConfig) -> JobWorker {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(work(self.clone(), config, stopped));
        JobWorker { stop, task }
    }

    /// Queues again the running jobs whose worker stopped sending heartbeats, and takes
    /// them from that worker: it no longer owns them, even if it was only slow.
    async fn requeue_abandoned(&self) -> Result<()> {
        let stale = now() - chrono::Duration::from_std(STALE_AFTER).unwrap_or_default();
        reprice_job::Entity::update_many()
            .col_expr(
                reprice_job::Column::Status,
                Expr::value(JobStatus::Queued.as_str()),
            )
            .col_expr(reprice_job::Column::Owner, Expr::value(None::<String>))
            .filter(reprice_job::Column::Status.eq(JobStatus::Running.as_str()))
            .filter(reprice_job::Column::HeartbeatAt.lt(stale))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Claims the oldest queued job, atomically: of several workers, one wins. The claim
    /// sets a new owner token on the job.
    async fn claim_job(&self) -> Result<Option<JobClaim>> {
        let txn = self.begin_write().await?;
        let mut oldest = reprice_job::Entity::find()
            .filter(reprice_job::Column::Status.eq(JobStatus::Queued.as_str()))
            .order_by_asc(reprice_job::Column::CreatedAt)
            .limit(1);
        if txn.get_database_backend() == DbBackend::Postgres {
            oldest = oldest.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        let Some(job) = oldest.one(&txn).await? else {
            return Ok(None);
        };
        let owner = uuid::Uuid::new_v4().to_string();
        let claimed = reprice_job::Entity::update_many()
            .col_expr(
                reprice_job::Column::Status,
                Expr::value(JobStatus::Running.as_str()),
            )
            .col_expr(reprice_job::Column::Owner, Expr::value(owner.as_str()))
            .col_expr(reprice_job::Column::HeartbeatAt, Expr::value(now()))
            .col_expr(reprice_job::Column::UpdatedAt, Expr::value(now()))
            .filter(reprice_job::Column::Id.eq(job.id.as_str()))
            .filter(reprice_job::Column::Status.eq(JobStatus::Queued.as_str()))
            .exec_with_returning(&txn)
            .await?
            .pop();
        txn.commit().await?;
        Ok(claimed.map(|job| JobClaim { job, owner }))
    }

    /// One batch: reprice the next products after the job's cursor and advance the
    /// cursor, in one transaction; then invalidate. [`Error::JobLost`] (and nothing
    /// changed) if the job is no longer the claim's.
    async fn reprice_batch(&self, claim: &JobClaim, batch_size: u64) -> Result<BatchOutcome> {
        use product::Column as P;
        let job = &claim.job;
        let percent = RepricePercent::parse(job.percent)?;
        let txn = self.begin_write().await?;
        let Some(cursor) = reprice_job::Entity::find_by_id(job.id.clone())
            .filter(reprice_job::Column::Owner.eq(claim.owner.as_str()))
            .one(&txn)
            .await?
            .map(|j| j.cursor)
        else {
            txn.rollback().await?;
            return Err(Error::JobLost);
        };
        let mut select = product::Entity::find()
            .filter(P::Id.gt(cursor))
            .order_by_asc(P::Id)
            .limit(batch_size);
        if let Some(category) = &job.category {
            select = select.filter(P::Category.eq(category.as_str()));
        }
        let rows = select.all(&txn).await?;
        let mut changed = Vec::new();
        for row in &rows {
            if let Some(model) = reprice_one(&txn, row.clone(), percent).await? {
                // A new price leaves the category as it was: only its scope moves.
                changed.push(
                    Change::at_version(PRODUCT, model.id, model.version)
                        .with_scopes([&model.category]),
                );
            }
        }
        let last = rows.last().map_or(cursor, |r| r.id);
        let advanced = reprice_job::Entity::update_many()
            .col_expr(reprice_job::Column::Cursor, Expr::value(last))
            .col_expr(
                reprice_job::Column::Matched,
                Expr::col(reprice_job::Column::Matched).add(rows.len() as i64),
            )
            .col_expr(
                reprice_job::Column::Updated,
                Expr::col(reprice_job::Column::Updated).add(changed.len() as i64),
            )
            .col_expr(reprice_job::Column::HeartbeatAt, Expr::value(now()))
            .col_expr(reprice_job::Column::UpdatedAt, Expr::value(now()))
            .filter(reprice_job::Column::Id.eq(job.id.as_str()))
            .filter(reprice_job::Column::Status.eq(JobStatus::Running.as_str()))
            .filter(reprice_job::Column::Owner.eq(claim.owner.as_str()))
            .exec(&txn)
            .await?;
        if advanced.rows_affected != 1 {
            // The job is no longer ours: it was requeued as abandoned (and maybe claimed by
            // another worker, which may have repriced these very products meanwhile).
            txn.rollback().await?;
            return Err(Error::JobLost);
        }
        txn.commit().await?;
        self.coherence.after_commit(&changed).await;
        Ok(BatchOutcome {
            seen: rows.len() as u64,
            changed: changed.len() as u64,
            done: (rows.len() as u64) < batch_size,
        })
    }

    /// Ends the claimed job with `status` (`Queued`: back to the queue, for the next
    /// start) and gives up its ownership. [`Error::JobLost`] (and nothing changed) if
    /// the job is no longer the claim's.
    async fn finish_job(
        &self,
        claim: &JobClaim,
        status: JobStatus,
        error: Option<String>,
    ) -> Result<()> {
        let finished = reprice_job::Entity::update_many()
            .col_expr(reprice_job::Column::Status, Expr::value(status.as_str()))
            .col_expr(reprice_job::Column::Error, Expr::value(error))
            .col_expr(reprice_job::Column::Owner, Expr::value(None::<String>))
            .col_expr(reprice_job::Column::UpdatedAt, Expr::value(now()))
            .filter(reprice_job::Column::Id.eq(claim.job.id.as_str()))
            .filter(reprice_job::Column::Status.eq(JobStatus::Running.as_str()))
            .filter(reprice_job::Column::Owner.eq(claim.owner.as_str()))
            .exec(&self.db)
            .await?;
        if finished.rows_affected != 1 {
            return Err(Error::JobLost);
        }
        Ok(())
    }

    /// The claimed job's next batch, and its end (success) if that was the last one.
    async fn run_batch(&self, claim: &JobClaim, batch_size: u64) -> Result<BatchOutcome> {
        let outcome = self.reprice_batch(claim, batch_size).await?;
        if outcome.done {
            self.finish_job(claim, JobStatus::Succeeded, None).await?;
        }
        Ok(outcome)
    }

    /// Runs a claimed job until it ends, `stopped` fires (then it is queued again), or
    /// another worker takes it over (then this one leaves it alone).
    async fn run_job(
        &self,
        claim: JobClaim,
        config: &JobConfig,
        stopped: &watch::Receiver<bool>,
    ) -> Result<()> {
        let job = &claim.job;
        tracing::info!(job = %job.id, category = ?job.category, percent = job.percent, "reprice job running");
        match self.run_claimed(&claim, config, stopped).await {
            Err(Error::JobLost) => {
                tracing::warn!(job = %job.id, "reprice job was taken over by another worker");
                Ok(())
            }
            other => other,
        }
    }

    async fn run_claimed(
        &self,
        claim: &JobClaim,
        config: &JobConfig,
        stopped: &watch::Receiver<bool>,
    ) -> Result<()> {
        let id = claim.job.id.as_str();
        loop {
            if *stopped.borrow() {
                self.finish_job(claim, JobStatus::Queued, None).await?;
                tracing::info!(job = %id, "reprice job queued again for the next start");
                return Ok(());
            }
            match self.run_batch(claim, config.batch_size).await {
                Ok(BatchOutcome {
                    done: true,
                    seen,
                    changed,
                }) => {
                    tracing::info!(job = %id, seen, changed, "reprice job succeeded");
                    return Ok(());
                }
                Ok(_) => {}
                Err(Error::JobLost) => return Err(Error::JobLost),
                Err(error) => {
                    tracing::error!(job = %id, %error, "reprice job failed");
                    self.finish_job(claim, JobStatus::Failed, Some(error.to_string()))
                        .await?;
                    return Ok(());
                }
            }
            if !config.batch_pause.is_zero() {
                tokio::time::sleep(config.batch_pause).await;
            }
        }
    }
}

/// Test-only hooks: a worker's steps one at a time, so a test can interleave two workers
/// on one job without timing. Not part of the API; servers run [`JobWorker`]s.
impl ProductService {
    /// Test-only: what an idle worker does on each poll (queue again the abandoned jobs,
    /// then claim the oldest queued one), without running the job.
    #[doc(hidden)]
    pub async fn claim_job_for_test(&self) -> Result<Option<JobClaim>> {
        self.requeue_abandoned().await?;
        self.claim_job().await
    }

    /// Test-only: the claimed job's next batch, as its worker runs it. `Ok(true)` when it
    /// was the last one (the job then succeeded); `Err(Error::JobLost)` when the job is no
    /// longer this claim's.
    #[doc(hidden)]
    pub async fn run_batch_for_test(&self, claim: &JobClaim, batch_size: u64) -> Result<bool> {
        Ok(self.run_batch(claim, batch_size).await?.done)
    }

    /// Test-only: what a worker that is shut down does with its job (queue it again).
    #[doc(hidden)]
    pub async fn release_job_for_test(&self, claim: JobClaim) -> Result<()> {
        self.finish_job(&claim, JobStatus::Queued, None).await
    }
}

/// Sets one product's new price with its version in the `WHERE` clause; if someone
/// changed it since it was read, reads it again and recomputes. Returns the row as updated,
/// or `None` when the price did not change or the product is gone.
async fn reprice_one(
    txn: &impl ConnectionTrait,
    mut row: product::Model,
    percent: RepricePercent,
) -> Result<Option<product::Model>> {
    use product::Column as P;
    loop {
        let price = percent.apply(row.price_cents);
        if price == row.price_cents {
            return Ok(None);
        }
        let price = PriceCents::parse(price).map_err(|e| {
            Error::Invalid(ValidationError::new(
                "percent",
                format!(
                    "would take product {} to {price} cents: {}",
                    row.id, e.reason
                ),
            ))
        })?;
        let updated = product::Entity::update_many()
            .col_expr(P::PriceCents, Expr::value(price.get()))
            .col_expr(P::Version, Expr::col(P::Version).add(1))
            .col_expr(P::UpdatedAt, Expr::value(now()))
            .filter(P::Id.eq(row.id))
            .filter(P::Version.eq(row.version))
            .exec_with_returning(txn)
            .await?
            .pop();
        if let Some(model) = updated {
            return Ok(Some(model));
        }
        match product::Entity::find_by_id(row.id).one(txn).await? {
            Some(fresh) => row = fresh,
            None => return Ok(None),
        }
    }
}

/// A running job worker.
#[derive(Debug)]
pub struct JobWorker {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl JobWorker {
    /// Stops after the current batch (its job goes back to the queue) and waits.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            tracing::error!(%error, "job worker task failed");
        }
    }
}

async fn work(service: ProductService, config: JobConfig, mut stopped: watch::Receiver<bool>) {
    loop {
        if *stopped.borrow() {
            return;
        }
        if let Err(error) = service.requeue_abandoned().await {
            tracing::warn!(%error, "jobs: cannot requeue abandoned jobs");
        }
        match service.claim_job().await {
            Ok(Some(claim)) => {
                if let Err(error) = service.run_job(claim, &config, &stopped).await {
                    tracing::error!(%error, "jobs: cannot record a job's state");
                }
                continue;
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "jobs: cannot claim a job"),
        }
        tokio::select! {
            _ = stopped.changed() => return,
            () = tokio::time::sleep(config.poll_interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_to_the_nearest_cent() {
        let p = |v| RepricePercent::parse(v).expect("valid");
        assert_eq!(p(10.0).apply(1000), 1100);
        assert_eq!(p(-50.0).apply(999), 500, "499.5 rounds up");
        assert_eq!(p(12.5).apply(1), 1, "1.125 rounds down");
        assert_eq!(p(-90.0).apply(10), 1);
        assert_eq!(p(1000.0).apply(7), 77);
    }

    #[test]
    fn percentages_are_bounded() {
        for bad in [-90.5, 1000.1, f64::NAN, f64::INFINITY] {
            assert_eq!(
                RepricePercent::parse(bad).map_err(|e| e.field),
                Err("percent"),
                "{bad}"
            );
        }
    }
}
