//! A fresh PostgreSQL database for each test, on the server named by
//! [`TEST_DATABASE_URL`], dropped with its guard.

use std::io;
use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database};

use crate::{TEST_DATABASE_URL, skip};

/// A fresh database `it_<random>` created for one test on the server named by
/// `TEST_DATABASE_URL`.
///
/// Dropping the guard drops the database, best-effort, on a helper thread with its own
/// runtime (so it works inside and outside async code); [`cleanup`](Self::cleanup) does
/// the same from async code and reports errors. Either way, connections still open to
/// the database are terminated (`DROP DATABASE … WITH (FORCE)`).
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    admin_url: String,
    name: String,
    dropped: bool,
}

impl TestDatabase {
    /// The URL of the fresh database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name (`it_…`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database now.
    pub async fn cleanup(mut self) -> Result<(), sea_orm::DbErr> {
        self.dropped = true;
        drop_database(&self.admin_url, &self.name).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime
                .block_on(drop_database(&admin_url, &name))
                .map_err(io::Error::other)
        });
        match dropper.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("could not drop test database {}: {error}", self.name),
            Err(_) => eprintln!("could not drop test database {}: panicked", self.name),
        }
    }
}

/// A fresh PostgreSQL database for `test_name` (see [`TestDatabase`]), on the server
/// named by `TEST_DATABASE_URL` (for example `postgres://postgres@127.0.0.1:5432/test`;
/// the database in that URL is only used to run `CREATE DATABASE`).
///
/// Without `TEST_DATABASE_URL`: `None` after a loud "SKIPPED" notice, or a panic when
/// `CI=true`. Panics if the server cannot be reached or the database cannot be created.
pub async fn postgres_url_or_skip(test_name: &str) -> Option<TestDatabase> {
    let Ok(admin_url) = std::env::var(TEST_DATABASE_URL) else {
        return skip(
            test_name,
            "no PostgreSQL: set TEST_DATABASE_URL (for example postgres://postgres@127.0.0.1:5432/test)",
        );
    };
    let name = format!("it_{:016x}", rand::random::<u64>());
    let url = with_database(&admin_url, &name)
        .unwrap_or_else(|| panic!("{TEST_DATABASE_URL} is not a postgres:// URL with a path"));
    let admin = connect_admin(&admin_url).await.unwrap_or_else(|error| {
        panic!("{test_name}: cannot connect to {TEST_DATABASE_URL}: {error}")
    });
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap_or_else(|error| panic!("{test_name}: cannot create database {name}: {error}"));
    let _ = admin.close().await;
    Some(TestDatabase {
        url,
        admin_url,
        name,
        dropped: false,
    })
}

async fn connect_admin(admin_url: &str) -> Result<sea_orm::DatabaseConnection, sea_orm::DbErr> {
    let mut options = ConnectOptions::new(admin_url);
    options
        .max_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    Database::connect(options).await
}

async fn drop_database(admin_url: &str, name: &str) -> Result<(), sea_orm::DbErr> {
    let admin = connect_admin(admin_url).await?;
    let result = admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await;
    let _ = admin.close().await;
    result.map(drop)
}

/// `url` with its database (the path) replaced by `database`, keeping any query string.
/// `None` if `url` is not of the form `scheme://authority[/path][?query]`.
pub fn with_database(url: &str, database: &str) -> Option<String> {
    let authority_start = url.find("://")? + 3;
    let (without_query, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let authority_end = without_query[authority_start..]
        .find('/')
        .map_or(without_query.len(), |i| authority_start + i);
    if authority_end == authority_start {
        return None;
    }
    Some(format!(
        "{}/{database}{query}",
        &without_query[..authority_end]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_replaces_only_the_path() {
        let cases = [
            (
                "postgres://postgres@127.0.0.1:5432/test",
                "postgres://postgres@127.0.0.1:5432/it_x",
            ),
            (
                "postgres://u:p@host/test?sslmode=disable",
                "postgres://u:p@host/it_x?sslmode=disable",
            ),
            ("postgres://host:5432", "postgres://host:5432/it_x"),
        ];
        for (url, expected) in cases {
            assert_eq!(
                with_database(url, "it_x").as_deref(),
                Some(expected),
                "{url}"
            );
        }
        assert_eq!(with_database("not a url", "it_x"), None);
    }

    #[tokio::test]
    async fn a_test_database_exists_until_its_guard_is_dropped() {
        let Some(database) = postgres_url_or_skip("harness self-test").await else {
            return;
        };
        let admin_url = database.admin_url.clone();
        let name = database.name().to_owned();
        let exists = |admin_url: String, name: String| async move {
            let admin = connect_admin(&admin_url).await.expect("connects");
            let row = admin
                .query_one_raw(sea_orm::Statement::from_string(
                    sea_orm::DbBackend::Postgres,
                    format!("SELECT 1 AS one FROM pg_database WHERE datname = '{name}'"),
                ))
                .await
                .expect("queries");
            row.is_some()
        };

        let db = Database::connect(database.url())
            .await
            .expect("the fresh database accepts connections");
        db.execute_unprepared("CREATE TABLE t (id INT)")
            .await
            .expect("and is writable");
        assert!(exists(admin_url.clone(), name.clone()).await);

        // Dropped with a connection still open: WITH (FORCE) ends it.
        drop(database);
        assert!(
            !exists(admin_url, name).await,
            "the guard dropped the database"
        );
    }
}
