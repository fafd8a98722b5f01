//! Errors: authentication and the problem format (bad input is in `bad_input`).

use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::bad_input::oversized_product;
use crate::helpers::{assert_problem, header_or_empty, id_of, new_product, send, spawn_app};

// --- authentication ----------------------------------------------------------------------

/// Every write, as `(method, path, body)`, against product `id` (and a reprice job).
fn writes(id: i64) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (
            Method::POST,
            "/api/products".to_owned(),
            Some(new_product("AUTH-new")),
        ),
        (
            Method::PUT,
            format!("/api/products/{id}"),
            Some(new_product("AUTH-put")),
        ),
        (
            Method::PATCH,
            format!("/api/products/{id}"),
            Some(json!({"stock": 0})),
        ),
        (Method::DELETE, format!("/api/products/{id}"), None),
        (
            Method::POST,
            "/api/jobs/reprice".to_owned(),
            Some(json!({"percent": 10})),
        ),
    ]
}

async fn assert_unauthorized(response: reqwest::Response, context: &str) {
    let challenge = header_or_empty(&response, WWW_AUTHENTICATE);
    assert_problem(response, 401, context).await;
    assert!(
        challenge.starts_with("Bearer"),
        "{context}: WWW-Authenticate is {challenge:?}"
    );
}

#[tokio::test]
async fn writes_without_a_token_return_401_with_a_bearer_challenge_and_change_nothing() {
    let app = spawn_app().await;
    let product = app.create(&new_product("AUTH-1")).await;
    let id = id_of(&product);

    for (method, path, body) in writes(id) {
        let context = format!("{method} {path} without a token");
        let mut request = app.request(method, &path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        assert_unauthorized(send(request).await, &context).await;
    }

    assert_eq!(app.fetch(id).await, product, "the product is unchanged");
    assert_eq!(app.fetch_page("").await["total"], 1, "nothing was created");
}

#[tokio::test]
async fn writes_with_a_wrong_token_return_401() {
    let app = spawn_app().await;
    let product = app.create(&new_product("AUTH-2")).await;
    let id = id_of(&product);
    let almost = app.token[..app.token.len() - 1].to_owned();
    let wrong_credentials = [
        "Bearer wrong".to_owned(),
        format!("Bearer {almost}"),
        format!("Bearer {}x", app.token),
        format!("Basic {}", app.token),
        format!("Bearer {}", app.token.to_uppercase()),
        "Bearer".to_owned(),
        app.token.clone(),
    ];

    for credentials in &wrong_credentials {
        for (method, path, body) in writes(id) {
            let context = format!("{method} {path} with Authorization: {credentials:?}");
            let mut request = app
                .request(method, &path)
                .header(AUTHORIZATION, credentials);
            if let Some(body) = body {
                request = request.json(&body);
            }
            assert_unauthorized(send(request).await, &context).await;
        }
    }

    assert_eq!(app.fetch(id).await, product, "the product is unchanged");
}

#[tokio::test]
async fn reads_need_no_token() {
    let app = spawn_app().await;
    let id = id_of(&app.create(&new_product("AUTH-3")).await);

    for path in [
        "/api/products".to_owned(),
        format!("/api/products/{id}"),
        "/health".to_owned(),
        "/metrics".to_owned(),
        "/openapi.json".to_owned(),
        "/docs".to_owned(),
    ] {
        let response = app.get(&path).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    }
}

// --- the problem format ------------------------------------------------------------------

#[tokio::test]
async fn every_4xx_is_an_rfc_9457_problem() {
    let app = spawn_app().await;
    let id = id_of(&app.create(&new_product("PROB-1")).await);
    let path = format!("/api/products/{id}");

    let cases: Vec<(u16, &str, reqwest::RequestBuilder)> = vec![
        (
            400,
            "bad body",
            app.authed(Method::POST, "/api/products")
                .json(&json!({"sku": 1})),
        ),
        (
            400,
            "bad query",
            app.request(Method::GET, "/api/products?page=0"),
        ),
        (400, "bad id", app.request(Method::GET, "/api/products/abc")),
        (401, "no token", app.request(Method::DELETE, &path)),
        (
            404,
            "unknown product",
            app.request(Method::GET, "/api/products/999"),
        ),
        (
            404,
            "unknown route",
            app.request(Method::GET, "/no/such/route"),
        ),
        (405, "wrong method", app.request(Method::POST, "/health")),
        (
            409,
            "duplicate sku",
            app.authed(Method::POST, "/api/products")
                .json(&new_product("PROB-1")),
        ),
        (
            412,
            "stale If-Match",
            app.authed(Method::DELETE, &path)
                .header("If-Match", "\"v5\""),
        ),
        (
            413,
            "body over 1 MiB",
            app.authed(Method::POST, "/api/products")
                .json(&oversized_product()),
        ),
    ];
    for (status, context, request) in cases {
        assert_problem(send(request).await, status, context).await;
    }
}
