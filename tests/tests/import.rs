//! `api-server import`: CSV and JSON Lines files upserted by sku through
//! `ProductService`, against real databases (SQLite and PostgreSQL) and a real Redis;
//! then the real binary against a running server.
//!
//! Expected database contents are read back with SQL on a separate connection, so a
//! wrong value cannot hide behind the cache; cache behaviour is checked through the
//! service's reads.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use api_server::import::{ImportOptions, ImportReport, Progress, import_file, run};
use cache_service::{CacheConfig, CacheService, RedisConfig};
use integration_tests::fixtures::{Fixture, first_page, id, new_product};
use product_service::ProductService;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use tempfile::TempDir;

integration_tests::on_both_databases!("import_":
    a_csv_import_creates_updates_and_counts_unchanged_rows,
    a_jsonl_import_keeps_absent_fields_and_sets_given_ones,
    bad_csv_rows_are_reported_by_line_and_field_and_valid_rows_are_applied,
    bad_jsonl_lines_are_reported_by_line_and_field_and_valid_lines_are_applied,
    an_unknown_csv_column_is_an_error_naming_it_and_nothing_is_written,
    a_dry_run_reports_what_the_import_would_do_and_writes_nothing,
    repeated_skus_in_one_batch_apply_in_file_order,
    imports_span_batches_and_a_reimport_changes_nothing,
    a_cached_product_and_list_page_show_the_import_at_once,
);

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

const HEADER: &str = "sku,name,description,price_cents,stock,category";

/// A temporary directory for import files.
struct Files(TempDir);

impl Files {
    fn new() -> Self {
        Self(tempfile::tempdir().expect("a temporary directory"))
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, content).expect("the file is written");
        path
    }
}

/// Options as `api-server import` sets them with Redis, without progress output.
fn quiet(dry_run: bool) -> ImportOptions {
    ImportOptions {
        dry_run,
        progress: Progress::Hidden,
    }
}

/// Imports `path`, then, as `api-server import` does, applies what it owes (or waits
/// up to 1 s for a relay to).
async fn import(service: &ProductService, path: &Path) -> ImportReport {
    let report = import_file(service, path, &quiet(false))
        .await
        .expect("the import runs");
    // Redis may be down on purpose: what is not applied stays owed (tests count it).
    let _ = service
        .coherence()
        .flush(std::time::Duration::from_secs(1))
        .await;
    report
}

/// `(created, updated, unchanged, failed)`.
fn counts(report: &ImportReport) -> (u64, u64, u64, u64) {
    (
        report.created,
        report.updated,
        report.unchanged,
        report.failed,
    )
}

fn messages(report: &ImportReport) -> Vec<String> {
    report.failures.iter().map(ToString::to_string).collect()
}

/// A product row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    id: i64,
    name: String,
    description: String,
    price_cents: i64,
    stock: i64,
    category: String,
    version: i64,
}

async fn database(f: &Fixture) -> DatabaseConnection {
    product_service::connect(&f.database_url)
        .await
        .expect("a second connection")
}

