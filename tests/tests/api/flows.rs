//! Scenarios written once and run against several set-ups (SQLite or PostgreSQL; memory
//! cache or Redis). Each takes a running [`TestApp`] with an empty catalogue.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, header, id_of, ids_of, new_product};

/// Declares one test per `name: scenario`, each running `scenario(&app)` on a fresh app
/// from `spawn` (an expression whose `.await` gives `Option<TestApp>`; `None` is a skip,
/// already reported loudly). A macro because only a macro can declare tests.
macro_rules! scenario_tests {
    ($spawn:expr => $($name:ident: $scenario:path),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                if let Some(app) = $spawn.await {
                    $scenario(&app).await;
                }
            }
        )*
    };
}
pub(crate) use scenario_tests;

/// Create, read, list, change (PATCH with `If-Match`, PUT), delete: the main flow, each
/// step checked through a following read.
pub async fn crud_flow(app: &TestApp) {
    // Create.
    let created = app.create(&new_product("FLOW-1")).await;
    let other = app.create(&new_product("FLOW-2")).await;
    let id = id_of(&created);
    assert_eq!(created["version"], 1);

    // Read, twice (the second from the cache), and conditionally.
    assert_eq!(app.fetch(id).await, created);
    let again = app.get_product(id).await;
    assert_eq!(header(&again, "etag"), "\"v1\"");
    assert_eq!(again.json::<Value>().await.expect("JSON"), created);
    let not_modified = app.get_product_if_none_match(id, "\"v1\"").await;
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);

    // List.
    let page = app.fetch_page("per_page=10").await;
    assert_eq!(ids_of(&page), vec![id, id_of(&other)]);
    assert_eq!(page["total"], 2);

    // Duplicate sku.
    let duplicate = app.post_product(&new_product("FLOW-2")).await;
    assert_problem(duplicate, 409, "duplicate sku").await;

    // PATCH with a stale, then the current, If-Match.
    let stale = app
        .patch_product(id, &json!({"price_cents": 1}), Some("\"v9\""))
        .await;
    assert_problem(stale, 412, "stale If-Match").await;
    assert_eq!(app.fetch(id).await, created, "the 412 changed nothing");
    let patched = app
        .patch_product(id, &json!({"price_cents": 1}), Some("\"v1\""))
        .await;
    assert_eq!(patched.status(), StatusCode::OK);
    let patched: Value = patched.json().await.expect("JSON");
    assert_eq!(patched["price_cents"], 1);
    assert_eq!(patched["version"], 2);
    assert_eq!(app.fetch(id).await, patched);

    // PUT.
    let replaced = app
        .put_product(
            id,
            &json!({"sku": "FLOW-1r", "name": "Replaced", "price_cents": 3, "stock": 4}),
            Some("\"v2\""),
        )
        .await;
    assert_eq!(replaced.status(), StatusCode::OK);
    let replaced: Value = replaced.json().await.expect("JSON");
    assert_eq!(replaced["version"], 3);
    assert_eq!(replaced["description"], "");
    assert_eq!(app.fetch(id).await, replaced);
    let listed = app.fetch_page("per_page=10").await;
    assert_eq!(
        listed["items"][0], replaced,
        "the list shows the replacement"
    );

    // DELETE.
    let deleted = app.delete_product(id, Some("\"v3\"")).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_problem(app.get_product(id).await, 404, "GET after DELETE").await;
    assert_problem(app.delete_product(id, None).await, 404, "DELETE twice").await;
    let listed = app.fetch_page("per_page=10").await;
    assert_eq!(ids_of(&listed), vec![id_of(&other)]);
    assert_eq!(listed["total"], 1);
}

/// Ten PATCHes of one product at once: all succeed, each gets its own version, and the
/// product ends at version 11 (no lost update, no "database is locked").
pub async fn concurrent_patches_each_bump_the_version_once(app: &TestApp) {
    let id = id_of(&app.create(&new_product("CONC-1")).await);

    let bodies: Vec<Value> = (0..10).map(|i| json!({ "stock": i })).collect();
    let responses = join_all(bodies.iter().map(|body| app.patch_product(id, body, None))).await;

    let mut versions = Vec::new();
    for response in responses {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::OK, "concurrent PATCH: {text}");
        let product: Value = serde_json::from_str(&text).expect("JSON");
        versions.push(product["version"].as_i64().expect("a version"));
    }
    versions.sort_unstable();
    assert_eq!(
        versions,
        (2..=11).collect::<Vec<_>>(),
        "one version per write"
    );
    assert_eq!(app.fetch(id).await["version"], 11);
}

