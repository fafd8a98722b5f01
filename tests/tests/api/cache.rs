//! The cache seen through HTTP: reads are cached (in Redis, under the prefix), every write
//! is seen by the next read, and a dead Redis fails nothing.
//!
//! Metrics are process-wide and tests run in parallel, so counters are compared before
//! and after and asserted to have grown "at least" by what this test's own traffic
//! causes. That a read was really served from the cache is proven without metrics: the
//! row is changed behind the server's back and the read still shows the cached value.

use std::time::Duration;

use integration_tests::wait_until;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::flows;
use crate::helpers::{
    TestApp, assert_problem, id_of, metric, new_product, spawn_app, spawn_app_with_private_redis,
    spawn_app_with_redis,
};

/// Changes a product's name in the database without telling the server or its cache.
async fn rename_behind_the_servers_back(app: &TestApp, id: i64, name: &str) {
    app.execute_sql(&format!(
        "UPDATE product SET name = '{name}' WHERE id = {id}"
    ))
    .await;
}

fn hits(metrics: &str, namespace: &str) -> f64 {
    metric(
        metrics,
        "cache_requests_total",
        &[("namespace", namespace), ("result", "hit")],
    )
}

/// Asserts that the reads since `before` (the metrics then) made at least `at_least`
/// hits in `namespace`, and that `read_name` still shows `cached_name` once product `id`
/// was renamed behind the server's back: it is served from Redis, not the database.
async fn assert_served_from_redis(
    app: &TestApp,
    namespace: &str,
    before: &str,
    at_least: f64,
    id: i64,
    cached_name: &Value,
    read_name: impl AsyncFn() -> Value,
) {
    let after = app.metrics().await;
    let (hits_before, hits_after) = (hits(before, namespace), hits(&after, namespace));
    assert!(
        hits_after - hits_before >= at_least,
        "at least {at_least} of the reads were {namespace} hits: {hits_before} → {hits_after}"
    );
    rename_behind_the_servers_back(app, id, "Changed behind the cache").await;
    assert_eq!(
        &read_name().await,
        cached_name,
        "the {namespace} read is served from Redis, not the database"
    );
}

#[tokio::test]
async fn a_product_read_twice_is_served_from_redis_under_the_prefix() {
    let Some(app) = spawn_app_with_redis().await else {
        return;
    };
    let product = app.create(&new_product("CACHED-1")).await;
    let id = id_of(&product);
    let before = app.metrics().await;

    for _ in 0..6 {
        assert_eq!(app.fetch(id).await, product);
    }

    let keys = app.redis_keys("product").await;
    assert!(
        keys.iter()
            .any(|k| k.starts_with(&format!("{}:product:", app.prefix))
                && k.contains(&id.to_string())),
        "a key for product {id} under {}:product: in {keys:?}",
        app.prefix
    );
    assert_served_from_redis(
        &app,
        "product",
        &before,
        5.0,
        id,
        &product["name"],
        async || app.fetch(id).await["name"].clone(),
    )
    .await;
}

#[tokio::test]
async fn a_list_page_read_twice_is_served_from_redis_under_the_prefix() {
    let Some(app) = spawn_app_with_redis().await else {
        return;
    };
    let product = app.create(&new_product("CACHED-2")).await;
    let before = app.metrics().await;

    let first = app.fetch_page("per_page=5").await;
    let second = app.fetch_page("per_page=5").await;

    assert_eq!(first, second);
    assert_eq!(first["items"][0], product);
    let keys = app.redis_keys("product_list").await;
    assert!(
        !keys.is_empty(),
        "list pages are stored under {}:product_list:",
        app.prefix
    );
    let id = id_of(&product);
    assert_served_from_redis(
        &app,
        "product_list",
        &before,
        1.0,
        id,
        &product["name"],
        async || app.fetch_page("per_page=5").await["items"][0]["name"].clone(),
    )
    .await;
}

#[tokio::test]
async fn every_key_the_server_writes_starts_with_its_prefix() {
    let Some(app) = spawn_app_with_private_redis().await else {
        return;
    };
    let id = id_of(&app.create(&new_product("PREFIX-1")).await);
    app.fetch(id).await;
    app.fetch_page("").await;
    app.fetch_page("category=x").await;
    let _ = app.get_product(id + 100).await;
    app.patch(id, &json!({"stock": 1})).await;
    app.fetch(id).await;

    // The Redis is private: every key in it was written by this server.
    let url = app.redis_url.clone().expect("Redis");
    let client = integration_tests::redis_client(&url).await.expect("client");
    let keys: Vec<String> =
        fred::interfaces::ClientLike::custom(&client, fred::cmd!("KEYS"), vec!["*"])
            .await
            .expect("KEYS");
    assert!(!keys.is_empty(), "the server cached something");
    for key in &keys {
        assert!(
            key.starts_with(&format!("{}:", app.prefix)),
            "{key} is outside {}:",
            app.prefix
        );
    }
}

// --- every write is seen by the next read ------------------------------------------------

flows::scenario_tests!(async { Some(spawn_app().await) } =>
    with_the_memory_cache_a_patch_is_seen_by_the_next_item_and_list_reads:
        flows::patch_is_seen_by_the_next_reads,
    with_the_memory_cache_a_put_is_seen_by_the_next_item_and_list_reads:
        flows::put_is_seen_by_the_next_reads,
    with_the_memory_cache_a_delete_is_seen_by_the_next_item_and_list_reads:
        flows::delete_is_seen_by_the_next_reads,
    with_the_memory_cache_a_post_is_seen_by_the_next_item_and_list_reads:
        flows::post_is_seen_by_the_next_reads,
);

