//! `/api/products`: every endpoint and every status the contract documents.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    TestApp, assert_field_problem, assert_problem, header, id_of, ids_of, new_product, spawn_app,
};

// --- list --------------------------------------------------------------------------------

#[tokio::test]
async fn list_of_an_empty_catalogue_is_an_empty_first_page_of_20() {
    let app = spawn_app().await;

    let page = app.fetch_page("").await;

    assert_eq!(
        page,
        json!({"items": [], "page": 1, "per_page": 20, "total": 0})
    );
}

#[tokio::test]
async fn list_pages_are_ordered_by_id_and_report_the_total() {
    let app = spawn_app().await;
    let created = app.create_many("PAGE", 5, "things").await;
    let ids: Vec<i64> = created.iter().map(id_of).collect();

    let first = app.fetch_page("page=1&per_page=2").await;
    let second = app.fetch_page("page=2&per_page=2").await;
    let third = app.fetch_page("page=3&per_page=2").await;
    let beyond = app.fetch_page("page=4&per_page=2").await;

    assert_eq!(ids_of(&first), ids[0..2], "page 1");
    assert_eq!(ids_of(&second), ids[2..4], "page 2");
    assert_eq!(ids_of(&third), ids[4..5], "page 3");
    assert_eq!(ids_of(&beyond), Vec::<i64>::new(), "past the end");
    for (page, number) in [(&first, 1), (&second, 2), (&third, 3), (&beyond, 4)] {
        assert_eq!(page["page"], json!(number), "{page}");
        assert_eq!(page["per_page"], json!(2), "{page}");
        assert_eq!(page["total"], json!(5), "{page}");
    }
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted, "ids are assigned in ascending order");
    assert_eq!(
        first["items"][0], created[0],
        "list items are whole products"
    );
}

#[tokio::test]
async fn list_filters_by_category() {
    let app = spawn_app().await;
    let mice = app.create_many("MOUSE", 2, "mice").await;
    app.create_many("KEYB", 3, "keyboards").await;

    let page = app.fetch_page("category=mice").await;
    let none = app.fetch_page("category=monitors").await;

    assert_eq!(page["total"], json!(2), "{page}");
    assert_eq!(ids_of(&page), mice.iter().map(id_of).collect::<Vec<_>>());
    assert!(
        page["items"]
            .as_array()
            .is_some_and(|items| items.iter().all(|p| p["category"] == "mice")),
        "{page}"
    );
    assert_eq!(none["total"], json!(0), "{none}");
    assert_eq!(app.fetch_page("").await["total"], json!(5));
}

#[tokio::test]
async fn list_accepts_per_page_from_1_to_100_and_rejects_the_rest_with_400() {
    let app = spawn_app().await;
    app.create_many("PP", 3, "").await;

    for per_page in [1, 100] {
        let page = app.fetch_page(&format!("per_page={per_page}")).await;
        assert_eq!(page["per_page"], json!(per_page), "{page}");
        assert_eq!(
            page["items"].as_array().map(Vec::len),
            Some(per_page.min(3)),
            "{page}"
        );
    }
    for query in ["per_page=0", "per_page=101", "per_page=-1", "per_page=abc"] {
        let response = app.list_products(query).await;
        assert_field_problem(response, 400, "per_page", query).await;
    }
    for query in ["page=0", "page=-3", "page=x"] {
        let response = app.list_products(query).await;
        assert_field_problem(response, 400, "page", query).await;
    }
}

// --- get ---------------------------------------------------------------------------------

#[tokio::test]
async fn get_returns_the_product_with_its_version_as_etag() {
    let app = spawn_app().await;
    let created = app.create(&new_product("GET-1")).await;

    let response = app.get_product(id_of(&created)).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "etag"), "\"v1\"");
    let product: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(product, created);
}

#[tokio::test]
async fn get_returns_304_while_if_none_match_names_the_current_version() {
    let app = spawn_app().await;
    let id = id_of(&app.create(&new_product("ETAG-1")).await);

    let current = app.get_product_if_none_match(id, "\"v1\"").await;
    let other = app.get_product_if_none_match(id, "\"v7\"").await;

    assert_eq!(current.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&current, "etag"), "\"v1\"");
    assert_eq!(current.text().await.expect("body"), "", "a 304 has no body");
    assert_eq!(other.status(), StatusCode::OK);

    // After a change, the old tag no longer matches.
    app.patch(id, &json!({"stock": 1})).await;
    let stale = app.get_product_if_none_match(id, "\"v1\"").await;
    assert_eq!(stale.status(), StatusCode::OK);
    assert_eq!(header(&stale, "etag"), "\"v2\"");
}