/// Three products in category `seen`; the item and the list pages are read twice each so
/// they are cached. Returns the products.
async fn warm_catalogue(app: &TestApp) -> Vec<Value> {
    let products = app.create_many("SEEN", 3, "seen").await;
    for _ in 0..2 {
        for product in &products {
            app.fetch(id_of(product)).await;
        }
        app.fetch_page("").await;
        app.fetch_page("category=seen").await;
        app.fetch_page("category=elsewhere").await;
    }
    products
}

fn item_with_id(page: &Value, id: i64) -> Option<Value> {
    page["items"]
        .as_array()?
        .iter()
        .find(|p| id_of(p) == id)
        .cloned()
}

/// A PATCH is seen by the item and list reads that follow it, though both were cached.
pub async fn patch_is_seen_by_the_next_reads(app: &TestApp) {
    let products = warm_catalogue(app).await;
    let id = id_of(&products[1]);

    let patched = app
        .patch(id, &json!({"price_cents": 1, "category": "elsewhere"}))
        .await;

    assert_eq!(app.fetch(id).await, patched, "item read after PATCH");
    let all = app.fetch_page("").await;
    assert_eq!(
        item_with_id(&all, id),
        Some(patched.clone()),
        "list after PATCH"
    );
    let seen = app.fetch_page("category=seen").await;
    assert_eq!(seen["total"], 2, "the old category's page: {seen}");
    assert_eq!(item_with_id(&seen, id), None);
    let elsewhere = app.fetch_page("category=elsewhere").await;
    assert_eq!(ids_of(&elsewhere), vec![id], "the new category's page");
}

/// A PUT is seen by the item and list reads that follow it.
pub async fn put_is_seen_by_the_next_reads(app: &TestApp) {
    let products = warm_catalogue(app).await;
    let id = id_of(&products[0]);

    let replaced = app
        .replace(
            id,
            &json!({"sku": "SEEN-new", "name": "New", "price_cents": 2, "stock": 2}),
        )
        .await;

    assert_eq!(app.fetch(id).await, replaced, "item read after PUT");
    let all = app.fetch_page("").await;
    assert_eq!(item_with_id(&all, id), Some(replaced), "list after PUT");
    let seen = app.fetch_page("category=seen").await;
    assert_eq!(seen["total"], 2, "PUT emptied the category: {seen}");
}

/// A DELETE is seen by the item and list reads that follow it.
pub async fn delete_is_seen_by_the_next_reads(app: &TestApp) {
    let products = warm_catalogue(app).await;
    let id = id_of(&products[2]);

    let deleted = app.delete_product(id, None).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);

    assert_problem(app.get_product(id).await, 404, "item read after DELETE").await;
    let all = app.fetch_page("").await;
    assert_eq!(all["total"], 2, "list after DELETE: {all}");
    assert_eq!(item_with_id(&all, id), None);
    let seen = app.fetch_page("category=seen").await;
    assert_eq!(seen["total"], 2, "category page after DELETE: {seen}");
}

/// A POST is seen by the list reads that follow it, and by item reads of its id even
/// when that id was read (and found missing) just before.
pub async fn post_is_seen_by_the_next_reads(app: &TestApp) {
    let products = warm_catalogue(app).await;
    let max_id = products.iter().map(id_of).max().expect("products");
    // The next ids, read while they do not exist (a cached "absent" must not survive).
    for id in max_id + 1..=max_id + 3 {
        for _ in 0..2 {
            assert_problem(app.get_product(id).await, 404, "not yet created").await;
        }
    }

    let mut body = new_product("SEEN-posted");
    body["category"] = json!("seen");
    let created = app.create(&body).await;
    let id = id_of(&created);

    assert_eq!(app.fetch(id).await, created, "item read after POST");
    let all = app.fetch_page("").await;
    assert_eq!(all["total"], 4, "list after POST: {all}");
    assert_eq!(item_with_id(&all, id), Some(created.clone()));
    let seen = app.fetch_page("category=seen").await;
    assert_eq!(seen["total"], 4, "category page after POST: {seen}");
}
