//! The real `api-server` executable: subcommands, the generated token, SIGTERM.
//!
//! The binary is found by [`integration_tests::binary`]; without it these tests print a
//! notice and pass (they panic in CI).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

pub(super) use integration_tests::api_server_command as command;
pub(super) use integration_tests::binary::PATIENCE;
use integration_tests::start_server;
use reqwest::StatusCode;
use reqwest::header::AUTHORIZATION;
use tempfile::TempDir;
use tokio::process::Child;
use tokio::sync::mpsc;

use crate::helpers::{id_of, new_product, spawn_app_with_redis};
use integration_tests::test_name;

/// The `api-server` executable, or `None` after a loud notice (a panic in CI).
pub(super) fn binary() -> Option<PathBuf> {
    integration_tests::api_server_or_skip(&test_name())
}

pub(super) fn sqlite_url(dir: &TempDir) -> String {
    integration_tests::sqlite_url(dir.path(), "products.db")
}

#[tokio::test]
async fn migrate_applies_the_migrations_and_exits_0_every_time() {
    let Some(binary) = binary() else { return };
    let dir = tempfile::tempdir().expect("a temporary directory");

    for run in ["first", "second"] {
        let output = command(&binary)
            .arg("migrate")
            .env("DATABASE_URL", sqlite_url(&dir))
            .output()
            .await
            .expect("runs");
        assert!(
            output.status.success(),
            "{run} run: {:?}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert!(
        dir.path().join("products.db").is_file(),
        "the database exists"
    );
}

#[tokio::test]
async fn with_log_format_json_every_log_line_is_a_json_object() {
    let Some(binary) = binary() else { return };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let output = command(&binary)
        .arg("migrate")
        .env("DATABASE_URL", sqlite_url(&dir))
        .env("LOG_FORMAT", "json")
        .output()
        .await
        .expect("runs");
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "migrating logs something");
    for line in lines {
        let parsed: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
        assert!(parsed["level"].is_string(), "{line}");
    }
}

/// A running `api-server serve` and its output, line by line.
struct Served {
    child: Child,
    address: String,
    stdout: mpsc::UnboundedReceiver<String>,
}

impl Served {
    /// The status of `GET /health`.
    async fn health(&self) -> StatusCode {
        client()
            .get(format!("{}/health", self.address))
            .send()
            .await
            .expect("answers")
            .status()
    }

    /// The status of a `POST /api/products` of product `sku` with bearer `token`.
    async fn post_product(&self, token: &str, sku: &str) -> StatusCode {
        client()
            .post(format!("{}/api/products", self.address))
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .json(&new_product(sku))
            .send()
            .await
            .expect("answers")
            .status()
    }
}

/// An HTTP client that ignores proxy settings (the server is local).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// Starts `api-server` (no subcommand: `serve` is the default) on a free port with a
/// fresh SQLite database, and waits for its "serving" log line.
async fn serve(binary: &Path, dir: &TempDir, token: Option<&str>) -> Served {
    let mut command = command(binary);
    command
        .env("BIND", "127.0.0.1:0")
        .env("DATABASE_URL", sqlite_url(dir))
        .env("CACHE_PREFIX", integration_tests::unique_prefix("binary"))
        .stdout(Stdio::piped());
    if let Some(token) = token {
        command.env("API_TOKEN", token);
    }
    let started = start_server(command).await;
    Served {
        child: started.child,
        address: started.address,
        stdout: started.stdout.expect("stdout is piped"),
    }
}

/// Sends SIGTERM (with the `kill` command) and waits for the exit status.
pub(super) async fn terminate(child: &mut Child) -> std::process::ExitStatus {
    integration_tests::binary::send_signal(child, "TERM").await;
    tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("the server exits after SIGTERM")
        .expect("exit status")
}

async fn remaining_lines(rx: &mut mpsc::UnboundedReceiver<String>) -> Vec<String> {
    let mut lines = Vec::new();
    while let Ok(Some(line)) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
        lines.push(line);
    }
    lines
}