/// The stored row of `sku`, read with SQL (skus in these tests need no quoting).
async fn stored(db: &DatabaseConnection, sku: &str) -> Option<Stored> {
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

async fn count_rows(db: &DatabaseConnection, table: &str) -> i64 {
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

/// The Redis the fixture uses.
fn redis_url(f: &Fixture) -> String {
    match &f.redis_server {
        Some(server) => server.url(),
        None => std::env::var(integration_tests::TEST_REDIS_URL).expect("TEST_REDIS_URL"),
    }
}

/// A second service over the fixture's database and Redis, with a cache of its own
/// (as another process would have).
async fn another_process(f: &Fixture) -> ProductService {
    let cache = CacheService::connect_redis(
        &RedisConfig::new(redis_url(f)),
        CacheConfig::with_prefix(f.prefix.clone()),
    )
    .await
    .expect("redis connects");
    ProductService::new(database(f).await, cache)
        .await
        .expect("service")
}

// ---------------------------------------------------------------------------------------
// Scenarios on both databases
// ---------------------------------------------------------------------------------------

async fn a_csv_import_creates_updates_and_counts_unchanged_rows(f: Fixture) {
    let files = Files::new();
    let db = database(&f).await;
    // Columns in any order.
    let first = files.write(
        "first.csv",
        "name,sku,price_cents,stock,category,description\n\
         Keyboard,KB-1,8999,12,keyboards,Clicky\n\
         Mouse,MS-1,1999,5,mice,\n\
         Cable,CB-1,499,100,,\n",
    );

    let report = import(&f.service, &first).await;

    assert_eq!(counts(&report), (3, 0, 0, 0), "{report}");
    let kb = stored(&db, "KB-1").await.expect("KB-1 created");
    assert_eq!(
        (
            kb.name.as_str(),
            kb.description.as_str(),
            kb.price_cents,
            kb.stock
        ),
        ("Keyboard", "Clicky", 8999, 12)
    );
    assert_eq!((kb.category.as_str(), kb.version), ("keyboards", 1));
    let cb = stored(&db, "CB-1").await.expect("CB-1 created");
    assert_eq!(
        (cb.description.as_str(), cb.category.as_str()),
        ("", ""),
        "description and category default to empty"
    );

    // A changed price with empty cells, an identical row, a new product.
    let second = files.write(
        "second.csv",
        &format!(
            "{HEADER}\n\
             KB-1,,,7999,,\n\
             MS-1,Mouse,,1999,5,mice\n\
             PD-1,Pad,,999,3,\n"
        ),
    );

    let report = import(&f.service, &second).await;

    assert_eq!(counts(&report), (1, 1, 1, 0), "{report}");
    assert_eq!(
        report.summary(),
        "created 1, updated 1, unchanged 1, failed 0"
    );
    let kb2 = stored(&db, "KB-1").await.expect("KB-1");
    assert_eq!(
        kb2,
        Stored {
            price_cents: 7999,
            version: 2,
            ..kb
        },
        "empty cells keep their values; the version moves on once"
    );
    assert_eq!(stored(&db, "MS-1").await.expect("MS-1").version, 1);
    assert!(stored(&db, "PD-1").await.is_some());
    assert_eq!(count_rows(&db, "product").await, 4);
}

async fn a_jsonl_import_keeps_absent_fields_and_sets_given_ones(f: Fixture) {
    let files = Files::new();
    let db = database(&f).await;
    let first = files.write(
        "products.jsonl",
        concat!(
            r#"{"sku":"J-1","name":"One","description":"First","price_cents":100,"stock":1,"category":"c"}"#,
            "\n",
            "\n",
            r#"{"sku":"J-2","name":"Two","price_cents":200,"stock":2}"#,
            "\n",
        ),
    );
    assert_eq!(counts(&import(&f.service, &first).await), (2, 0, 0, 0));

    let second = files.write(
        "changes.jsonl",
        concat!(
            // absent keys and null keep; "" is a value
            r#"{"sku":"J-1","name":null,"description":"","stock":5}"#,
            "\n",
            r#"{"sku":"J-2","price_cents":200}"#,
            "\n",
            r#"{"sku":"J-3","name":"Three","price_cents":300,"stock":3,"category":"new"}"#,
        ),
    );

    let report = import(&f.service, &second).await;

    assert_eq!(counts(&report), (1, 1, 1, 0), "{report}");
    let one = stored(&db, "J-1").await.expect("J-1");
    assert_eq!(
        (one.name.as_str(), one.description.as_str(), one.price_cents),
        ("One", "", 100)
    );
    assert_eq!((one.stock, one.category.as_str(), one.version), (5, "c", 2));
    assert_eq!(stored(&db, "J-2").await.expect("J-2").version, 1);
    let three = stored(&db, "J-3")
        .await
        .expect("J-3, on a last line without a newline");
    assert_eq!(three.category, "new");
}

async fn bad_csv_rows_are_reported_by_line_and_field_and_valid_rows_are_applied(f: Fixture) {
    let files = Files::new();
    let db = database(&f).await;
    // Line numbers are physical: the quoted cell of the first row spans lines 2-3.
    let path = files.write(
        "bad.csv",
        &format!(
            "{HEADER}\n\
             KB-1,Keyboard,\"two\nlines\",8999,12,keyboards\n\
             bad sku,Thing,,1,1,\n\
             NN-1,,,100,1,\n\
             NEG-1,Cable,,-5,1,\n\
             TXT-1,Pad,,12.50,1,\n\
             MS-1,Mouse,,1999,5,mice\n\
             BIG-1,Big,,1,1000000001,\n\
             SHORT-1,Short,,1\n\
             KB-1,,,7999,,\n"
        ),
    );

    let report = import(&f.service, &path).await;

    assert_eq!(
        messages(&report),
        [
            "line 4: sku: may only contain A-Z, a-z, 0-9, '-', '_' and '.'",
            "line 5: name: is required to create a product",
            "line 6: price_cents: must be between 0 and 1000000000000",
            "line 7: price_cents: must be an integer",
            "line 9: stock: must be between 0 and 1000000000",
            "line 10: row: has 4 fields, the header has 6",
        ]
    );
    assert_eq!(counts(&report), (2, 1, 0, 6), "{report}");
    let kb = stored(&db, "KB-1").await.expect("KB-1 applied");
    assert_eq!(
        (kb.description.as_str(), kb.price_cents, kb.version),
        ("two\nlines", 7999, 2)
    );
    assert!(stored(&db, "MS-1").await.is_some(), "MS-1 applied");
    for skipped in ["NN-1", "NEG-1", "TXT-1", "BIG-1", "SHORT-1"] {
        assert_eq!(stored(&db, skipped).await, None, "{skipped} was skipped");
    }
}

async fn bad_jsonl_lines_are_reported_by_line_and_field_and_valid_lines_are_applied(f: Fixture) {
    let files = Files::new();
    let db = database(&f).await;
    let path = files.write(
        "bad.jsonl",
        concat!(
            r#"{"sku":"J-1","name":"One","price_cents":100,"stock":1}"#,
            "\n",
            r#"{"sku":"J-2","name":"Two","price_cents":100,"stock":1,"colour":"red"}"#,
            "\n",
            "   \n",
            r#"{"sku":"J-3","name":"Three","price_cents":"100","stock":1}"#,
            "\n",
            r#"{"sku":"J-4","#,
            "\n",
            r#"{"sku":"J-5","price_cents":100,"stock":1}"#,
            "\n",
            r#"["J-6"]"#,
            "\n",
            r#"{"sku":"J-1","stock":7}"#,
            "\n",
        ),
    );

    let report = import(&f.service, &path).await;

    let found = messages(&report);
    let expected_starts = [
        "line 2: colour: unknown field",
        "line 4: price_cents: must be an integer",
        "line 5: json: not valid JSON",
        "line 6: name: is required to create a product",
        "line 7: json: must be a JSON object",
    ];
    assert_eq!(found.len(), expected_starts.len(), "{found:#?}");
    for (message, start) in found.iter().zip(expected_starts) {
        assert!(
            message.starts_with(start),
            "{message:?} should start with {start:?}"
        );
    }
    assert_eq!(counts(&report), (1, 1, 0, 5), "{report}");
    assert_eq!(stored(&db, "J-1").await.expect("J-1").stock, 7);
    assert_eq!(
        stored(&db, "J-2").await,
        None,
        "an unknown key fails its line"
    );
}

async fn an_unknown_csv_column_is_an_error_naming_it_and_nothing_is_written(f: Fixture) {
    let files = Files::new();
    let db = database(&f).await;
    let path = files.write(
        "unknown.csv",
        "sku,name,colour,price_cents,stock,weight\n\
         KB-1,Keyboard,red,8999,12,3kg\n",
    );

    let error = import_file(&f.service, &path, &quiet(false))
        .await
        .expect_err("unknown columns are an error");

    let message = format!("{error:#}");
    assert!(
        message.contains("\"colour\"") && message.contains("\"weight\""),
        "{message}"
    );
    assert_eq!(count_rows(&db, "product").await, 0, "nothing was written");
    assert_eq!(count_rows(&db, "cache_outbox").await, 0);
}

async fn a_dry_run_reports_what_the_import_would_do_and_writes_nothing(f: Fixture) {
    let files = Files::new();
    let db = database(&f).await;
    f.service
        .create(new_product("OLD-1", 100))
        .await
        .expect("create");
    f.service.relay(100).drain().await.expect("drain");
    let generation = f.list_generation().await;
    // 1 100 rows in three batches; D-0001, created in the first, changes in the third.
    let mut csv = format!("{HEADER}\n");
    for n in 1..=1000 {
        csv.push_str(&format!("D-{n:04},Product {n},,{n},1,dry\n"));
    }
    csv.push_str("OLD-1,,,250,,\n");
    csv.push_str("OLD-1,,,250,,\n");
    csv.push_str("D-0001,,,5,,\n");
    csv.push_str("BAD-1,,,1,1,\n");
    for n in 1001..=1096 {
        csv.push_str(&format!("D-{n:04},Product {n},,{n},1,dry\n"));
    }
    let path = files.write("dry.csv", &csv);

    let dry = import_file(&f.service, &path, &quiet(true))
        .await
        .expect("the dry run runs");

    assert_eq!(counts(&dry), (1096, 2, 1, 1), "{dry}");
    assert_eq!(
        messages(&dry),
        ["line 1005: name: is required to create a product"]
    );
    assert_eq!(count_rows(&db, "product").await, 1, "nothing was written");
    assert_eq!(count_rows(&db, "cache_outbox").await, 0, "nothing is owed");
    assert_eq!(stored(&db, "OLD-1").await.expect("OLD-1").version, 1);
    assert_eq!(
        f.list_generation().await,
        generation,
        "nothing was invalidated"
    );

    let real = import(&f.service, &path).await;

    assert_eq!(real, dry, "the real import does what the dry run said");
    assert_eq!(count_rows(&db, "product").await, 1097);
    let d1 = stored(&db, "D-0001").await.expect("D-0001");
    assert_eq!((d1.price_cents, d1.version), (5, 2));
}

async fn repeated_skus_in_one_batch_apply_in_file_order(f: Fixture) {
    let files = Files::new();
    let db = database(&f).await;
    let path = files.write(
        "repeated.csv",
        &format!(
            "{HEADER}\n\
             A-1,,,100,1,\n\
             A-1,First,,100,1,\n\
             A-1,,,200,,\n\
             A-1,,,200,,\n\
             A-1,Renamed,,,,\n"
        ),
    );

    let report = import(&f.service, &path).await;

    // The first row cannot create A-1 (no name); the second can; the rest update it.
    assert_eq!(counts(&report), (1, 2, 1, 1), "{report}");
    let a = stored(&db, "A-1").await.expect("A-1");
    assert_eq!(
        (a.name.as_str(), a.price_cents, a.version),
        ("Renamed", 200, 3),
        "the version counts every change, as one-by-one updates would"
    );
    assert_eq!(count_rows(&db, "product").await, 1);
}

async fn imports_span_batches_and_a_reimport_changes_nothing(f: Fixture) {
    let files = Files::new();
    let db = database(&f).await;
    let rows = 1_234;
    let file = |name: &str, price: &dyn Fn(i64) -> i64| {
        let mut csv = format!("{HEADER}\n");
        for n in 1..=rows {
            csv.push_str(&format!("S-{n:05},Product {n},,{},{n},bulk\n", price(n)));
        }
        files.write(name, &csv)
    };
    let initial = file("initial.csv", &|n| n);
    let half = file("half.csv", &|n| if n % 2 == 0 { n + 1 } else { n });

    assert_eq!(counts(&import(&f.service, &initial).await), (1234, 0, 0, 0));
    assert_eq!(counts(&import(&f.service, &initial).await), (0, 0, 1234, 0));
    assert_eq!(counts(&import(&f.service, &half).await), (0, 617, 617, 0));

    assert_eq!(count_rows(&db, "product").await, 1234);
    let first = stored(&db, "S-00001").await.expect("first");
    let second = stored(&db, "S-00002").await.expect("second");
    let last = stored(&db, "S-01234").await.expect("last");
    assert_eq!((first.price_cents, first.version), (1, 1));
    assert_eq!((second.price_cents, second.version), (3, 2));
    assert_eq!((last.price_cents, last.version), (1235, 2));
    assert!(
        first.id < second.id && second.id < last.id,
        "ids follow the file"
    );
    assert_eq!(
        count_rows(&db, "cache_outbox").await,
        0,
        "what each batch owed was applied, and its outbox rows deleted"
    );
}

async fn a_cached_product_and_list_page_show_the_import_at_once(f: Fixture) {
    let files = Files::new();
    let kb = f
        .service
        .create(new_product("KB-1", 100))
        .await
        .expect("create");
    assert_eq!(
        f.service
            .find_by_id(id(kb.id))
            .await
            .expect("read")
            .price_cents,
        100
    );
    let page = f.service.find_in_page(&first_page()).await.expect("list");
    assert_eq!(page.total, 1);
    assert!(f.is_cached(kb.id).await, "the product is cached");
    let generation = f.list_generation().await;
    // The import runs in "another process": its own cache handle, same Redis.
    let importer = another_process(&f).await;
    let path = files.write(
        "update.csv",
        &format!("{HEADER}\nKB-1,,,250,,\nKB-2,Second,,300,1,cat\n"),
    );

    let report = import(&importer, &path).await;

    assert_eq!(counts(&report), (1, 1, 0, 0), "{report}");
    assert_ne!(
        f.list_generation().await,
        generation,
        "the list group moved on"
    );
    let read = f.service.find_by_id(id(kb.id)).await.expect("read");
    assert_eq!(
        (read.price_cents, read.version),
        (250, 2),
        "the cached product shows the import at once"
    );
    let page = f.service.find_in_page(&first_page()).await.expect("list");
    let listed: Vec<(&str, i64)> = page
        .items
        .iter()
        .map(|p| (p.sku.as_str(), p.price_cents))
        .collect();
    assert_eq!(
        listed,
        [("KB-1", 250), ("KB-2", 300)],
        "the cached page shows the import at once"
    );
    let db = database(&f).await;
    assert_eq!(
        count_rows(&db, "cache_outbox").await,
        0,
        "the import applied what was owed at its end (KB-1's create too)"
    );
}

// ---------------------------------------------------------------------------------------
// The `run` entry point: connection, outbox, exit status
// ---------------------------------------------------------------------------------------

fn settings(database_url: &str, redis_url: Option<&str>, prefix: &str) -> api_server::Settings {
    api_server::Settings {
        bind: ([127, 0, 0, 1], 0).into(),
        database_url: database_url.to_owned(),
        redis_url: redis_url.map(str::to_owned),
        cache_prefix: prefix.to_owned(),
        cache_ttl_secs: 300,
        cache_max_entries: 100_000,
        api_token: None,
        ..api_server::Settings::default()
    }
}

#[tokio::test]
async fn run_applies_the_file_drains_what_it_owes_and_fails_when_a_row_failed() {
    let Some(f) = Fixture::sqlite("import_run").await else {
        return;
    };
    let files = Files::new();
    let db = database(&f).await;
    let settings = settings(&f.database_url, Some(&redis_url(&f)), &f.prefix);
    let good = files.write("good.csv", &format!("{HEADER}\nR-1,One,,100,1,\n"));
    let bad = files.write(
        "bad.csv",
        &format!("{HEADER}\nR-1,,,150,,\nR-2,Two,,x,1,\n"),
    );

    run(&settings, &good, false).await.expect("succeeds");
    assert_eq!(
        count_rows(&db, "cache_outbox").await,
        0,
        "the import applied the invalidations it owed"
    );

    let error = run(&settings, &bad, false)
        .await
        .expect_err("a failed row fails the run");

    assert!(error.to_string().contains("1 row failed"), "{error:#}");
    assert_eq!(
        stored(&db, "R-1").await.expect("R-1").price_cents,
        150,
        "the valid row was still applied"
    );
    assert_eq!(count_rows(&db, "cache_outbox").await, 0);
}

#[tokio::test]
async fn run_imports_without_a_reachable_redis_and_the_outbox_keeps_the_invalidations() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let database_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("products.db").display()
    );
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port();
    let settings = settings(
        &database_url,
        Some(&format!("redis://127.0.0.1:{port}")),
        &integration_tests::unique_prefix("import_no_redis"),
    );
    let files = Files::new();
    let path = files.write(
        "products.csv",
        &format!("{HEADER}\nN-1,One,,100,1,\nN-2,Two,,200,2,\n"),
    );

    run(&settings, &path, false)
        .await
        .expect("the import does not need the cache");

    let db = product_service::connect(&database_url)
        .await
        .expect("connects");
    assert_eq!(count_rows(&db, "product").await, 2);
    assert_eq!(
        count_rows(&db, "cache_outbox").await,
        2,
        "the invalidations wait in the outbox for a relay"
    );
}