#[tokio::test]
async fn get_of_an_unknown_id_returns_404() {
    let app = spawn_app().await;

    let response = app.get_product(4242).await;

    assert_problem(response, 404, "GET unknown id").await;
}

// --- create ------------------------------------------------------------------------------

#[tokio::test]
async fn create_returns_201_with_location_and_the_product_at_version_1() {
    let app = spawn_app().await;
    let body = json!({"sku": "KB-001", "name": "  Mechanical keyboard ", "price_cents": 8999, "stock": 12});

    let response = app.post_product(&body).await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let location = header(&response, "location");
    let product: serde_json::Value = response.json().await.expect("JSON");
    let id = id_of(&product);
    assert!(id > 0, "{product}");
    assert_eq!(location, format!("/api/products/{id}"));
    assert_eq!(product["sku"], "KB-001");
    assert_eq!(product["name"], "Mechanical keyboard", "names are trimmed");
    assert_eq!(product["description"], "", "description defaults to empty");
    assert_eq!(product["category"], "", "category defaults to empty");
    assert_eq!(product["price_cents"], 8999);
    assert_eq!(product["stock"], 12);
    assert_eq!(product["version"], 1);
    let created_at = product["created_at"].as_str().expect("created_at");
    assert!(
        is_rfc3339_utc(created_at),
        "created_at {created_at:?} is RFC 3339 UTC"
    );
    assert_eq!(product["updated_at"], product["created_at"]);
    assert_eq!(app.fetch(id).await, product, "the Location serves it");
}

#[tokio::test]
async fn create_returns_409_when_another_product_has_the_sku() {
    let app = spawn_app().await;
    app.create(&new_product("DUP-1")).await;

    let mut again = new_product("DUP-1");
    again["name"] = json!("Another");
    let response = app.post_product(&again).await;

    assert_field_problem(response, 409, "sku", "duplicate sku").await;
    assert_eq!(app.fetch_page("").await["total"], json!(1));
}

/// A server with product `sku` created and patched once (so at version 2, and `"v1"` is
/// a stale `If-Match`); its id, and the product as read then.
async fn app_with_a_product_at_v2(sku: &str) -> (TestApp, i64, serde_json::Value) {
    let app = spawn_app().await;
    let id = id_of(&app.create(&new_product(sku)).await);
    app.patch(id, &json!({"stock": 3})).await;
    let now = app.fetch(id).await;
    (app, id, now)
}

// --- replace -----------------------------------------------------------------------------

#[tokio::test]
async fn put_replaces_every_writable_field_and_omitted_optional_fields_become_empty() {
    let app = spawn_app().await;
    let created = app.create(&new_product("PUT-1")).await;
    let id = id_of(&created);
    assert_ne!(created["description"], "");
    assert_ne!(created["category"], "");

    let response = app
        .put_product(
            id,
            &json!({"sku": "PUT-1b", "name": "Replaced", "price_cents": 5, "stock": 0}),
            None,
        )
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "etag"), "\"v2\"");
    let product: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(product["id"], id);
    assert_eq!(product["sku"], "PUT-1b");
    assert_eq!(product["name"], "Replaced");
    assert_eq!(product["description"], "");
    assert_eq!(product["category"], "");
    assert_eq!(product["price_cents"], 5);
    assert_eq!(product["stock"], 0);
    assert_eq!(product["version"], 2);
    assert_eq!(product["created_at"], created["created_at"]);
    assert_eq!(app.fetch(id).await, product);
}

#[tokio::test]
async fn put_returns_412_when_if_match_is_stale_and_changes_nothing() {
    let (app, id, before) = app_with_a_product_at_v2("PUT-2").await;

    let response = app
        .put_product(id, &new_product("PUT-2x"), Some("\"v1\""))
        .await;

    assert_problem(response, 412, "stale If-Match on PUT").await;
    assert_eq!(app.fetch(id).await, before);

    let current = app
        .put_product(id, &new_product("PUT-2x"), Some("\"v2\""))
        .await;
    assert_eq!(current.status(), StatusCode::OK);
}

// --- patch -------------------------------------------------------------------------------

#[tokio::test]
async fn patch_changes_only_the_given_fields_and_bumps_the_version_by_one() {
    let app = spawn_app().await;
    let created = app.create(&new_product("PATCH-1")).await;
    let id = id_of(&created);

    let first = app
        .patch_product(id, &json!({"price_cents": 2500}), None)
        .await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(header(&first, "etag"), "\"v2\"");
    let first: serde_json::Value = first.json().await.expect("JSON");
    let second: serde_json::Value = app
        .patch_product(id, &json!({"name": "Renamed", "category": ""}), None)
        .await
        .json()
        .await
        .expect("JSON");

    let mut expected = created.clone();
    expected["price_cents"] = json!(2500);
    expected["version"] = json!(2);
    expected["updated_at"] = first["updated_at"].clone();
    assert_eq!(first, expected);
    expected["name"] = json!("Renamed");
    expected["category"] = json!("");
    expected["version"] = json!(3);
    expected["updated_at"] = second["updated_at"].clone();
    assert_eq!(second, expected);
    assert!(
        second["updated_at"].as_str() >= created["updated_at"].as_str(),
        "updated_at does not go back"
    );
    assert_eq!(app.fetch(id).await, second);
}

