//! The `run` entry point: connection, outbox, exit status.

use std::time::Duration;

use api_server::import::run;
use integration_tests::fixtures::Fixture;
use product_service::ProductService;

use crate::helpers::*;

fn settings(database_url: &str, redis_url: Option<&str>, prefix: &str) -> api_server::Settings {
    api_server::Settings {
        bind: ([127, 0, 0, 1], 0).into(),
        database_url: database_url.to_owned(),
        redis_url: redis_url.map(str::to_owned),
        cache_prefix: prefix.to_owned(),
        cache_ttl_secs: 300,
        cache_max_entries: 100_000,
        api_token: None,
        ..api_server::Settings::default()
    }
}

#[tokio::test]
async fn run_applies_the_file_drains_what_it_owes_and_fails_when_a_row_failed() {
    let Some(f) = Fixture::sqlite("import_run").await else {
        return;
    };
    let files = Files::new();
    let db = database(&f).await;
    let settings = settings(&f.database_url, Some(&f.redis_url), &f.prefix);
    let good = files.csv("good.csv", "R-1,One,,100,1,\n");
    let bad = files.csv("bad.csv", "R-1,,,150,,\nR-2,Two,,x,1,\n");

    run(&settings, &good, false).await.expect("succeeds");
    assert_eq!(
        count_rows(&db, "cache_outbox").await,
        0,
        "the import applied the invalidations it owed"
    );

    let error = run(&settings, &bad, false)
        .await
        .expect_err("a failed row fails the run");

    assert!(error.to_string().contains("1 row failed"), "{error:#}");
    assert_eq!(
        stored(&db, "R-1").await.expect("R-1").price_cents,
        150,
        "the valid row was still applied"
    );
    assert_eq!(count_rows(&db, "cache_outbox").await, 0);
}

#[tokio::test]
async fn run_imports_without_a_reachable_redis_and_the_outbox_keeps_the_invalidations() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let database_url = integration_tests::sqlite_url(dir.path(), "products.db");
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port();
    let settings = settings(
        &database_url,
        Some(&format!("redis://127.0.0.1:{port}")),
        &integration_tests::unique_prefix("import_no_redis"),
    );
    let files = Files::new();
    let path = files.csv("products.csv", "N-1,One,,100,1,\nN-2,Two,,200,2,\n");

    run(&settings, &path, false)
        .await
        .expect("the import does not need the cache");

    let db = product_service::connect(&database_url)
        .await
        .expect("connects");
    assert_eq!(count_rows(&db, "product").await, 2);
    assert_eq!(
        count_rows(&db, "cache_outbox").await,
        2,
        "the invalidations wait in the outbox for a relay"
    );
}

#[tokio::test]
async fn an_import_succeeds_when_redis_dies_and_the_outbox_keeps_the_invalidations() {
    let Some(mut redis) = integration_tests::redis_server_or_skip("import_redis_dies").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let database_url = integration_tests::sqlite_url(dir.path(), "products.db");
    let db = product_service::connect(&database_url)
        .await
        .expect("connects");
    product_service::migrate(&db).await.expect("migrates");
    let cache = integration_tests::redis_cache(
        &redis.url(),
        integration_tests::unique_prefix("import_redis_dies"),
    )
    .await;
    let service = ProductService::new(db.clone(), cache)
        .await
        .expect("service");
    let files = Files::new();
    let mut csv = format!("{HEADER}\n");
    for n in 1..=1_200 {
        csv.push_str(&format!("X-{n},Product {n},,{n},1,\n"));
    }
    let path = files.write("products.csv", &csv);
    redis.stop();

    let started = std::time::Instant::now();
    let report = tokio::time::timeout(Duration::from_secs(30), import(&service, &path))
        .await
        .expect("a dead Redis does not stall the import");

    assert_eq!(counts(&report), (1200, 0, 0, 0), "{report}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "one failed invalidation, not one per batch: {:?}",
        started.elapsed()
    );
    assert_eq!(count_rows(&db, "cache_outbox").await, 1200);
    redis.restart().expect("redis restarts");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while service.relay(500).drain().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the relay applies what is owed once Redis is back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count_rows(&db, "cache_outbox").await, 0);
}
