//! Behind Sentinel: after a failover to the replica, no read serves a value older than an
//! acknowledged write, the epoch moved once, and writes work against the new master.

use std::time::{Duration, Instant};

use integration_tests::cluster::RedisSentinel;
use integration_tests::fixtures::{id, new_product, price_patch, service_over, settled_price};
use integration_tests::{find_on_path, in_ci};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_sentinel_failover_no_read_is_older_than_an_acknowledged_write() {
    if find_on_path("redis-server").is_none() {
        assert!(!in_ci(), "CI needs redis-server for the sentinel test");
        eprintln!("SKIPPED: the sentinel test needs redis-server on PATH");
        return;
    }
    let redis = tokio::task::spawn_blocking(RedisSentinel::start)
        .await
        .expect("task")
        .expect("master, replica and sentinel start");
    let (service, relay, _dir) = service_over(&redis.url(), "sentinel").await;
    let start = service.cache().epoch();

    let p = service
        .create(new_product("SENTINEL-1", 100))
        .await
        .expect("create");
    assert_eq!(settled_price(&service, p.id).await, 100);
    service
        .patch(id(p.id), price_patch(200), None)
        .await
        .expect("patch");
    assert_eq!(settled_price(&service, p.id).await, 200);

    let redis = tokio::task::spawn_blocking(move || {
        redis.failover().expect("the replica takes over");
        redis
    })
    .await
    .expect("task");
    assert_eq!(
        settled_price(&service, p.id).await,
        200,
        "no read older than the acknowledged write"
    );
    assert_eq!(
        service.cache().epoch(),
        start + 1,
        "the failover moved the epoch once"
    );

    // Writes and their invalidations reach the new master.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        service
            .patch(id(p.id), price_patch(300), None)
            .await
            .expect("patch after the failover");
        if settled_price(&service, p.id).await == 300 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a write after the failover is read"
        );
    }
    relay.shutdown().await;
    drop(redis);
}
