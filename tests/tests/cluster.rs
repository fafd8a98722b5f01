//! On a Redis Cluster the identity the epoch follows names every master: a master
//! restored from an old snapshot moves every process to a new epoch (once), and a plain
//! reconnection to the same masters does not. A master that is down takes only its own
//! slots off the cache. One cluster for the whole binary's test.

use integration_tests::cluster::RedisCluster;
use integration_tests::fixtures::{
    assert_every_product_settles_at, id, price_patch, products_on_every_master, service_over,
};
use product_service::{PRODUCT, Product};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_the_epoch_moves_once_per_restored_master_and_never_on_a_reconnect() {
    let Some(mut cluster) = RedisCluster::start_or_skip("on_a_cluster_epoch", 3, 0).await else {
        return;
    };
    let (service, relay, _dir) = service_over(&cluster.url(), "cluster").await;
    let start = service.cache().epoch();

    // Products at 100 until every master holds one.
    let products =
        products_on_every_master(&service, &cluster, cluster.nodes.len(), "CLUSTER", 30).await;
    assert_every_product_settles_at(&service, &products, 100, "created").await;
    // A snapshot of every master, with every product cached at v1.
    for node in &cluster.nodes {
        node.command(&["SAVE"]).expect("SAVE");
    }
    for (product, _) in &products {
        service
            .patch(id(*product), price_patch(200), None)
            .await
            .expect("patch");
    }
    assert_every_product_settles_at(&service, &products, 200, "patched").await;

    // Every client connection is dropped: the clients reconnect to the same masters.
    for node in &cluster.nodes {
        node.command(&["CLIENT", "KILL", "TYPE", "normal"])
            .expect("CLIENT KILL");
    }
    assert_every_product_settles_at(&service, &products, 200, "clients reconnected").await;
    assert_eq!(
        service.cache().epoch(),
        start,
        "a reconnection to the same masters does not move the epoch"
    );

    // Each master in turn comes back from the snapshot, with its products at v1.
    for master in 0..cluster.nodes.len() {
        cluster = tokio::task::spawn_blocking(move || {
            cluster.nodes[master].restart().expect("restart");
            cluster.wait_until_ok().expect("the cluster converges");
            cluster
        })
        .await
        .expect("task");
        let after = format!("master {master} restored from its snapshot");
        assert_every_product_settles_at(&service, &products, 200, &after).await;
        assert_eq!(
            service.cache().epoch(),
            start + master as u64 + 1,
            "one epoch move per restored master"
        );
    }

    // One master down, with no replica to take over: its products are read from the
    // database, the other masters' products are still served from the cache.
    let (down_product, down) = products[0];
    let mut cluster = cluster;
    cluster.nodes[down].stop();
    assert_eq!(
        service
            .find_by_id(id(down_product))
            .await
            .expect("read")
            .price_cents,
        200,
        "a product of the master that is down is read from the database"
    );
    let up: Vec<i64> = products
        .iter()
        .filter(|(_, held_by)| *held_by != down)
        .map(|(product, _)| *product)
        .collect();
    assert!(!up.is_empty(), "some products live on the other masters");
    for product in &up {
        let key = service.cache().key(PRODUCT, *product);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let loaded = std::sync::atomic::AtomicBool::new(false);
            let cached: Option<Product> = service
                .cache()
                .get_or_load(&key, || async {
                    loaded.store(true, std::sync::atomic::Ordering::SeqCst);
                    Ok::<_, std::convert::Infallible>(None)
                })
                .await
                .expect("read");
            if !loaded.load(std::sync::atomic::Ordering::SeqCst) {
                assert_eq!(cached.map(|p| p.price_cents), Some(200));
                assert!(!service.cache().is_degraded_for(&key));
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "product {product} is served from the cache while master {down} is down"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    assert!(
        service
            .cache()
            .is_degraded_for(&service.cache().key(PRODUCT, down_product)),
        "the master that is down holds its own slots off the cache"
    );
    relay.shutdown().await;
    drop(cluster);
}
