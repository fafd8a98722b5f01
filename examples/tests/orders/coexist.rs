//! Embedding: orders and products on one database (two embedders of `cache-service`,
//! each with its own sea-orm migrator, sharing the coherence tables), and services built
//! over a pool the caller made. Each scenario runs on SQLite and on PostgreSQL; the
//! reads and writes go through a private `redis-server`.

use cache_service::coherence::SessionSetting;
use cache_service::{CacheError, CacheService};
use integration_tests::{
    RedisServer, TestDatabase, postgres_url_or_skip, redis_server_or_skip, unique_prefix,
};
use orders_example::{CustomerId, NewOrder, OrderService, OrderStatus, TotalCents};
use product_service::{
    Category, Description, NewProduct, PriceCents, ProductName, ProductPatch, ProductService, Sku,
    Stock,
};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr, Statement};
use sea_orm_migration::prelude::*;

use crate::support::order_id;

/// Runs each `async fn scenario(db: Fresh)` on a fresh SQLite file and a fresh
/// PostgreSQL database (a missing PostgreSQL or `redis-server` skips loudly, and fails
/// under `CI=true`).
macro_rules! on_fresh_databases {
    ($($scenario:ident),* $(,)?) => {
        on_fresh_database!(sqlite: $($scenario),*);
        on_fresh_database!(postgres: $($scenario),*);
    };
}

/// Runs each `async fn scenario(db: Fresh)` as the test `{db}::scenario` on a fresh
/// database from `Fresh::{db}` (`sqlite` or `postgres`).
macro_rules! on_fresh_database {
    ($db:ident: $($scenario:ident),*) => {
        mod $db {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let name = concat!("coexist_", stringify!($db), "_", stringify!($scenario));
                    if let Some(db) = super::Fresh::$db(name).await {
                        super::$scenario(db).await;
                    }
                }
            )*
        }
    };
}

on_fresh_databases!(
    orders_first_then_products_both_read_and_write,
    products_first_then_orders_both_read_and_write,
    a_database_migrated_the_old_way_upgrades_without_migrating_again,
    a_host_migrator_in_seaql_migrations_runs_beside_product_service,
    a_pool_without_the_session_settings_is_refused_naming_them,
);

/// An empty database and a private Redis for one test.
struct Fresh {
    name: &'static str,
    url: String,
    redis: RedisServer,
    _database: Option<TestDatabase>,
    _dir: Option<tempfile::TempDir>,
}

impl Fresh {
    async fn sqlite(name: &'static str) -> Option<Self> {
        let redis = redis_server_or_skip(name).await?;
        let dir = tempfile::tempdir().expect("temp dir");
        let url = integration_tests::sqlite_url(dir.path(), "shared.db");
        Some(Self {
            name,
            url,
            redis,
            _database: None,
            _dir: Some(dir),
        })
    }

    async fn postgres(name: &'static str) -> Option<Self> {
        let database = postgres_url_or_skip(name).await?;
        let redis = redis_server_or_skip(name).await?;
        Some(Self {
            name,
            url: database.url().to_owned(),
            redis,
            _database: Some(database),
            _dir: None,
        })
    }

    async fn connect(&self) -> DatabaseConnection {
        product_service::connect(&self.url)
            .await
            .expect("the database connects")
    }

    async fn cache(&self) -> CacheService {
        integration_tests::redis_cache(&self.redis.url(), unique_prefix(self.name)).await
    }

    /// A product and an order are written, read (and cached), changed and read again
    /// through their services: the triggers of both tables write the shared outbox.
    async fn both_services_read_and_write(&self) {
        let products = ProductService::new(self.connect().await, self.cache().await)
            .await
            .expect("the product service accepts the connection");
        let created = products
            .create(new_product("COEXIST-1"))
            .await
            .expect("a product is created");
        assert_eq!(read_product(&products, created.id).await, created);
        let patched = products
            .patch(product_id(created.id), price(999), None)
            .await
            .expect("the product changes");
        assert_eq!(patched.version, 2, "the change moved the version on");
        assert_eq!(
            read_product(&products, created.id).await.price_cents,
            999,
            "the read after the change sees it"
        );

        let orders_db = orders_example::connect(&self.url)
            .await
            .expect("the database connects");
        let orders = OrderService::new(orders_db, self.cache().await)
            .await
            .expect("the order service accepts the connection");
        let placed = orders
            .place(NewOrder {
                customer: CustomerId::parse(7).expect("valid customer"),
                total: TotalCents::parse(1_250).expect("valid total"),
            })
            .await
            .expect("an order is placed");
        let id = order_id(placed.id);
        assert_eq!(orders.find(id).await.expect("read"), placed);
        orders
            .set_status(id, OrderStatus::Paid, None)
            .await
            .expect("the order changes");
        assert_eq!(
            orders.find(id).await.expect("read").status,
            OrderStatus::Paid,
            "the read after the change sees it"
        );
    }
}

