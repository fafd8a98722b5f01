//! The real binary, as a separate process, next to a running server.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use integration_tests::api_server_command as command;

use crate::helpers::*;

/// The `api-server` cargo built beside the test, or `None` after a loud notice (a panic
/// in CI).
fn binary(test: &str) -> Option<PathBuf> {
    integration_tests::api_server_or_skip(test)
}

/// Starts `api-server serve` and returns it with its base URL, from its "serving" line.
async fn serve(binary: &Path, env: &[(&str, &str)]) -> (tokio::process::Child, String) {
    let mut command = command(binary);
    command
        .arg("serve")
        .env("BIND", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdout(Stdio::null());
    let started = integration_tests::start_server(command).await;
    (started.child, started.address)
}

async fn run_import(binary: &Path, env: &[(&str, &str)], file: &Path) -> std::process::Output {
    command(binary)
        .arg("import")
        .arg(file)
        .envs(env.iter().copied())
        .output()
        .await
        .expect("the import runs")
}

#[tokio::test]
async fn import_help_documents_the_format_and_the_summary() {
    let Some(binary) = binary("import_help_documents_the_format_and_the_summary") else {
        return;
    };

    let output = command(&binary)
        .args(["import", "--help"])
        .output()
        .await
        .expect("runs");

    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "<FILE>",
        "--dry-run",
        ".jsonl",
        "header row",
        "sku,name,description,price_cents,stock,category",
        "line N: field: reason",
        "created N, updated N, unchanged N, failed N",
        "DATABASE_URL",
    ] {
        assert!(help.contains(needle), "{needle:?} in:\n{help}");
    }
}

#[tokio::test]
async fn the_import_binary_changes_what_a_running_server_serves_at_once() {
    let test = "the_import_binary_changes_what_a_running_server_serves_at_once";
    let Some(binary) = binary(test) else {
        return;
    };
    let Some((redis_url, _redis)) = integration_tests::redis_url_or_skip(test).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let database_url = integration_tests::sqlite_url(dir.path(), "products.db");
    let prefix = integration_tests::unique_prefix("import_binary");
    let token = format!("import-{:032x}", rand::random::<u128>());
    let env = [
        ("DATABASE_URL", database_url.as_str()),
        ("REDIS_URL", redis_url.as_str()),
        ("CACHE_PREFIX", prefix.as_str()),
        ("API_TOKEN", token.as_str()),
    ];
    let (mut server, base) = serve(&binary, &env).await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let created: serde_json::Value = http
        .post(format!("{base}/api/products"))
        .bearer_auth(&token)
        .json(&serde_json::json!({
            "sku": "KB-1", "name": "Keyboard", "price_cents": 100, "stock": 1
        }))
        .send()
        .await
        .expect("POST answers")
        .json()
        .await
        .expect("JSON");
    let product_url = format!("{base}/api/products/{}", created["id"]);
    let list_url = format!("{base}/api/products?page=1&per_page=20");
    let get = |url: String| {
        let http = http.clone();
        async move {
            http.get(url)
                .send()
                .await
                .expect("GET answers")
                .json::<serde_json::Value>()
                .await
                .expect("JSON")
        }
    };
    // Warm the product and the list page in Redis.
    for _ in 0..2 {
        assert_eq!(get(product_url.clone()).await["price_cents"], 100);
        assert_eq!(get(list_url.clone()).await["total"], 1);
    }
    let files = Files::new();
    let path = files.csv("products.csv", "KB-1,,,250,,\nKB-2,Mouse,,300,2,mice\n");

    let output = run_import(&binary, &env, &path).await;

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}\n{stderr}", output.status);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "created 1, updated 1, unchanged 0, failed 0"
    );
    let product = get(product_url.clone()).await;
    assert_eq!(
        (&product["price_cents"], &product["version"]),
        (&serde_json::json!(250), &serde_json::json!(2)),
        "the server shows the import at once"
    );
    let page = get(list_url.clone()).await;
    assert_eq!(page["total"], 2, "{page}");
    assert_eq!(page["items"][0]["price_cents"], 250, "{page}");
    assert_eq!(page["items"][1]["sku"], "KB-2", "{page}");

    // A bad row: reported, the rest applied, a non-zero exit.
    let bad = files.csv("bad.csv", "KB-2,,,x,,\nKB-1,,,260,,\n");
    let output = run_import(&binary, &env, &bad).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "a failed row fails the exit status"
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "created 0, updated 1, unchanged 0, failed 1"
    );
    assert!(
        stderr.contains("line 2: price_cents: must be an integer"),
        "{stderr}"
    );
    assert_eq!(get(product_url.clone()).await["price_cents"], 260);

    // An unknown column: an error naming it, nothing written.
    let unknown = files.write("unknown.csv", "sku,price_cents,colour\nKB-1,999,red\n");
    let output = run_import(&binary, &env, &unknown).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("\"colour\""), "{stderr}");
    assert_eq!(get(product_url).await["price_cents"], 260);

    server.start_kill().expect("the server stops");
    let _ = server.wait().await;
}
