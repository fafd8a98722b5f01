//! `/api/jobs`: a reprice job changes prices through the same write path as HTTP, so
//! the reads that follow it see every change, cached or not.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, assert_field_problem, assert_problem, header, id_of, send, spawn_app,
    spawn_app_with_redis,
};

/// `POST /api/jobs/reprice` with the token.
async fn start_reprice(app: &TestApp, body: &Value) -> reqwest::Response {
    send(app.authed(Method::POST, "/api/jobs/reprice").json(body)).await
}

/// Polls `GET /api/jobs/{id}` until the job is no longer queued or running.
async fn finished_job(app: &TestApp, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = app.get(&format!("/api/jobs/{id}")).await;
        assert_eq!(response.status(), StatusCode::OK, "GET /api/jobs/{id}");
        let job: Value = response.json().await.expect("JSON");
        if job["status"] != "queued" && job["status"] != "running" {
            return job;
        }
        assert!(Instant::now() < deadline, "the job did not finish: {job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_reprice_job_is_seen_by_the_next_cached_reads() {
    let Some(app) = spawn_app_with_redis().await else {
        return;
    };
    let mice = app.create_many("MOUSE", 2, "mice").await;
    let keyboards = app.create_many("KEYB", 1, "keyboards").await;
    for _ in 0..2 {
        for product in mice.iter().chain(&keyboards) {
            app.fetch(id_of(product)).await;
        }
        app.fetch_page("").await;
        app.fetch_page("category=mice").await;
    }

    let response = start_reprice(&app, &json!({"category": "mice", "percent": 10})).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = header(&response, "location");
    let queued: Value = response.json().await.expect("JSON");
    let job_id = queued["id"].as_str().expect("a job id").to_owned();
    assert_eq!(queued["status"], "queued");
    assert_eq!(location, format!("/api/jobs/{job_id}"));
    let job = finished_job(&app, &job_id).await;

    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["matched"], 2, "{job}");
    assert_eq!(job["updated"], 2, "{job}");
    // 1999 cents + 10% = 2198.9, rounded to the nearest cent.
    for mouse in &mice {
        let product = app.fetch(id_of(mouse)).await;
        assert_eq!(product["price_cents"], 2199, "{product}");
        assert_eq!(product["version"], 2, "{product}");
    }
    let keyboard = app.fetch(id_of(&keyboards[0])).await;
    assert_eq!(keyboard, keyboards[0], "another category is untouched");
    let page = app.fetch_page("category=mice").await;
    for item in page["items"].as_array().expect("items") {
        assert_eq!(item["price_cents"], 2199, "list after the job: {item}");
    }
}

#[tokio::test]
async fn bad_reprice_requests_are_400s_naming_the_field_and_need_a_token() {
    let app = spawn_app().await;
    let cases = [
        (json!({"percent": -91}), "percent"),
        (json!({"percent": 1001}), "percent"),
        // One ulp past either bound: the JSON parser must not round it back inside.
        (json!({"percent": 1000.0000000000001}), "percent"),
        (json!({"percent": -90.00000000000001}), "percent"),
        (json!({"percent": 5, "category": 3}), "category"),
        (
            json!({"percent": 5, "category": "c".repeat(101)}),
            "category",
        ),
        (json!({"percent": 5, "colour": "red"}), "colour"),
    ];

    for (body, field) in cases {
        let response = start_reprice(&app, &body).await;
        assert_field_problem(response, 400, field, &body.to_string()).await;
    }
    let anonymous = send(
        app.request(Method::POST, "/api/jobs/reprice")
            .json(&json!({"percent": 5})),
    )
    .await;
    assert_problem(anonymous, 401, "reprice without a token").await;
}

#[tokio::test]
async fn a_reprice_request_with_a_mistyped_or_missing_percent_is_a_400_naming_it() {
    let app = spawn_app().await;
    let cases = [
        json!({"percent": "10"}),
        json!({"percent": true}),
        json!({"percent": null}),
        json!({"category": "x"}),
    ];

    for body in cases {
        let response = start_reprice(&app, &body).await;
        assert_field_problem(response, 400, "percent", &body.to_string()).await;
    }
}

#[tokio::test]
async fn an_unknown_job_is_404() {
    let app = spawn_app().await;

    let response = app.get("/api/jobs/no-such-job").await;

    let status = response.status().as_u16();
    assert!([400, 404].contains(&status), "an unknown job: {status}");
    assert_problem(response, status, "unknown job").await;
}
