//! The demo binary and the README: what `examples/README.md` tells a reader to run and
//! to copy is what the crate does.

use std::process::{Command, Output};

use integration_tests::{postgres_url_or_skip, redis_server_or_skip};

const README: &str = include_str!("../../README.md");
const SOURCES: [&str; 3] = [
    include_str!("../../src/service.rs"),
    include_str!("../../src/schema.rs"),
    include_str!("../../src/domain.rs"),
];

/// Runs the demo binary with `args` and none of its settings from the environment.
fn demo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orders-example"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("CACHE_PREFIX")
        .output()
        .expect("the demo binary runs")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "the demo succeeds: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("UTF-8")
}

#[test]
fn the_demo_prints_what_the_readme_shows() {
    let printed = stdout(&demo(&[]));
    assert!(
        printed.starts_with("database SQLite, in-process cache\n"),
        "{printed}"
    );
    assert!(
        README.contains(&printed),
        "README shows the demo's output verbatim; it printed:\n{printed}"
    );
}

#[tokio::test]
async fn the_demo_runs_on_postgresql_and_redis() {
    let Some(database) = postgres_url_or_skip("orders_demo_postgres").await else {
        return;
    };
    let Some(redis) = redis_server_or_skip("orders_demo_postgres").await else {
        return;
    };
    let output = demo(&[
        "--database-url",
        database.url(),
        "--redis-url",
        &redis.url(),
    ]);
    let printed = stdout(&output);
    let sqlite = stdout(&demo(&[]));
    assert_eq!(
        printed.replace(
            "database PostgreSQL, Redis cache",
            "database SQLite, in-process cache"
        ),
        sqlite,
        "the same story on PostgreSQL and Redis"
    );
}

#[test]
fn bad_input_to_the_demo_is_an_error_naming_the_field() {
    let output = demo(&["--customer", "0"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("customer_id: must be 1 or more"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Every code line of README's "twenty lines" block appears in the crate's sources, so
/// the block cannot drift from what the crate compiles.
#[test]
fn the_readmes_twenty_lines_are_the_crates_own() {
    let start = README
        .find("<!-- twenty-lines -->")
        .expect("README marks the twenty lines");
    let block = &README[start..];
    let body_start = block.find("```rust\n").expect("a rust block") + "```rust\n".len();
    let body = &block[body_start..];
    let body = &body[..body.find("```").expect("the block ends")];
    let lines: Vec<&str> = body
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("//"))
        .collect();
    assert!(lines.len() >= 15, "the block has the code: {lines:?}");
    for line in lines {
        assert!(
            SOURCES.iter().any(|source| source.contains(line)),
            "README line not in the sources: {line}"
        );
    }
}
