//! Metrics count each request once. Alone in its test binary: the metrics recorder is
//! process-wide, and this test asserts exact deltas.

use std::time::Duration;

use api_server::{Application, Settings};
use integration_tests::{redis_server_or_skip, unique_prefix};
use serde_json::{Value, json};

/// The value of `name{labels}` in Prometheus text, 0 when absent.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .find(|line| {
            labels
                .iter()
                .all(|(key, value)| line.contains(&format!("{key}=\"{value}\"")))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

/// A miss whose lease then fails used to be counted twice: `miss`, then `error`.
#[tokio::test]
async fn a_miss_whose_lease_fails_is_counted_once() {
    let Some(redis) = redis_server_or_skip("metrics_counted_once").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = Settings {
        bind: "127.0.0.1:0".parse().expect("address"),
        database_url: integration_tests::sqlite_url(dir.path(), "m.db"),
        redis_url: Some(redis.url()),
        cache_prefix: unique_prefix("metrics_once"),
        cache_ttl_secs: 300,
        cache_max_entries: 1_000,
        api_token: Some("t".into()),
        ..api_server::Settings::default()
    };
    let app = Application::build(&settings).await.expect("builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let server = tokio::spawn(app.run_until(std::future::pending()));
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let mut ready = false;
    for _ in 0..200 {
        let health: Value = match http.get(format!("{base}/health")).send().await {
            Ok(response) => response.json().await.unwrap_or_default(),
            Err(_) => Value::Null,
        };
        if health["cache"] == "ok" {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "the cache is ready");
    let created = integration_tests::binary::create_product(
        &http,
        &base,
        "t",
        &json!({"sku": "ONCE-1", "name": "Once", "price_cents": 1, "stock": 1}),
    )
    .await;
    let id = created["id"].as_i64().expect("id");

    // Scripts are refused, plain GETs are not: the read misses, then its lease fails.
    redis
        .command(&["ACL", "SETUSER", "default", "-eval", "-evalsha"])
        .expect("ACL SETUSER");
    let metrics = || async {
        http.get(format!("{base}/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("text")
    };
    let requests = |text: &str| {
        ["hit", "miss", "error"]
            .iter()
            .map(|result| {
                metric(
                    text,
                    "cache_requests_total",
                    &[("namespace", "product"), ("result", result)],
                )
            })
            .sum::<f64>()
    };
    let before = requests(&metrics().await);
    let read = http
        .get(format!("{base}/api/products/{id}"))
        .send()
        .await
        .expect("GET");
    assert_eq!(read.status(), 200, "served from the database");
    let after = requests(&metrics().await);
    assert_eq!(after - before, 1.0, "one read, one count");
    server.abort();
}