async fn orders_first_then_products_both_read_and_write(db: Fresh) {
    migrate_both(&db, [Embedder::Orders, Embedder::Products]).await;
    db.both_services_read_and_write().await;
}

async fn products_first_then_orders_both_read_and_write(db: Fresh) {
    migrate_both(&db, [Embedder::Products, Embedder::Orders]).await;
    db.both_services_read_and_write().await;
}

#[derive(Debug, Clone, Copy)]
enum Embedder {
    Orders,
    Products,
    /// A host application with its own sea-orm migrator (rows in `seaql_migrations`).
    Host,
}

impl Embedder {
    async fn migrate(self, conn: &DatabaseConnection) -> Result<(), DbErr> {
        match self {
            Embedder::Orders => orders_example::migrate(conn).await,
            Embedder::Products => product_service::migrate(conn).await,
            Embedder::Host => HostMigrator::up(conn, None).await,
        }
    }
}

/// Migrates both schemas in `order`, then both again in the same order (nothing is left
/// to apply, and nothing fails).
async fn migrate_both(db: &Fresh, order: [Embedder; 2]) {
    let conn = db.connect().await;
    for round in ["first", "again"] {
        for embedder in order {
            embedder.migrate(&conn).await.unwrap_or_else(|error| {
                panic!("{embedder:?} migrates ({round}, order {order:?}): {error}")
            });
        }
    }
}

/// A database that product-service migrated before it had a migration table of its
/// own: every row in sea-orm's default `seaql_migrations`. It is built here by
/// migrating, then moving the rows back where the old release wrote them; a row of
/// another application in `seaql_migrations` must stay where it is.
async fn a_database_migrated_the_old_way_upgrades_without_migrating_again(db: Fresh) {
    let conn = db.connect().await;
    product_service::migrate(&conn).await.expect("migrates");
    let applied = versions(&conn, PRODUCT_MIGRATIONS).await;
    assert_eq!(
        applied.len(),
        9,
        "every product-service migration is recorded"
    );
    DefaultTable::install(&conn)
        .await
        .expect("seaql_migrations");
    for sql in [
        format!("INSERT INTO seaql_migrations (version, applied_at) SELECT version, applied_at FROM {PRODUCT_MIGRATIONS}"),
        format!("DROP TABLE {PRODUCT_MIGRATIONS}"),
        "INSERT INTO seaql_migrations (version, applied_at) VALUES ('m20990101_000001_someone_else', 1)".to_owned(),
    ] {
        conn.execute_unprepared(&sql).await.expect("the old layout");
    }
    let before = ProductService::new(conn.clone(), db.cache().await)
        .await
        .expect("service")
        .create(new_product("OLD-WAY-1"))
        .await
        .expect("a product of the old release");

    product_service::migrate(&conn)
        .await
        .expect("the old database upgrades (no migration runs twice)");
    product_service::migrate(&conn).await.expect("and again");

    assert_eq!(
        versions(&conn, PRODUCT_MIGRATIONS).await,
        applied,
        "the rows were carried over as they were (same versions, same times)"
    );
    assert_eq!(
        versions(&conn, "seaql_migrations").await,
        vec![("m20990101_000001_someone_else".to_owned(), 1)],
        "only the other application's row is left in seaql_migrations"
    );
    let service = ProductService::new(conn, db.cache().await)
        .await
        .expect("service");
    assert_eq!(
        read_product(&service, before.id).await,
        before,
        "the data is still there"
    );
    service
        .patch(product_id(before.id), price(5), None)
        .await
        .expect("writes work after the upgrade");
}

/// A host application whose own sea-orm migrator keeps its rows in `seaql_migrations`
/// migrates before and after product-service, and neither refuses the other.
async fn a_host_migrator_in_seaql_migrations_runs_beside_product_service(db: Fresh) {
    let conn = db.connect().await;
    // The host first; each then migrates beside the others' rows, a third embedder with
    // its own table too.
    let turns = [
        Embedder::Host,
        Embedder::Products,
        Embedder::Host,
        Embedder::Products,
        Embedder::Orders,
        Embedder::Host,
    ];
    for (turn, embedder) in turns.into_iter().enumerate() {
        embedder.migrate(&conn).await.unwrap_or_else(|error| {
            panic!("{embedder:?} migrates (turn {turn} of {turns:?}): {error}")
        });
    }
    assert_eq!(
        versions(&conn, "seaql_migrations")
            .await
            .into_iter()
            .map(|(version, _)| version)
            .collect::<Vec<_>>(),
        vec![HOST_MIGRATION.to_owned()],
        "seaql_migrations holds the host's rows only"
    );
    conn.execute_unprepared("INSERT INTO host_note (body) VALUES ('hello')")
        .await
        .expect("the host's table exists");
    db.both_services_read_and_write().await;
}

