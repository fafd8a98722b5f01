//! A Redis Cluster with a replica per master: a master is killed and its replica takes
//! over (replication is asynchronous, so the invalidations it had not passed on are
//! lost). No read serves a value older than an acknowledged write, the epoch moves once
//! (the set of masters changed), and the cache is in use again afterwards, on every
//! master's keys. One cluster for the whole binary's test.

use fred::prelude::KeysInterface;
use integration_tests::cluster::RedisCluster;
use integration_tests::fixtures::{
    assert_every_product_settles_at, id, price_patch, products_on_every_master, service_over,
};
use integration_tests::redis_client;
use product_service::PRODUCT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_cluster_failover_no_read_is_older_than_an_acknowledged_write() {
    let Some(cluster) = RedisCluster::start_or_skip("cluster_failover", 3, 1).await else {
        return;
    };
    let (service, relay, _dir) = service_over(&cluster.url(), "cluster-failover").await;
    let start = service.cache().epoch();

    // Products at 100 until every master holds one, each cached at its first price.
    let products = products_on_every_master(&service, &cluster, 3, "FAILOVER", 40).await;
    assert_every_product_settles_at(&service, &products, 100, "created").await;
    let (victim_product, victim) = products[0];

    // The victim's replica must not have seen the acknowledged writes' invalidations:
    // it is frozen while they are applied on the master, which is then killed; thawed,
    // the replica takes over with the data it had before the writes.
    let mut cluster = cluster;
    let replica = cluster
        .replica_of(victim)
        .expect("the victim has a replica");
    cluster.nodes[replica].freeze().expect("freeze the replica");
    for (product, _) in &products {
        service
            .patch(id(*product), price_patch(200), None)
            .await
            .expect("patch");
    }
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.nodes[victim].stop();
        cluster.nodes[replica].thaw().expect("thaw the replica");
        cluster
            .wait_until_master(replica)
            .expect("the replica takes over");
        cluster
    })
    .await
    .expect("task");
    assert_eq!(
        cluster
            .master_of(service.cache().key(PRODUCT, victim_product).as_str())
            .expect("master"),
        replica,
        "the replica took over the victim's slots"
    );

    let after = format!("master {victim} failed over to its replica");
    assert_every_product_settles_at(&service, &products, 200, &after).await;
    assert_eq!(
        service.cache().epoch(),
        start + 1,
        "the new set of masters moved the epoch once"
    );
    // The cache is in use again, on the promoted replica's keys too.
    let client = redis_client(&cluster.url()).await.expect("client");
    let key = service.cache().key(PRODUCT, victim_product);
    let cached: bool = client.exists(key.as_str()).await.expect("EXISTS");
    assert!(
        cached,
        "the promoted replica caches the victim's products again"
    );
    relay.shutdown().await;
    drop(cluster);
}