#[tokio::test]
async fn an_import_succeeds_when_redis_dies_and_the_outbox_keeps_the_invalidations() {
    let Some(mut redis) = integration_tests::redis_server_or_skip("import_redis_dies").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let database_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("products.db").display()
    );
    let db = product_service::connect(&database_url)
        .await
        .expect("connects");
    product_service::migrate(&db).await.expect("migrates");
    let cache = CacheService::connect_redis(
        &RedisConfig::new(redis.url()),
        CacheConfig::with_prefix(integration_tests::unique_prefix("import_redis_dies")),
    )
    .await
    .expect("redis connects");
    let service = ProductService::new(db.clone(), cache)
        .await
        .expect("service");
    let files = Files::new();
    let mut csv = format!("{HEADER}\n");
    for n in 1..=1_200 {
        csv.push_str(&format!("X-{n},Product {n},,{n},1,\n"));
    }
    let path = files.write("products.csv", &csv);
    redis.stop();

    let started = std::time::Instant::now();
    let report = tokio::time::timeout(Duration::from_secs(30), import(&service, &path))
        .await
        .expect("a dead Redis does not stall the import");

    assert_eq!(counts(&report), (1200, 0, 0, 0), "{report}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "one failed invalidation, not one per batch: {:?}",
        started.elapsed()
    );
    assert_eq!(count_rows(&db, "cache_outbox").await, 1200);
    redis.restart().expect("redis restarts");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while service.relay(500).drain().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the relay applies what is owed once Redis is back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count_rows(&db, "cache_outbox").await, 0);
}

