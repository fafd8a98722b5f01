//! Reprice jobs: stored in the database, run in batches through the product write path,
//! once each, across restarts and several workers.

use std::time::{Duration, Instant};

use integration_tests::fixtures::{Fixture, create_products, first_page, new_product};
use product_service::{Category, JobConfig, JobStatus, ProductService, RepriceJob, RepricePercent};

integration_tests::on_database!(on_sqlite = sqlite, "jobs_":
    a_job_reprices_its_category_and_the_cache_shows_it_at_once,
    a_job_survives_a_restart_in_the_middle_and_reprices_each_product_once,
    two_workers_run_each_job_once,
    a_job_that_would_break_a_price_rule_fails_and_keeps_its_committed_batches,
);
integration_tests::on_database!(on_postgres = postgres, "jobs_":
    overlapping_batches_of_a_slow_worker_and_its_successor_apply_once_on_postgres,
);
integration_tests::on_both_databases!("jobs_": a_worker_that_lost_its_job_changes_nothing_more);

async fn wait_for(
    service: &ProductService,
    job: &str,
    limit: Duration,
    done: impl Fn(&RepriceJob) -> bool,
) -> RepriceJob {
    let deadline = Instant::now() + limit;
    loop {
        let current = service
            .find_job(job)
            .await
            .expect("read job")
            .expect("job exists");
        if done(&current) || Instant::now() >= deadline {
            return current;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The job as stored now.
async fn stored_job(f: &Fixture, job: &str) -> RepriceJob {
    f.service
        .find_job(job)
        .await
        .expect("read job")
        .expect("job exists")
}

/// Every product (up to 100), through the cache.
async fn every_product(f: &Fixture) -> product_service::ProductPage {
    f.service
        .find_in_page(&product_service::PageQuery::parse(1, 100, None).expect("valid"))
        .await
        .expect("list")
}

/// Queues a reprice job of `category` (all: `None`) by `percent`.
async fn enqueue(f: &Fixture, category: Option<Category>, percent: f64) -> RepriceJob {
    f.service
        .enqueue_reprice(
            category,
            RepricePercent::parse(percent).expect("valid percent"),
        )
        .await
        .expect("enqueue")
}

fn category(c: &str) -> Option<Category> {
    Some(Category::parse(c).expect("valid category"))
}

fn quick() -> JobConfig {
    JobConfig {
        batch_size: 10,
        poll_interval: Duration::from_millis(20),
        batch_pause: Duration::ZERO,
    }
}

async fn a_job_reprices_its_category_and_the_cache_shows_it_at_once(f: Fixture) {
    let ids = create_products(&f.service, "J", 25, 1000).await;
    let mut other = new_product("OTHER-1", 1000);
    other.category = Category::parse("other").expect("valid");
    let other = f.service.create(other).await.expect("create");
    f.read(ids[0]).await;
    f.service
        .find_in_page(&first_page())
        .await
        .expect("warm list");

    let worker = f.service.spawn_job_worker(quick());
    let job = enqueue(&f, category("cat"), 10.0).await;
    assert_eq!(job.status, JobStatus::Queued);
    let job = wait_for(&f.service, &job.id, Duration::from_secs(10), |j| {
        j.status == JobStatus::Succeeded
    })
    .await;
    worker.shutdown().await;

    assert_eq!(
        (job.status, job.matched, job.updated, job.error),
        (JobStatus::Succeeded, 25, 25, None)
    );
    let item = f.read(ids[0]).await;
    assert_eq!(
        (item.price_cents, item.version),
        (1100, 2),
        "the cached item shows the new price"
    );
    let page = f
        .service
        .find_in_page(&first_page())
        .await
        .expect("read list");
    assert!(
        page.items
            .iter()
            .filter(|p| p.category == "cat")
            .all(|p| p.price_cents == 1100),
        "the cached list page shows the new prices"
    );
    let untouched = f.read(other.id).await;
    assert_eq!(
        untouched.price_cents, 1000,
        "other categories are left alone"
    );
}

async fn a_job_survives_a_restart_in_the_middle_and_reprices_each_product_once(f: Fixture) {
    create_products(&f.service, "R", 60, 1000).await;
    let slow = JobConfig {
        batch_pause: Duration::from_millis(100),
        ..quick()
    };
    let worker = f.service.spawn_job_worker(slow.clone());
    let job = enqueue(&f, category("cat"), 10.0).await;
    let midway = wait_for(&f.service, &job.id, Duration::from_secs(10), |j| {
        j.updated >= 10
    })
    .await;
    assert_eq!(midway.status, JobStatus::Running);

    worker.shutdown().await; // the server stops
    let stopped = stored_job(&f, &job.id).await;
    assert_eq!(
        stopped.status,
        JobStatus::Queued,
        "a stopped job waits for the next start"
    );
    assert!(
        stopped.updated > 0 && stopped.updated < 60,
        "it stopped midway: {stopped:?}"
    );

    let worker = f.service.spawn_job_worker(slow); // the next start
    let done = wait_for(&f.service, &job.id, Duration::from_secs(20), |j| {
        j.status == JobStatus::Succeeded
    })
    .await;
    worker.shutdown().await;

    assert_eq!(
        (done.status, done.matched, done.updated),
        (JobStatus::Succeeded, 60, 60)
    );
    let page = every_product(&f).await;
    assert!(
        page.items
            .iter()
            .all(|p| p.price_cents == 1100 && p.version == 2),
        "every product repriced exactly once"
    );
}

async fn two_workers_run_each_job_once(f: Fixture) {
    create_products(&f.service, "W", 30, 1000).await;
    let a = f.service.spawn_job_worker(quick());
    let b = f.service.spawn_job_worker(quick());
    let mut jobs = Vec::new();
    for _ in 0..3 {
        jobs.push(enqueue(&f, None, 10.0).await);
    }
    for job in &jobs {
        let done = wait_for(&f.service, &job.id, Duration::from_secs(20), |j| {
            j.status == JobStatus::Succeeded
        })
        .await;
        assert_eq!(done.status, JobStatus::Succeeded);
    }
    a.shutdown().await;
    b.shutdown().await;
    // 1000 → 1100 → 1210 → 1331: three jobs, each applied once.
    let page = every_product(&f).await;
    assert!(
        page.items
            .iter()
            .all(|p| p.price_cents == 1331 && p.version == 4),
        "{:?}",
        page.items[0]
    );
}

async fn a_job_that_would_break_a_price_rule_fails_and_keeps_its_committed_batches(f: Fixture) {
    create_products(&f.service, "F", 15, 1000).await;
    let huge = f.create("F-HUGE", 500_000_000_000).await;

    let worker = f.service.spawn_job_worker(quick());
    let job = enqueue(&f, None, 1000.0).await;
    let job = wait_for(&f.service, &job.id, Duration::from_secs(10), |j| {
        j.status == JobStatus::Failed
    })
    .await;
    worker.shutdown().await;

    assert_eq!(job.status, JobStatus::Failed);
    let error = job.error.expect("an error is recorded");
    assert!(error.contains(&format!("product {}", huge.id)), "{error}");
    assert_eq!(job.updated, 10, "the first batch of 10 committed");
    let first = f.read(1).await;
    assert_eq!(first.price_cents, 11_000, "committed batches stay applied");
    let unchanged = f.read(huge.id).await;
    assert_eq!(unchanged.price_cents, 500_000_000_000);
}

// ---------------------------------------------------------------------------------------
// A slow worker whose job was taken over (its heartbeat expired) must not touch the job
// again: driven step by step through the test hooks, no timing.
// ---------------------------------------------------------------------------------------

/// A second connection to the fixture's database, for raw SQL.
async fn raw(f: &Fixture) -> sea_orm::DatabaseConnection {
    product_service::connect(&f.database_url)
        .await
        .expect("second connection")
}

/// Makes a running job look abandoned: its heartbeat is far older than `STALE_AFTER`.
async fn age_heartbeat(db: &sea_orm::DatabaseConnection, job: &str) {
    use sea_orm::ConnectionTrait;
    let aged = db
        .execute_unprepared(&format!(
            "UPDATE reprice_job SET heartbeat_at = '2000-01-01T00:00:00+00:00' \
             WHERE id = '{job}' AND status = 'running'"
        ))
        .await
        .expect("age the heartbeat");
    assert_eq!(aged.rows_affected(), 1, "the job is running");
}

/// `(id, price_cents, version)` of every product, from the database itself.
async fn prices(db: &sea_orm::DatabaseConnection) -> Vec<(i64, i64, i64)> {
    integration_tests::select_rows(
        db,
        "SELECT id, price_cents, version FROM product ORDER BY id",
    )
    .await
}

/// Claims the next job as a worker would; `who` says which worker, if none is claimable.
async fn claim(f: &Fixture, who: &str) -> product_service::jobs::JobClaim {
    f.service
        .claim_job_for_test()
        .await
        .expect("claim")
        .unwrap_or_else(|| panic!("{who}: no job to claim"))
}

/// Claims job `job` as a worker would (`who` says which) and commits one batch of 10,
/// not its last.
async fn claim_and_commit_a_batch(
    f: &Fixture,
    who: &str,
    job: &str,
) -> product_service::jobs::JobClaim {
    let claim = claim(f, who).await;
    assert_eq!(claim.job_id(), job, "{who}");
    let last = f
        .service
        .run_batch_for_test(&claim, 10)
        .await
        .unwrap_or_else(|e| panic!("{who}: its batch: {e}"));
    assert!(!last, "{who}: its batch was not the last");
    claim
}

/// Runs the batches of `claim`'s job, `batch` products each, until the job is done.
async fn run_to_the_end(f: &Fixture, claim: &product_service::jobs::JobClaim, batch: u64) {
    let mut batches = 0;
    while !f
        .service
        .run_batch_for_test(claim, batch)
        .await
        .expect("B's batch")
    {
        batches += 1;
        assert!(batches < 10, "B never finishes");
    }
}

fn wrong_prices(rows: &[(i64, i64, i64)]) -> Vec<(i64, i64, i64)> {
    rows.iter()
        .copied()
        .filter(|&(_, price, version)| (price, version) != (1100, 2))
        .collect()
}

async fn a_worker_that_lost_its_job_changes_nothing_more(f: Fixture) {
    create_products(&f.service, "L", 30, 1000).await;
    let db = raw(&f).await;
    let job = enqueue(&f, category("cat"), 10.0).await;

    // Worker A claims the job and commits one batch, then stalls (a long GC pause, a
    // slow disk): its heartbeat expires and worker B takes the job over.
    let a = claim_and_commit_a_batch(&f, "A claims the job", &job.id).await;
    age_heartbeat(&db, &job.id).await;
    let b = claim_and_commit_a_batch(&f, "B takes the abandoned job over", &job.id).await;

    // A wakes up: its next batch, and its requeue at shutdown, must find the job gone.
    let before = prices(&db).await;
    let stale = f.service.run_batch_for_test(&a, 10).await;
    assert!(
        matches!(stale, Err(product_service::Error::JobLost)),
        "a worker whose job was taken over committed a batch: {stale:?}"
    );
    assert_eq!(
        prices(&db).await,
        before,
        "A's stale batch changed no price"
    );
    let released = f.service.release_job_for_test(a).await;
    assert!(
        matches!(released, Err(product_service::Error::JobLost)),
        "a worker whose job was taken over queued it again: {released:?}"
    );
    let current = stored_job(&f, &job.id).await;
    assert_eq!(current.status, JobStatus::Running, "B still runs the job");

    // B finishes the job: every product repriced exactly once.
    run_to_the_end(&f, &b, 10).await;
    let done = stored_job(&f, &job.id).await;
    assert_eq!(
        (done.status, done.matched, done.updated, done.error),
        (JobStatus::Succeeded, 30, 30, None)
    );
    let rows = prices(&db).await;
    assert_eq!(rows.len(), 30);
    assert_eq!(
        wrong_prices(&rows),
        [],
        "each product repriced exactly once"
    );
}

/// Waits until `n` sessions of this database wait for a lock.
async fn wait_for_lock_waiters(db: &sea_orm::DatabaseConnection, n: i64) {
    use sea_orm::{ConnectionTrait, Statement};
    integration_tests::wait_until(Duration::from_secs(10), async || {
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT count(*) AS waiting FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            ))
            .await
            .expect("pg_stat_activity")
            .expect("one row");
        let waiting: i64 = row.try_get("", "waiting").expect("count");
        if waiting >= n {
            Ok(())
        } else {
            Err(format!("{waiting} of {n} sessions wait for a lock"))
        }
    })
    .await;
}

/// The double application itself. On PostgreSQL two batch transactions can overlap: A's
/// batch read the cursor and the products before B claimed the job, B's batch reads the
/// same cursor; the one that gets the rows second re-reads them (version check) and
/// reprices them again. Both used to commit (prices ×1.1²); A's batch must roll back,
/// whichever of the two gets the rows first. (On SQLite batches cannot overlap: each is
/// an immediate transaction, which the test above covers.)
async fn overlapping_batches_of_a_slow_worker_and_its_successor_apply_once_on_postgres(f: Fixture) {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    create_products(&f.service, "O", 10, 1000).await;
    let db = raw(&f).await;
    let job = enqueue(&f, category("cat"), 10.0).await;

    // Hold the first product's row, so each batch stops inside its transaction, after it
    // read the cursor and the products, at its first price update.
    let holder = db.begin().await.expect("begin");
    holder
        .execute_unprepared(
            "SELECT id FROM product WHERE id = (SELECT min(id) FROM product) FOR UPDATE",
        )
        .await
        .expect("lock the first product");

    let a = claim(&f, "A claims the job").await;
    let service = f.service.clone();
    let a_batch = tokio::spawn(async move { service.run_batch_for_test(&a, 5).await });
    wait_for_lock_waiters(&db, 1).await; // A is inside its batch

    age_heartbeat(&db, &job.id).await;
    let b = claim(&f, "B takes the abandoned job over").await;
    let service = f.service.clone();
    let b_batch = tokio::spawn(async move {
        let result = service.run_batch_for_test(&b, 5).await;
        (b, result)
    });
    wait_for_lock_waiters(&db, 2).await; // B too, with the same cursor

    holder.rollback().await.expect("release the row");
    let a_result = a_batch.await.expect("A's task");
    let (b_claim, b_result) = b_batch.await.expect("B's task");
    let rows = prices(&db).await;
    assert_eq!(rows.len(), 10);
    assert_eq!(
        wrong_prices(&rows[..5]),
        [],
        "each product of the batch repriced exactly once (A: {a_result:?}, B: {b_result:?})"
    );
    assert!(
        matches!(a_result, Err(product_service::Error::JobLost)),
        "{a_result:?}"
    );
    let last = b_result.expect("B's batch commits");
    assert!(!last, "B's batch was not the last one");

    // B goes on with the job.
    run_to_the_end(&f, &b_claim, 5).await;
    assert_eq!(
        wrong_prices(&prices(&db).await),
        [],
        "each product repriced exactly once"
    );
    let done = stored_job(&f, &job.id).await;
    assert_eq!(
        (done.status, done.matched, done.updated),
        (JobStatus::Succeeded, 10, 10)
    );
}
