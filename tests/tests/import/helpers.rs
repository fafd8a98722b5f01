//! What the import suites share: files to import, the import as `api-server import`
//! runs it, and the database read back with SQL.

use std::path::{Path, PathBuf};

use api_server::import::{ImportOptions, ImportReport, Progress, import_file};
use integration_tests::fixtures::Fixture;
use product_service::ProductService;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use tempfile::TempDir;

pub(crate) const HEADER: &str = "sku,name,description,price_cents,stock,category";

/// A temporary directory for import files.
pub(crate) struct Files(TempDir);

impl Files {
    pub(crate) fn new() -> Self {
        Self(tempfile::tempdir().expect("a temporary directory"))
    }

    pub(crate) fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, content).expect("the file is written");
        path
    }

    /// A CSV file `name`: the product columns' [`HEADER`] line, then `rows`.
    pub(crate) fn csv(&self, name: &str, rows: &str) -> PathBuf {
        self.write(name, &format!("{HEADER}\n{rows}"))
    }
}

/// Options as `api-server import` sets them with Redis, without progress output.
pub(crate) fn quiet(dry_run: bool) -> ImportOptions {
    ImportOptions {
        dry_run,
        progress: Progress::Hidden,
    }
}

/// Imports `path`, then, as `api-server import` does, applies what it owes (or waits
/// up to 1 s for a relay to).
pub(crate) async fn import(service: &ProductService, path: &Path) -> ImportReport {
    let report = import_file(service, path, &quiet(false))
        .await
        .expect("the import runs");
    // Redis may be down on purpose: what is not applied stays owed (tests count it).
    service.settle_import().await;
    report
}

/// `(created, updated, unchanged, failed)`.
pub(crate) fn counts(report: &ImportReport) -> (u64, u64, u64, u64) {
    (
        report.created,
        report.updated,
        report.unchanged,
        report.failed,
    )
}

pub(crate) fn messages(report: &ImportReport) -> Vec<String> {
    report.failures.iter().map(ToString::to_string).collect()
}

/// A product row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) price_cents: i64,
    pub(crate) stock: i64,
    pub(crate) category: String,
    pub(crate) version: i64,
}

pub(crate) async fn database(f: &Fixture) -> DatabaseConnection {
    product_service::connect(&f.database_url)
        .await
        .expect("a second connection")
}

/// The stored row of `sku`, read with SQL (skus in these tests need no quoting).
pub(crate) async fn stored(db: &DatabaseConnection, sku: &str) -> Option<Stored> {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            format!(
                "SELECT id, name, description, price_cents, stock, category, version \
                 FROM product WHERE sku = '{sku}'"
            ),
        ))
        .await
        .expect("SELECT runs")?;
    let get = |column: &str| row.try_get::<i64>("", column).expect(column);
    let text = |column: &str| row.try_get::<String>("", column).expect(column);
    Some(Stored {
        id: get("id"),
        name: text("name"),
        description: text("description"),
        price_cents: get("price_cents"),
        stock: get("stock"),
        category: text("category"),
        version: get("version"),
    })
}

pub(crate) async fn count_rows(db: &DatabaseConnection, table: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            format!("SELECT COUNT(*) AS n FROM {table}"),
        ))
        .await
        .expect("COUNT runs")
        .expect("a row");
    row.try_get::<i64>("", "n").expect("n")
}
