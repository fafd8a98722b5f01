//! A server killed (SIGKILL) between a write's commit and its invalidation: after a
//! restart, no stale value is served, because the outbox row committed with the write
//! still owes the invalidation.

use std::process::Stdio;
use std::time::Duration;

use fred::prelude::KeysInterface;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::process::Child;
use tokio::sync::mpsc;

use super::binary::{PATIENCE, binary, command, sqlite_url, terminate};

const TOKEN: &str = "crash-test-token";

struct Server {
    child: Child,
    base: String,
    stderr: mpsc::UnboundedReceiver<String>,
}

/// Starts the real binary on a free port against `dir`'s SQLite file and `redis_url`,
/// optionally with the test-only pause between commit and invalidation.
async fn start(
    binary: &std::path::Path,
    dir: &TempDir,
    redis_url: &str,
    prefix: &str,
    fault: bool,
) -> Server {
    let mut command = command(binary);
    command
        .env("BIND", "127.0.0.1:0")
        .env("DATABASE_URL", sqlite_url(dir))
        .env("REDIS_URL", redis_url)
        .env("CACHE_PREFIX", prefix)
        .env("API_TOKEN", TOKEN)
        .stdout(Stdio::null());
    if fault {
        command.env("API_SERVER_TEST_PAUSE_AFTER_COMMIT", "1");
    }
    let started = integration_tests::start_server(command).await;
    let fault_on = started.log.iter().any(|l| l.contains("fault injection on"));
    assert!(
        fault_on || !fault,
        "this api-server ignores API_SERVER_TEST_PAUSE_AFTER_COMMIT: it was built without the \
         `fault-injection` feature (`cargo test --workspace` builds it with it)"
    );
    Server {
        child: started.child,
        base: started.address,
        stderr: started.stderr,
    }
}

async fn sigkill(child: &mut Child) {
    integration_tests::binary::send_signal(child, "KILL").await;
    child.wait().await.expect("reaped");
}

#[tokio::test]
async fn a_server_killed_between_commit_and_invalidation_serves_no_stale_value_after_restart() {
    let Some(binary) = binary() else { return };
    let Some(redis) = integration_tests::redis_server_or_skip("crash_after_commit").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = integration_tests::unique_prefix("crash");
    let http = reqwest::Client::new();

    // A healthy server creates and caches the product at v1.
    let mut first = start(&binary, &dir, &redis.url(), &prefix, false).await;
    let created = integration_tests::binary::create_product(
        &http,
        &first.base,
        TOKEN,
        &json!({"sku": "CRASH-1", "name": "Old", "price_cents": 100, "stock": 1}),
    )
    .await;
    let id = created["id"].as_i64().expect("id");
    let product_url = format!("{}/api/products/{id}", first.base);
    for _ in 0..2 {
        http.get(&product_url).send().await.expect("GET");
    }
    assert!(terminate(&mut first.child).await.success());

    // A server with the fault hook commits a PATCH, then hangs before invalidating; it is
    // killed right there.
    let mut faulty = start(&binary, &dir, &redis.url(), &prefix, true).await;
    let patch = {
        let url = format!("{}/api/products/{id}", faulty.base);
        let http = http.clone();
        tokio::spawn(async move {
            http.patch(url)
                .bearer_auth(TOKEN)
                .json(&json!({"price_cents": 200}))
                .send()
                .await
        })
    };
    let paused = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = faulty.stderr.recv().await {
            if line.contains("fault injection: product") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(paused, "the write paused after its commit");
    sigkill(&mut faulty.child).await;
    assert!(
        patch.await.expect("task").is_err(),
        "the client never got an answer"
    );

    let redis_client = integration_tests::redis_client(&redis.url())
        .await
        .expect("client");
    let stale: i64 = redis_client
        .exists(format!("{prefix}:product:{{{id}}}"))
        .await
        .expect("EXISTS");
    assert_eq!(
        stale, 1,
        "the invalidation was really lost: the v1 entry is still in Redis"
    );

    // The next start applies what the outbox owes before serving.
    let mut next = start(&binary, &dir, &redis.url(), &prefix, false).await;
    for _ in 0..3 {
        let read: Value = http
            .get(format!("{}/api/products/{id}", next.base))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("JSON");
        assert_eq!(
            read["price_cents"], 200,
            "no stale value after the restart: {read}"
        );
        assert_eq!(read["version"], 2);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(terminate(&mut next.child).await.success());
}