flows::scenario_tests!(spawn_app_with_redis() =>
    with_redis_a_patch_is_seen_by_the_next_item_and_list_reads:
        flows::patch_is_seen_by_the_next_reads,
    with_redis_a_put_is_seen_by_the_next_item_and_list_reads:
        flows::put_is_seen_by_the_next_reads,
    with_redis_a_delete_is_seen_by_the_next_item_and_list_reads:
        flows::delete_is_seen_by_the_next_reads,
    with_redis_a_post_is_seen_by_the_next_item_and_list_reads:
        flows::post_is_seen_by_the_next_reads,
);

#[tokio::test]
async fn an_etag_from_before_a_write_no_longer_gives_304() {
    let Some(app) = spawn_app_with_redis().await else {
        return;
    };
    let id = id_of(&app.create(&new_product("ETAG-W")).await);
    for _ in 0..2 {
        let cached = app.get_product_if_none_match(id, "\"v1\"").await;
        assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    }

    app.patch(id, &json!({"stock": 0})).await;

    let after = app.get_product_if_none_match(id, "\"v1\"").await;
    assert_eq!(after.status(), StatusCode::OK);
    assert_eq!(after.json::<Value>().await.expect("JSON")["stock"], 0);
}

// --- Redis down ----------------------------------------------------------------------------

async fn health_of(app: &TestApp) -> (StatusCode, Value) {
    let response = app.health().await;
    let status = response.status();
    (status, response.json().await.expect("health is JSON"))
}

/// A server over a private Redis with product `sku` created, and it and the first list
/// page read twice each (so both are cached); `None` after a loud skip.
async fn cached_product_over_private_redis(sku: &str) -> Option<(TestApp, Value)> {
    let app = spawn_app_with_private_redis().await?;
    let product = app.create(&new_product(sku)).await;
    for _ in 0..2 {
        app.fetch(id_of(&product)).await;
        app.fetch_page("").await;
    }
    Some((app, product))
}

#[tokio::test]
async fn with_redis_down_reads_come_from_the_database_writes_succeed_and_health_is_degraded() {
    let Some((mut app, product)) = cached_product_over_private_redis("DOWN-1").await else {
        return;
    };
    let id = id_of(&product);
    let before = app.metrics().await;

    app.private_redis().stop();

    assert_eq!(app.fetch(id).await, product, "GET with Redis down");
    assert_eq!(
        app.fetch_page("").await["items"][0],
        product,
        "list with Redis down"
    );
    let patched = app
        .patch_product(id, &json!({"price_cents": 4321}), Some("\"v1\""))
        .await;
    assert_eq!(patched.status(), StatusCode::OK, "PATCH with Redis down");
    let patched: Value = patched.json().await.expect("JSON");
    assert_eq!(
        app.fetch(id).await,
        patched,
        "the write is seen with Redis down"
    );
    let created = app.create(&new_product("DOWN-2")).await;
    assert_eq!(app.fetch_page("").await["total"], 2);
    let deleted = app.delete_product(id_of(&created), None).await;
    assert_eq!(
        deleted.status(),
        StatusCode::NO_CONTENT,
        "DELETE with Redis down"
    );
    assert_problem(
        app.get_product(id_of(&created)).await,
        404,
        "deleted, Redis down",
    )
    .await;

    let (status, health) = health_of(&app).await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["database"], "ok", "{health}");
    assert_eq!(health["cache"], "degraded", "{health}");
    let after = app.metrics().await;
    let errors = |text: &str| {
        metric(
            text,
            "cache_requests_total",
            &[("namespace", "product"), ("result", "error")],
        )
    };
    assert!(
        errors(&after) > errors(&before),
        "failed cache reads are counted as errors"
    );

    // Redis comes back (empty): reads show the latest writes, health recovers.
    app.private_redis().restart().expect("restarts");
    wait_until(Duration::from_secs(10), async || {
        let (status, health) = health_of(&app).await;
        assert_eq!(status, StatusCode::OK, "{health}");
        if health["cache"] == "ok" {
            Ok(())
        } else {
            Err(format!("the cache did not recover: {health}"))
        }
    })
    .await;
    assert_eq!(app.fetch(id).await, patched);
    assert_eq!(app.fetch(id).await, patched);
}

/// A write whose inline invalidation times out must keep reads off the stale entry until
/// the outbox relay has applied what is owed.
#[tokio::test]
async fn an_invalidation_owed_while_redis_was_frozen_is_applied_when_it_is_back() {
    let Some((mut app, product)) = cached_product_over_private_redis("FROZEN-1").await else {
        return;
    };
    let id = id_of(&product);

    app.private_redis().freeze().expect("freezes");
    let patched = app.patch_product(id, &json!({"stock": 999}), None).await;
    assert_eq!(patched.status(), StatusCode::OK, "PATCH with Redis frozen");
    let patched: Value = patched.json().await.expect("JSON");
    app.private_redis().thaw().expect("thaws");

    // Redis still holds version 1; the read must not return it.
    assert_eq!(
        app.fetch(id).await,
        patched,
        "item read after Redis is back"
    );
    assert_eq!(
        app.fetch_page("").await["items"][0],
        patched,
        "list read after Redis is back"
    );
}
