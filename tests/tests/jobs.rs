//! Reprice jobs: stored in the database, run in batches through the product write path,
//! once each, across restarts and several workers.

use std::time::{Duration, Instant};

use integration_tests::fixtures::{Fixture, first_page, id, new_product};
use product_service::{Category, JobConfig, JobStatus, ProductService, RepriceJob, RepricePercent};

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

fn percent(p: f64) -> RepricePercent {
    RepricePercent::parse(p).expect("valid percent")
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

#[tokio::test]
async fn a_job_reprices_its_category_and_the_cache_shows_it_at_once() {
    let Some(f) = Fixture::sqlite("job_reprices").await else {
        return;
    };
    let mut ids = Vec::new();
    for i in 0..25 {
        ids.push(
            f.service
                .create(new_product(&format!("J-{i}"), 1000))
                .await
                .expect("create")
                .id,
        );
    }
    let mut other = new_product("OTHER-1", 1000);
    other.category = Category::parse("other").expect("valid");
    let other = f.service.create(other).await.expect("create");
    f.service.find_by_id(id(ids[0])).await.expect("warm item");
    f.service
        .find_in_page(&first_page())
        .await
        .expect("warm list");

    let worker = f.service.spawn_job_worker(quick());
    let job = f
        .service
        .enqueue_reprice(category("cat"), percent(10.0))
        .await
        .expect("enqueue");
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
    let item = f.service.find_by_id(id(ids[0])).await.expect("read");
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
    let untouched = f.service.find_by_id(id(other.id)).await.expect("read");
    assert_eq!(
        untouched.price_cents, 1000,
        "other categories are left alone"
    );
}

#[tokio::test]
async fn a_job_survives_a_restart_in_the_middle_and_reprices_each_product_once() {
    let Some(f) = Fixture::sqlite("job_restart").await else {
        return;
    };
    for i in 0..60 {
        f.service
            .create(new_product(&format!("R-{i}"), 1000))
            .await
            .expect("create");
    }
    let slow = JobConfig {
        batch_pause: Duration::from_millis(100),
        ..quick()
    };
    let worker = f.service.spawn_job_worker(slow.clone());
    let job = f
        .service
        .enqueue_reprice(category("cat"), percent(10.0))
        .await
        .expect("enqueue");
    let midway = wait_for(&f.service, &job.id, Duration::from_secs(10), |j| {
        j.updated >= 10
    })
    .await;
    assert_eq!(midway.status, JobStatus::Running);

    worker.shutdown().await; // the server stops
    let stopped = f
        .service
        .find_job(&job.id)
        .await
        .expect("read")
        .expect("exists");
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
    let page = f
        .service
        .find_in_page(&product_service::PageQuery::parse(1, 100, None).expect("valid"))
        .await
        .expect("list");
    assert!(
        page.items
            .iter()
            .all(|p| p.price_cents == 1100 && p.version == 2),
        "every product repriced exactly once"
    );
}

#[tokio::test]
async fn two_workers_run_each_job_once() {
    let Some(f) = Fixture::sqlite("two_workers").await else {
        return;
    };
    for i in 0..30 {
        f.service
            .create(new_product(&format!("W-{i}"), 1000))
            .await
            .expect("create");
    }
    let a = f.service.spawn_job_worker(quick());
    let b = f.service.spawn_job_worker(quick());
    let mut jobs = Vec::new();
    for _ in 0..3 {
        jobs.push(
            f.service
                .enqueue_reprice(None, percent(10.0))
                .await
                .expect("enqueue"),
        );
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
    let page = f
        .service
        .find_in_page(&product_service::PageQuery::parse(1, 100, None).expect("valid"))
        .await
        .expect("list");
    assert!(
        page.items
            .iter()
            .all(|p| p.price_cents == 1331 && p.version == 4),
        "{:?}",
        page.items[0]
    );
}

#[tokio::test]
async fn a_job_that_would_break_a_price_rule_fails_and_keeps_its_committed_batches() {
    let Some(f) = Fixture::sqlite("job_fails").await else {
        return;
    };
    for i in 0..15 {
        f.service
            .create(new_product(&format!("F-{i}"), 1000))
            .await
            .expect("create");
    }
    let huge = f
        .service
        .create(new_product("F-HUGE", 500_000_000_000))
        .await
        .expect("create");

    let worker = f.service.spawn_job_worker(quick());
    let job = f
        .service
        .enqueue_reprice(None, percent(1000.0))
        .await
        .expect("enqueue");
    let job = wait_for(&f.service, &job.id, Duration::from_secs(10), |j| {
        j.status == JobStatus::Failed
    })
    .await;
    worker.shutdown().await;

    assert_eq!(job.status, JobStatus::Failed);
    let error = job.error.expect("an error is recorded");
    assert!(error.contains(&format!("product {}", huge.id)), "{error}");
    assert_eq!(job.updated, 10, "the first batch of 10 committed");
    let first = f.service.find_by_id(id(1)).await.expect("read");
    assert_eq!(first.price_cents, 11_000, "committed batches stay applied");
    let unchanged = f.service.find_by_id(id(huge.id)).await.expect("read");
    assert_eq!(unchanged.price_cents, 500_000_000_000);
}
