//! Several servers, one database: each reads the others' writes at once, also when one
//! of them is cut off from Redis; a set-up that cannot be coherent does not start; a
//! server starts without Redis and uses it once it answers.

use std::time::{Duration, Instant};

use api_server::{Application, Settings};
use integration_tests::tcp_relay::TcpRelay;
use integration_tests::{RedisServer, redis_server_or_skip, test_name, unused_port};
use serde_json::{Value, json};

use crate::helpers::{id_of, metric, new_product, spawn_app, spawn_app_on_postgres, start};

#[tokio::test]
async fn two_servers_on_one_database_and_redis_read_each_others_writes_at_once() {
    let Some(a) = spawn_app_on_postgres().await else {
        return;
    };
    let b = a.spawn_peer(a.redis_url.clone()).await;
    let product = a.create(&new_product("TWO-1")).await;
    let id = id_of(&product);
    let mut stale = 0;
    for round in 0..20_i64 {
        let (writer, reader) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        // The reader has the product (and the first page) cached.
        reader.fetch(id).await;
        reader.fetch_page("page=1&per_page=20").await;
        let price = 1_000 + round;
        let response = writer
            .patch_product(id, &json!({"price_cents": price}), None)
            .await;
        assert_eq!(response.status(), 200);
        if reader.fetch(id).await["price_cents"] != price {
            stale += 1;
        }
        let page = reader.fetch_page("page=1&per_page=20").await;
        if page["items"][0]["price_cents"] != price {
            stale += 1;
        }
    }
    assert_eq!(stale, 0, "reads right after the other server's write");
}

#[tokio::test]
async fn a_write_through_a_server_cut_off_from_redis_is_read_at_once_on_the_other() {
    let Some(a) = spawn_app_on_postgres().await else {
        return;
    };
    let redis = a
        .redis_url
        .as_deref()
        .and_then(|url| url.trim_start_matches("redis://").parse().ok())
        .expect("a redis://host:port URL");
    let relay = TcpRelay::start(redis).await.expect("TCP relay");
    let b = a.spawn_peer(Some(relay.url())).await;
    let product = b.create(&new_product("CUT-1")).await;
    let id = id_of(&product);
    assert_eq!(a.fetch(id).await["version"], 1);
    assert_eq!(a.fetch(id).await["version"], 1);

    relay.freeze();
    let started = Instant::now();
    let response = b
        .patch_product(id, &json!({"price_cents": 4242}), None)
        .await;
    assert_eq!(response.status(), 200, "the write succeeds without Redis");
    let took = started.elapsed();
    let read = a.fetch(id).await;
    assert_eq!(
        (read["price_cents"].clone(), read["version"].clone()),
        (json!(4242), json!(2)),
        "the other server reads it at once (the write took {took:?})"
    );
    relay.thaw();
}

#[tokio::test]
async fn a_second_server_with_the_in_process_cache_refuses_to_start_naming_redis_url() {
    let a = spawn_app().await;
    let settings = Settings {
        bind: "127.0.0.1:0".parse().expect("address"),
        database_url: a.database_url.clone(),
        redis_url: None,
        cache_prefix: a.prefix.clone(),
        cache_ttl_secs: 300,
        cache_max_entries: 1_000,
        api_token: Some("t".into()),
        ..api_server::Settings::default()
    };
    let second = Application::build(&settings).await.expect("builds");
    let ended = tokio::time::timeout(
        Duration::from_secs(15),
        second.run_until(std::future::pending()),
    )
    .await
    .expect("the second server does not serve");
    let error = format!("{:#}", ended.expect_err("it refuses to start"));
    assert!(error.contains("REDIS_URL"), "{error}");
    assert_eq!(a.health().await.status(), 200, "the first one serves on");
}

#[tokio::test]
async fn a_server_starts_without_redis_and_uses_it_once_it_answers() {
    if redis_server_or_skip(&test_name()).await.is_none() {
        return;
    }
    let port = unused_port().expect("a free port");
    let dir = tempfile::tempdir().expect("temp dir");
    let url = integration_tests::sqlite_url(dir.path(), "products.db");
    let app = start(
        url,
        Some(format!("redis://127.0.0.1:{port}")),
        integration_tests::unique_prefix(&test_name()),
    )
    .await;
    let health: Value = app.health().await.json().await.expect("JSON");
    assert_eq!(health["cache"], "degraded", "{health}");
    let product = app.create(&new_product("NO-REDIS-1")).await;
    let id = id_of(&product);
    assert_eq!(
        app.fetch(id).await["version"],
        1,
        "reads come from the database"
    );

    let _redis = RedisServer::start_on(port).expect("Redis starts");
    app.wait_until_the_cache_is_ready().await;
    let hits = |text: &str| {
        metric(
            text,
            "cache_requests_total",
            &[("namespace", "product"), ("result", "hit")],
        )
    };
    let before = hits(&app.metrics().await);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        app.fetch(id).await;
        if hits(&app.metrics().await) > before {
            break;
        }
        assert!(Instant::now() < deadline, "reads are served from Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