// ---------------------------------------------------------------------------------------
// The real binary, as a separate process, next to a running server
// ---------------------------------------------------------------------------------------

/// How long the server may take to start.
const PATIENCE: Duration = Duration::from_secs(20);

/// The `api-server` cargo built beside this test, if it knows `import`; otherwise
/// `None` after a loud notice (a panic in CI).
async fn binary(test: &str) -> Option<PathBuf> {
    let found = integration_tests::api_server_binary();
    let problem = match &found {
        None => Some("no api-server binary beside the tests"),
        Some(path) => {
            let help = command(path).args(["import", "--help"]).output().await;
            match help {
                Ok(output) if output.status.success() => None,
                _ => Some("the api-server binary has no `import` subcommand (built before it)"),
            }
        }
    };
    let Some(problem) = problem else {
        return found;
    };
    let message = format!("SKIPPED {test}: {problem}; run `cargo build -p api-server` first");
    assert!(!integration_tests::in_ci(), "{message}");
    let rule = "=".repeat(72);
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "\n{rule}\n{message}\n{rule}");
    None
}

/// A command for the binary with none of its settings inherited.
fn command(binary: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary);
    // Every variable the binary reads, from its command-line definition.
    for name in api_server::config::setting_variables() {
        command.env_remove(name);
    }
    command
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Starts `api-server serve` and returns it with its base URL, from its "serving" line.
async fn serve(binary: &Path, env: &[(&str, &str)]) -> (tokio::process::Child, String) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = command(binary)
        .arg("serve")
        .env("BIND", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the server starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut log = Vec::new();
    let address = tokio::time::timeout(PATIENCE, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("serving")
                && let Some(start) = line.find("http://")
            {
                let rest = &line[start..];
                return Some(rest[..rest.find("/docs").unwrap_or(rest.len())].to_owned());
            }
            log.push(line);
        }
        None
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_else(|| panic!("no \"serving\" line; the log was:\n{}", log.join("\n")));
    // Keep draining stderr so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, address)
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
    let Some(binary) = binary("import_help_documents_the_format_and_the_summary").await else {
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
    let Some(binary) = binary(test).await else {
        return;
    };
    let Some((redis_url, _redis)) = integration_tests::redis_url_or_skip(test).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let database_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("products.db").display()
    );
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
    let path = files.write(
        "products.csv",
        &format!("{HEADER}\nKB-1,,,250,,\nKB-2,Mouse,,300,2,mice\n"),
    );

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
    let bad = files.write("bad.csv", &format!("{HEADER}\nKB-2,,,x,,\nKB-1,,,260,,\n"));
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