#[tokio::test]
async fn patch_returns_412_when_if_match_is_stale_and_changes_nothing() {
    let (app, id, before) = app_with_a_product_at_v2("PATCH-2").await;

    let response = app
        .patch_product(id, &json!({"stock": 1, "name": "Nope"}), Some("\"v1\""))
        .await;

    assert_problem(response, 412, "stale If-Match on PATCH").await;
    let after = app.fetch(id).await;
    assert_eq!(after, before, "nothing changed");
    assert_eq!(after["version"], 2);
}

#[tokio::test]
async fn patch_with_the_current_if_match_succeeds() {
    let app = spawn_app().await;
    let id = id_of(&app.create(&new_product("PATCH-3")).await);

    let response = app
        .patch_product(id, &json!({"stock": 99}), Some("\"v1\""))
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "etag"), "\"v2\"");
    let product: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(product["stock"], 99);
    assert_eq!(product["version"], 2);
}

#[tokio::test]
async fn patch_or_put_to_a_sku_another_product_has_returns_409() {
    let app = spawn_app().await;
    app.create(&new_product("TAKEN")).await;
    let id = id_of(&app.create(&new_product("FREE")).await);
    let before = app.fetch(id).await;

    let patch = app.patch_product(id, &json!({"sku": "TAKEN"}), None).await;
    assert_field_problem(patch, 409, "sku", "PATCH to a taken sku").await;
    let put = app.put_product(id, &new_product("TAKEN"), None).await;
    assert_field_problem(put, 409, "sku", "PUT to a taken sku").await;

    assert_eq!(app.fetch(id).await, before);
}

#[tokio::test]
async fn writes_to_an_unknown_id_return_404() {
    let app = spawn_app().await;

    let put = app.put_product(777, &new_product("GHOST"), None).await;
    assert_problem(put, 404, "PUT unknown id").await;
    let patch = app.patch_product(777, &json!({"stock": 1}), None).await;
    assert_problem(patch, 404, "PATCH unknown id").await;
    let empty_patch = app.patch_product(777, &json!({}), None).await;
    assert_problem(empty_patch, 404, "empty PATCH of an unknown id").await;

    assert_eq!(
        app.fetch_page("").await["total"],
        json!(0),
        "PUT creates nothing"
    );
}

// --- delete ------------------------------------------------------------------------------

#[tokio::test]
async fn delete_returns_204_and_then_the_product_is_gone() {
    let app = spawn_app().await;
    let id = id_of(&app.create(&new_product("DEL-1")).await);

    let response = app.delete_product(id, None).await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(response.text().await.expect("body"), "");
    assert_problem(app.get_product(id).await, 404, "GET after DELETE").await;
    assert_problem(app.delete_product(id, None).await, 404, "DELETE twice").await;
}

#[tokio::test]
async fn delete_of_an_unknown_id_returns_404() {
    let app = spawn_app().await;

    let response = app.delete_product(31337, None).await;

    assert_problem(response, 404, "DELETE unknown id").await;
}

#[tokio::test]
async fn delete_returns_412_when_if_match_is_stale_and_keeps_the_product() {
    let (app, id, _) = app_with_a_product_at_v2("DEL-2").await;

    let stale = app.delete_product(id, Some("\"v1\"")).await;

    assert_problem(stale, 412, "stale If-Match on DELETE").await;
    assert_eq!(app.fetch(id).await["version"], 2, "still there");
    let current = app.delete_product(id, Some("\"v2\"")).await;
    assert_eq!(current.status(), StatusCode::NO_CONTENT);
}

// --- concurrency -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_each_bump_the_version_exactly_once() {
    let app = spawn_app().await;
    crate::flows::concurrent_patches_each_bump_the_version_once(&app).await;
}

/// `2026-11-26T10:00:00Z`: RFC 3339, UTC with `Z`.
fn is_rfc3339_utc(text: &str) -> bool {
    let bytes = text.as_bytes();
    text.len() >= 20
        && text.ends_with('Z')
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes[10] == b'T'
        && bytes[13] == b':'
        && bytes[16] == b':'
}
