//! `/health`, `/metrics`, `/openapi.json`, `/docs`, and shutting down.

use std::time::Duration;

use integration_tests::wait_until;
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

use crate::helpers::{
    header, header_or_empty, id_of, metric, new_product, spawn_app, spawn_app_adjusted,
    spawn_app_with_redis,
};

#[tokio::test]
async fn health_reports_ok_for_the_database_and_the_memory_cache() {
    let app = spawn_app().await;

    let response = app.health().await;

    assert_eq!(response.status(), StatusCode::OK);
    assert!(header(&response, "content-type").starts_with("application/json"));
    let health: Value = response.json().await.expect("JSON");
    assert_eq!(
        health,
        json!({"status": "ok", "database": "ok", "cache": "ok"})
    );
}

#[tokio::test]
async fn health_reports_ok_for_the_database_and_redis() {
    let Some(app) = spawn_app_with_redis().await else {
        return;
    };

    let response = app.health().await;

    assert_eq!(response.status(), StatusCode::OK);
    let health: Value = response.json().await.expect("JSON");
    assert_eq!(
        health,
        json!({"status": "ok", "database": "ok", "cache": "ok"})
    );
}

/// The metric names the contract fixes (README's Metrics table), with their types.
const CONTRACT_METRICS: &[(&str, &str)] = &[
    ("cache_requests_total", "counter"),
    ("cache_loads_total", "counter"),
    ("cache_invalidations_total", "counter"),
    ("http_requests_total", "counter"),
    ("http_request_duration_seconds", "histogram"),
];

#[tokio::test]
async fn metrics_show_the_contract_metrics_after_some_traffic() {
    let app = spawn_app().await;
    let id = id_of(&app.create(&new_product("MET-1")).await);
    app.fetch(id).await;
    app.fetch(id).await;
    app.fetch_page("").await;
    app.fetch_page("").await;
    app.patch(id, &json!({"stock": 1})).await;

    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        header(&response, "content-type").starts_with("text/plain"),
        "Prometheus text"
    );
    let text = response.text().await.expect("text");

    for (name, kind) in CONTRACT_METRICS {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}")),
            "`# TYPE {name} {kind}` in /metrics:\n{text}"
        );
    }
    for namespace in ["product", "product_list"] {
        for result in ["hit", "miss"] {
            assert!(
                metric(
                    &text,
                    "cache_requests_total",
                    &[("namespace", namespace), ("result", result)]
                ) >= 1.0,
                "cache_requests_total{{namespace={namespace},result={result}}}"
            );
        }
        assert!(
            metric(&text, "cache_loads_total", &[("namespace", namespace)]) >= 1.0,
            "cache_loads_total{{namespace={namespace}}}"
        );
        assert!(
            metric(
                &text,
                "cache_invalidations_total",
                &[("namespace", namespace)]
            ) >= 1.0,
            "cache_invalidations_total{{namespace={namespace}}}"
        );
    }
    assert!(
        metric(
            &text,
            "http_request_duration_seconds_count",
            &[("method", "GET"), ("path", "/api/products/{id}")]
        ) >= 2.0
    );
    assert!(
        !text.contains(&format!("path=\"/api/products/{id}\"")),
        "paths are labelled by route template, not by id"
    );
}

#[tokio::test]
async fn metrics_show_the_invalidation_backlog_gauge() {
    let app = spawn_app().await;
    let id = id_of(&app.create(&new_product("MET-2")).await);
    app.patch(id, &json!({"stock": 1})).await;

    // The outbox relay reports the backlog on each pass; give it a few.
    wait_until(Duration::from_secs(10), async || {
        let text = app.metrics().await;
        if text.contains("# TYPE cache_invalidation_backlog gauge") {
            Ok(())
        } else {
            Err(format!("no cache_invalidation_backlog gauge in:\n{text}"))
        }
    })
    .await;
}

/// The server runs the invalidation auditor (`CACHE_AUDIT_INTERVAL_MS`): it compares the
/// cached product with its row, and its counters are served; nothing is stale.
#[tokio::test]
async fn the_auditor_runs_in_the_server_and_its_counters_are_served() {
    let app = spawn_app_adjusted(|settings| settings.cache_audit_interval_ms = 10).await;
    let id = id_of(&app.create(&new_product("AUDIT-1")).await);
    for _ in 0..2 {
        assert_eq!(app.get_product(id).await.status(), StatusCode::OK);
    }

    let product = [("namespace", "product")];
    let text = wait_until(Duration::from_secs(10), async || {
        let text = app.metrics().await;
        if metric(&text, "cache_audit_checks_total", &product) >= 1.0 {
            Ok(text)
        } else {
            Err(format!("the auditor compared the cached product:\n{text}"))
        }
    })
    .await;
    assert_eq!(
        metric(&text, "cache_audit_mismatches_total", &product),
        0.0,
        "no stale entry:\n{text}"
    );
}

