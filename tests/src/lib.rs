//! Shared harness of the workspace's integration tests.
//!
//! Each test binary under `tests/tests/` uses this library to get the servers it needs,
//! isolated from every other test and from other users of the same machine:
//!
//! - [`RedisServer`]: a private `redis-server` child process on a free port, killed on
//!   drop, which a test may [`stop`](RedisServer::stop), [`freeze`](RedisServer::freeze)
//!   or [`restart`](RedisServer::restart) to simulate outages.
//! - [`redis_url_or_skip`] / [`redis_server_or_skip`]: a Redis for one test (the shared one
//!   named by `TEST_REDIS_URL`, or a private server), or a loud skip.
//! - [`postgres_url_or_skip`]: a fresh PostgreSQL database for one test, dropped with its
//!   [`TestDatabase`] guard.
//! - [`unique_prefix`]: a cache key prefix no other test uses; [`sqlite_url`]: a
//!   database file in a test's temporary directory; [`raw_sql`]: a write behind the
//!   services' back; [`select_rows`]: what the database itself holds.
//! - [`redis_client`]: a plain `fred` client, to look at what a test stored;
//!   [`redis_cache`]: a cache service over a Redis, under a prefix.
//! - [`binary`]: the real `api-server` executable as a child process
//!   ([`api_server_or_skip`], [`api_server_command`], [`start_server`]).
//! - [`wait_until`] / [`eventually`]: polling a condition with a time limit, and
//!   [`end_storm`] for tests that race writers against readers.
//!
//! # Layout
//!
//! `redis` (private Redis servers and clients), `postgres` (fresh databases), [`binary`],
//! [`fixtures`] (services over both databases, for [`on_database!`] and
//! [`on_both_databases!`]),
//! [`tcp_relay`], [`cluster`] and `wait`; every helper is re-exported at the root.
//!
//! # Rules every test relies on
//!
//! 1. **Never flush a shared Redis.** A test that may run against `TEST_REDIS_URL` writes
//!    only under its own [`unique_prefix`], and never runs `FLUSHDB`.
//! 2. **The server you talk to is yours.** A private Redis is only handed out after its
//!    `INFO server` reports the child's process id, so a stray server that happened to
//!    own the port cannot be mistaken for it.
//! 3. **Skips are loud, and impossible in CI.** Without a Redis or PostgreSQL a test prints
//!    `SKIPPED <test>: …` and passes; with `CI=true` it panics instead, so a misconfigured
//!    pipeline cannot go green by skipping.

use std::io::{self, Write};
use std::path::PathBuf;

pub mod binary;
pub mod cluster;
pub mod fixtures;
mod postgres;
mod redis;
mod wait;

/// Runs each `async fn scenario(f: Fixture)` as the test `{module}::scenario`, on a fresh
/// [`fixtures::Fixture`] from `Fixture::{db}` (`sqlite` or `postgres`) named
/// `{prefix}{db}_{scenario}`: `on_database!(on_sqlite = sqlite, "jobs_": a, b)`.
/// A database or Redis that is not available skips the test loudly (fails in CI).
#[macro_export]
macro_rules! on_database {
    ($module:ident = $db:ident, $prefix:literal: $($scenario:ident),* $(,)?) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $scenario() {
                    if let Some(f) = $crate::fixtures::Fixture::$db(concat!($prefix, stringify!($db), "_", stringify!($scenario))).await {
                        super::$scenario(f).await;
                    }
                }
            )*
        }
    };
}

/// Runs each `async fn scenario(f: Fixture)` twice, as `sqlite::scenario` and
/// `postgres::scenario` (see [`on_database!`]).
#[macro_export]
macro_rules! on_both_databases {
    ($prefix:literal: $($scenario:ident),* $(,)?) => {
        $crate::on_database!(sqlite = sqlite, $prefix: $($scenario),*);
        $crate::on_database!(postgres = postgres, $prefix: $($scenario),*);
    };
}
pub mod tcp_relay;

pub use binary::{api_server_binary, api_server_command, api_server_or_skip, start_server};
pub use postgres::{TestDatabase, postgres_url_or_skip, with_database};
pub(crate) use redis::resp_command;
pub use redis::{
    RedisServer, delete_keys_with_prefix, redis_cache, redis_client, redis_server_or_skip,
    redis_url_or_skip, unused_port,
};
pub use wait::{end_storm, eventually, wait_until};

/// Environment variable naming a Redis to use instead of a private server.
pub const TEST_REDIS_URL: &str = "TEST_REDIS_URL";
/// Environment variable naming a PostgreSQL server (any database on it) for
/// [`postgres_url_or_skip`].
pub const TEST_DATABASE_URL: &str = "TEST_DATABASE_URL";

/// A key prefix that no other test (or test run) uses: `it_{name}_{random hex}`, with
/// `name` reduced to `[a-z0-9_]`.
pub fn unique_prefix(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(40)
        .collect();
    format!("it_{name}_{:08x}", rand::random::<u32>())
}

/// The URL of the SQLite file `file` in `dir`, created on first connect (`mode=rwc`).
pub fn sqlite_url(dir: &std::path::Path, file: &str) -> String {
    format!("sqlite://{}?mode=rwc", dir.join(file).display())
}

/// The name of the running test (libtest names each test's thread after it), for skip
/// notices and key prefixes.
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("integration test")
        .to_owned()
}

/// The rows `sql` selects on `db`, each decoded by position into `T` (a tuple of the
/// selected columns, in order): what a test reads of the database itself, past every
/// service.
pub async fn select_rows<T: sea_orm::TryGetableMany>(
    db: &sea_orm::DatabaseConnection,
    sql: &str,
) -> Vec<T> {
    use sea_orm::ConnectionTrait;
    let statement = sea_orm::Statement::from_string(db.get_database_backend(), sql);
    db.query_all_raw(statement)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
        .iter()
        .map(|row| {
            row.try_get_many_by_index()
                .unwrap_or_else(|error| panic!("a row of {sql}: {error}"))
        })
        .collect()
}

/// Runs `sql` on the database at `database_url` over a connection of its own, behind the
/// back of every service on it, as an admin tool would: only triggers see it (and on
/// PostgreSQL its commit notifies the relays).
pub async fn raw_sql(database_url: &str, sql: &str) {
    use sea_orm::ConnectionTrait;
    let db = sea_orm::Database::connect(database_url)
        .await
        .expect("a separate connection");
    db.execute_unprepared(sql).await.expect("the raw SQL runs");
    db.close().await.expect("closes");
}

/// Whether this run is in CI (`CI=true` or `CI=1`), where skipping is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Reports that `test_name` cannot run because of `reason`: panics in CI, otherwise
/// prints a banner and returns `None`.
///
/// The banner goes to the process's stderr directly rather than through `eprintln!`,
/// which the test runner captures and hides for passing tests: a skip must be seen.
pub(crate) fn skip<T>(test_name: &str, reason: &str) -> Option<T> {
    if in_ci() {
        panic!("{test_name} cannot run in CI: {reason}");
    }
    let rule = "=".repeat(72);
    let _ = writeln!(
        io::stderr().lock(),
        "\n{rule}\nSKIPPED {test_name}: {reason}\n{rule}"
    );
    None
}

/// The path of `program` if it is an executable file on `PATH`.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_prefixes_differ_and_keep_to_safe_characters() {
        let a = unique_prefix("Some test::name");
        let b = unique_prefix("Some test::name");
        assert_ne!(a, b);
        assert!(a.starts_with("it_some_test__name_"), "{a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{a}"
        );
    }
}
