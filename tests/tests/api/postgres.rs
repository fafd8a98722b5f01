//! The main flows on PostgreSQL (with Redis), where constraint errors, concurrency and
//! text rules differ from SQLite.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    assert_field_problem, assert_problem, id_of, new_product, spawn_app_on_postgres,
};
use crate::{bad_input, flows};

flows::scenario_tests!(spawn_app_on_postgres() =>
    on_postgresql_the_crud_flow_works: flows::crud_flow,
    on_postgresql_concurrent_patches_each_bump_the_version_exactly_once:
        flows::concurrent_patches_each_bump_the_version_once,
    on_postgresql_no_odd_input_produces_a_5xx: bad_input::no_odd_input_produces_a_5xx_on,
);

#[tokio::test]
async fn on_postgresql_a_duplicate_sku_is_409_on_create_patch_and_put() {
    let Some(app) = spawn_app_on_postgres().await else {
        return;
    };
    app.create(&new_product("PG-TAKEN")).await;
    let product = app.create(&new_product("PG-FREE")).await;
    let id = id_of(&product);

    let post = app.post_product(&new_product("PG-TAKEN")).await;
    assert_field_problem(post, 409, "sku", "POST").await;
    let patch = app
        .patch_product(id, &json!({"sku": "PG-TAKEN"}), None)
        .await;
    assert_field_problem(patch, 409, "sku", "PATCH").await;
    let put = app.put_product(id, &new_product("PG-TAKEN"), None).await;
    assert_field_problem(put, 409, "sku", "PUT").await;

    assert_eq!(app.fetch(id).await, product);
    assert_eq!(app.fetch_page("").await["total"], 2);
}

#[tokio::test]
async fn on_postgresql_writes_are_seen_by_the_next_reads() {
    let Some(app) = spawn_app_on_postgres().await else {
        return;
    };
    flows::patch_is_seen_by_the_next_reads(&app).await;
    let first = id_of(&app.fetch_page("").await["items"][0]);
    let deleted = app.delete_product(first, None).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.fetch_page("").await["total"], 2);
    assert_eq!(app.get_product(first).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn on_postgresql_health_is_503_and_writes_are_opaque_5xx_problems_when_the_database_is_gone()
{
    let Some(mut app) = spawn_app_on_postgres().await else {
        return;
    };
    let id = id_of(&app.create(&new_product("PG-GONE")).await);

    app.drop_postgres_database().await;

    let health = app.health().await;
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health: serde_json::Value = health.json().await.expect("JSON");
    assert_eq!(health["database"], "unavailable", "{health}");
    // A write needs the database: the one case where a 5xx is right. Its detail says
    // nothing about the cause.
    let patch = app.patch_product(id, &json!({"stock": 1}), None).await;
    let status = patch.status().as_u16();
    assert!(
        [500, 503].contains(&status),
        "PATCH with the database gone: {status}"
    );
    let problem = assert_problem(patch, status, "PATCH with the database gone").await;
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        !detail.to_lowercase().contains("postgres") && !detail.contains(&app.prefix),
        "an opaque detail: {detail}"
    );
}
