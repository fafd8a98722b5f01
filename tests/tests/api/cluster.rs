//! Two `api-server` processes on one PostgreSQL database and one 3-master Redis Cluster:
//! a write acknowledged by one is read at once by the other, one by one and in a storm
//! of writers and readers over both. The only cluster of this test binary.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use integration_tests::binary::{StartedServer, create_product};
use integration_tests::cluster::RedisCluster;
use integration_tests::{postgres_url_or_skip, start_server, unique_prefix};
use serde_json::{Value, json};

use super::binary::{binary, command, terminate};
use super::helpers::metric;

const TOKEN: &str = "cluster-test-token";
/// Products in the storm, and writes per product.
const PRODUCTS: usize = 8;
const ROUNDS: i64 = 25;

async fn start(
    binary: &std::path::Path,
    database_url: &str,
    redis_url: &str,
    prefix: &str,
) -> StartedServer {
    let mut command = command(binary);
    command
        .env("BIND", "127.0.0.1:0")
        .env("DATABASE_URL", database_url)
        .env("REDIS_URL", redis_url)
        .env("CACHE_PREFIX", prefix)
        .env("API_TOKEN", TOKEN)
        .stdout(Stdio::null());
    let mut started = start_server(command).await;
    // Keep draining stderr so the server never blocks on a full pipe.
    let (_, closed) = tokio::sync::mpsc::unbounded_channel();
    let mut stderr = std::mem::replace(&mut started.stderr, closed);
    tokio::spawn(async move { while stderr.recv().await.is_some() {} });
    started
}

async fn price(http: &reqwest::Client, base: &str, id: i64) -> i64 {
    let product: Value = http
        .get(format!("{base}/api/products/{id}"))
        .send()
        .await
        .expect("GET")
        .error_for_status()
        .expect("200")
        .json()
        .await
        .expect("JSON");
    product["price_cents"].as_i64().expect("price_cents")
}

async fn set_price(http: &reqwest::Client, base: &str, id: i64, price: i64) {
    http.patch(format!("{base}/api/products/{id}"))
        .bearer_auth(TOKEN)
        .json(&json!({ "price_cents": price }))
        .send()
        .await
        .expect("PATCH")
        .error_for_status()
        .expect("200");
}

async fn cache_hits(http: &reqwest::Client, base: &str) -> f64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("text");
    metric(
        &text,
        "cache_requests_total",
        &[("namespace", "product"), ("result", "hit")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_server_processes_on_postgresql_and_a_cluster_read_each_others_writes_at_once() {
    let Some(binary) = binary() else { return };
    let Some(cluster) =
        RedisCluster::start_or_skip("two_server_processes_on_a_cluster", 3, 0).await
    else {
        return;
    };
    let Some(database) = postgres_url_or_skip("two_server_processes_on_a_cluster").await else {
        return;
    };
    let prefix = unique_prefix("two_processes_cluster");
    // One after the other: the first one migrates the database.
    let mut a = start(&binary, database.url(), &cluster.url(), &prefix).await;
    let mut b = start(&binary, database.url(), &cluster.url(), &prefix).await;
    let http = reqwest::Client::new();

    let mut ids = Vec::new();
    for n in 0..PRODUCTS {
        let body =
            json!({"sku": format!("TWO-{n}"), "name": "Widget", "price_cents": 1, "stock": 1});
        let created = create_product(&http, &a.address, TOKEN, &body).await;
        ids.push(created["id"].as_i64().expect("id"));
    }

    // Writes on one, reads on the other, with both caches warm.
    for &id in &ids {
        assert_eq!(price(&http, &b.address, id).await, 1);
        assert_eq!(price(&http, &b.address, id).await, 1);
        set_price(&http, &a.address, id, 2).await;
        assert_eq!(
            price(&http, &b.address, id).await,
            2,
            "B reads A's write at once"
        );
        set_price(&http, &b.address, id, 3).await;
        assert_eq!(
            price(&http, &a.address, id).await,
            3,
            "A reads B's write at once"
        );
    }

    // The storm: a writer per server, each owning half the products, reads the other
    // server right after each acknowledged write; readers hammer both meanwhile.
    let stale = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let bases = [a.address.clone(), b.address.clone()];
    let mut readers = Vec::new();
    for reader in 0..4 {
        let (http, bases, ids, done) = (http.clone(), bases.clone(), ids.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0usize;
            while !done.load(Ordering::SeqCst) {
                for &id in &ids {
                    price(&http, &bases[(reader + reads) % 2], id).await;
                    reads += 1;
                }
            }
        }));
    }
    let mut writers = Vec::new();
    for writer in 0..2 {
        let (http, bases, stale) = (http.clone(), bases.clone(), stale.clone());
        let owned: Vec<i64> = ids.iter().copied().skip(writer).step_by(2).collect();
        writers.push(tokio::spawn(async move {
            for round in 1..=ROUNDS {
                for &id in &owned {
                    let written = 100 * round + id % 100;
                    set_price(&http, &bases[writer], id, written).await;
                    if price(&http, &bases[1 - writer], id).await != written {
                        stale.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    integration_tests::end_storm(writers, &done, readers).await;
    assert_eq!(
        stale.load(Ordering::SeqCst),
        0,
        "reads on one server right after a write acknowledged by the other"
    );
    for base in &bases {
        assert!(
            cache_hits(&http, base).await > 0.0,
            "{base} served reads from the cluster"
        );
    }

    assert!(terminate(&mut a.child).await.success());
    assert!(terminate(&mut b.child).await.success());
    drop(cluster);
    database.cleanup().await.expect("the database is dropped");
}