/// A pool built the plain sea-orm way (on SQLite also without a busy timeout) lacks what
/// `connect` sets on every session; both services refuse it and name each setting.
async fn a_pool_without_the_session_settings_is_refused_naming_them(db: Fresh) {
    let sqlite = db.url.starts_with("sqlite:");
    let mut options = ConnectOptions::new(db.url.clone());
    options.sqlx_logging(false);
    if sqlite {
        options.map_sqlx_sqlite_opts(|o| o.busy_timeout(std::time::Duration::ZERO));
    }
    let plain = Database::connect(options).await.expect("a plain pool");
    let expected = if sqlite {
        vec![SessionSetting::SqliteBusyTimeout, SessionSetting::SqliteWal]
    } else {
        vec![SessionSetting::PostgresQuietNotify]
    };

    let refused = ProductService::new(plain.clone(), db.cache().await).await;
    match refused {
        Err(product_service::Error::MissingSessionSettings(missing)) => {
            assert_eq!(
                missing, expected,
                "the product service names what is missing"
            )
        }
        other => panic!("the product service refuses the plain pool: {other:?}"),
    }
    let refused = OrderService::new(plain, db.cache().await).await;
    match refused {
        Err(orders_example::Error::Cache(CacheError::MissingSessionSettings(missing))) => {
            assert_eq!(
                missing, expected,
                "the coherence component names what is missing"
            )
        }
        other => panic!("the order service refuses the plain pool: {other:?}"),
    }

    // The same database through `connect` (for orders, the example's own `connect`).
    let conn = db.connect().await;
    product_service::migrate(&conn).await.expect("migrates");
    orders_example::migrate(&conn).await.expect("migrates");
    db.both_services_read_and_write().await;
}

const PRODUCT_MIGRATIONS: &str = "product_service_migrations";
const HOST_MIGRATION: &str = "m20261129_000001_create_host_note";

/// `(version, applied_at)` rows of a migration table, by version.
async fn versions(conn: &DatabaseConnection, table: &str) -> Vec<(String, i64)> {
    let rows = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            format!("SELECT version, applied_at FROM {table} ORDER BY version"),
        ))
        .await
        .expect("the migration table reads");
    rows.iter()
        .map(|row| {
            (
                row.try_get("", "version").expect("version"),
                row.try_get("", "applied_at").expect("applied_at"),
            )
        })
        .collect()
}

/// A migrator on sea-orm's default table, with no migrations: creates `seaql_migrations`
/// as every sea-orm application has it.
struct DefaultTable;

impl MigratorTrait for DefaultTable {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        Vec::new()
    }
}

/// A host application's migrator, on sea-orm's default table.
struct HostMigrator;

impl MigratorTrait for HostMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateHostNote)]
    }
}

struct CreateHostNote;

impl MigrationName for CreateHostNote {
    fn name(&self) -> &str {
        HOST_MIGRATION
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateHostNote {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("CREATE TABLE host_note (body TEXT NOT NULL)")
            .await
            .map(drop)
    }
}

fn new_product(sku: &str) -> NewProduct {
    NewProduct {
        sku: Sku::parse(sku).expect("valid sku"),
        name: ProductName::parse("Shared database").expect("valid name"),
        description: Description::default(),
        price_cents: PriceCents::parse(100).expect("valid price"),
        stock: Stock::parse(1).expect("valid stock"),
        category: Category::parse("c").expect("valid category"),
    }
}

fn price(cents: i64) -> ProductPatch {
    ProductPatch {
        price_cents: Some(PriceCents::parse(cents).expect("valid price")),
        ..ProductPatch::default()
    }
}

/// Product `id`, read through `service` (from the cache when it can).
async fn read_product(service: &ProductService, id: i64) -> product_service::Product {
    service.find_by_id(product_id(id)).await.expect("read")
}

fn product_id(id: i64) -> product_service::ProductId {
    product_service::ProductId::parse(id).expect("valid id")
}