#[tokio::test]
async fn http_requests_are_counted_by_method_route_template_and_status() {
    let app = spawn_app().await;
    let labels = [
        ("method", "GET"),
        ("path", "/api/products/{id}"),
        ("status", "404"),
    ];
    let before = metric(&app.metrics().await, "http_requests_total", &labels);

    for id in [9001, 9002, 9003] {
        assert_eq!(app.get_product(id).await.status(), StatusCode::NOT_FOUND);
    }

    let after = metric(&app.metrics().await, "http_requests_total", &labels);
    assert!(after - before >= 3.0, "{before} → {after}");
}

#[tokio::test]
async fn the_openapi_document_lists_every_path_and_a_bearer_scheme_on_writes_only() {
    let app = spawn_app().await;

    let doc = app.openapi().await;

    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "an OpenAPI 3 document: {}",
        doc["openapi"]
    );
    // "Try it out" must call this server: no `servers`, or only relative ones.
    if let Some(servers) = doc["servers"].as_array() {
        for server in servers {
            let url = server["url"].as_str().unwrap_or_default();
            assert!(url.starts_with('/'), "server {url:?} is not this server");
        }
    }
    let paths = doc["paths"].as_object().expect("paths");
    for path in [
        "/api/products",
        "/api/products/{id}",
        "/api/jobs/reprice",
        "/api/jobs/{id}",
        "/health",
        "/metrics",
    ] {
        assert!(paths.contains_key(path), "{path} in {:?}", paths.keys());
    }
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes");
    let bearer: Vec<&String> = schemes
        .iter()
        .filter(|(_, s)| s["type"] == "http" && s["scheme"] == "bearer")
        .map(|(name, _)| name)
        .collect();
    assert_eq!(bearer.len(), 1, "one bearer scheme in {schemes:?}");
    let bearer = bearer[0];

    let mut operations = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("a path item") {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            operations += 1;
            let secured = operation["security"].as_array().is_some_and(|list| {
                list.iter()
                    .any(|requirement| requirement.get(bearer.as_str()).is_some())
            });
            let is_write = method != "get";
            assert_eq!(
                secured, is_write,
                "{method} {path}: bearer auth only on writes"
            );
            assert!(
                operation["summary"].is_string() || operation["description"].is_string(),
                "{method} {path} is documented"
            );
        }
    }
    assert!(operations >= 10, "{operations} operations");

    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for schema in ["Product", "ProductPage", "Problem"] {
        assert!(
            schemas.contains_key(schema),
            "{schema} in {:?}",
            schemas.keys()
        );
    }
    let not_found = &paths["/api/products/{id}"]["get"]["responses"]["404"]["content"];
    assert!(
        not_found.get("application/problem+json").is_some(),
        "errors are documented as problems: {not_found}"
    );
    let created = &paths["/api/products"]["post"]["responses"];
    for status in ["201", "400", "401", "409"] {
        assert!(created.get(status).is_some(), "POST documents {status}");
    }
}

#[tokio::test]
async fn docs_serve_the_swagger_ui() {
    let app = spawn_app().await;

    for path in ["/docs", "/docs/"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        let content_type = header_or_empty(&response, CONTENT_TYPE);
        assert!(
            content_type.starts_with("text/html"),
            "{path}: {content_type}"
        );
        let html = response.text().await.expect("HTML");
        assert!(
            html.to_lowercase().contains("swagger"),
            "{path} is Swagger UI"
        );
    }
}

#[tokio::test]
async fn the_server_stops_cleanly_when_asked() {
    let app = spawn_app().await;
    let address = app.address.clone();
    assert_eq!(app.health().await.status(), StatusCode::OK);

    let stopped = app.stop().await;

    assert_eq!(stopped, Ok(()), "run_until returns Ok");
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    assert!(
        client
            .get(format!("{address}/health"))
            .send()
            .await
            .is_err(),
        "nothing listens any more"
    );
}