#[tokio::test]
async fn without_api_token_serve_prints_a_generated_token_once_and_sigterm_exits_0() {
    let Some(binary) = binary() else { return };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut served = serve(&binary, &dir, None).await;
    let first = tokio::time::timeout(PATIENCE, served.stdout.recv())
        .await
        .ok()
        .flatten()
        .expect("a line on stdout");
    let token = first
        .rsplit(' ')
        .next()
        .filter(|t| t.len() >= 32)
        .unwrap_or_else(|| panic!("a token at the end of {first:?}"))
        .to_owned();

    assert_eq!(served.health().await, StatusCode::OK);
    assert_eq!(
        served.post_product(&token, "BIN-1").await,
        StatusCode::CREATED,
        "the printed token works"
    );
    assert_eq!(
        served.post_product("not-the-token", "BIN-2").await,
        StatusCode::UNAUTHORIZED
    );

    let status = terminate(&mut served.child).await;

    assert!(status.success(), "SIGTERM exits 0, not {status:?}");
    let mut stdout = vec![first];
    stdout.extend(remaining_lines(&mut served.stdout).await);
    let printed = stdout.iter().filter(|line| line.contains(&token)).count();
    assert_eq!(printed, 1, "the token is printed once: {stdout:?}");
}

#[tokio::test]
async fn with_api_token_serve_uses_it_and_never_prints_it() {
    let Some(binary) = binary() else { return };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let token = format!("chosen-{:032x}", rand::random::<u128>());
    let mut served = serve(&binary, &dir, Some(&token)).await;

    assert_eq!(
        served.post_product(&token, "BIN-3").await,
        StatusCode::CREATED
    );

    let status = terminate(&mut served.child).await;

    assert!(status.success(), "SIGTERM exits 0, not {status:?}");
    let stdout = remaining_lines(&mut served.stdout).await;
    assert!(
        stdout.iter().all(|line| !line.contains(&token)),
        "the token is never printed: {stdout:?}"
    );
}

#[tokio::test]
async fn an_import_by_the_binary_is_seen_by_a_running_servers_next_cached_reads() {
    let Some(binary) = binary() else { return };
    let Some(app) = spawn_app_with_redis().await else {
        return;
    };
    let existing = app.create(&new_product("IMP-1")).await;
    let id = id_of(&existing);
    for _ in 0..2 {
        app.fetch(id).await;
        app.fetch_page("").await;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("products.csv");
    std::fs::write(
        &file,
        "sku,name,price_cents,stock,category\n\
         IMP-1,Imported name,1234,,\n\
         IMP-2,Brand new,500,3,imported\n\
         bad sku!,Broken,1,1,\n",
    )
    .expect("the CSV is written");

    let output = command(&binary)
        .arg("import")
        .arg(&file)
        .env("DATABASE_URL", &app.database_url)
        .env("REDIS_URL", app.redis_url.as_deref().expect("Redis"))
        .env("CACHE_PREFIX", &app.prefix)
        .output()
        .await
        .expect("runs");

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stdout.contains("created 1, updated 1, unchanged 0, failed 1"),
        "the summary on stdout: {stdout}\n{stderr}"
    );
    assert!(stderr.contains("line 4"), "the bad row's line: {stderr}");
    assert!(
        !output.status.success(),
        "a failed row makes the exit code non-zero"
    );
    let updated = app.fetch(id).await;
    assert_eq!(updated["name"], "Imported name", "{updated}");
    assert_eq!(updated["price_cents"], 1234, "{updated}");
    assert_eq!(
        updated["stock"], existing["stock"],
        "an empty cell keeps the value"
    );
    assert_eq!(updated["version"], 2, "{updated}");
    let page = app.fetch_page("").await;
    assert_eq!(
        page["total"], 2,
        "the list shows the created product: {page}"
    );
    assert_eq!(page["items"][0], updated);
}
