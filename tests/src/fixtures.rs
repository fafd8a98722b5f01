//! Product-service fixtures: a [`ProductService`] over a fresh, migrated database (SQLite
//! file or PostgreSQL) and a Redis under a unique prefix, plus input builders.

use std::time::Duration;

use cache_service::RelayHandle;
use fred::prelude::{Client, KeysInterface};
use product_service::{
    Category, CoherenceConfig, Description, NewProduct, PageQuery, PriceCents, Product, ProductId,
    ProductName, ProductPatch, ProductService, Sku, Stock,
};

use crate::cluster::RedisCluster;
use crate::{RedisServer, TestDatabase, postgres_url_or_skip, redis_url_or_skip, unique_prefix};

/// A service over a migrated database and a Redis under a unique prefix.
#[derive(Debug)]
pub struct Fixture {
    /// The service under test.
    pub service: ProductService,
    /// A plain client of the same Redis.
    pub redis: Client,
    /// The cache key prefix.
    pub prefix: String,
    /// The database URL.
    pub database_url: String,
    /// The Redis URL.
    pub redis_url: String,
    /// The private Redis, if one was started.
    pub redis_server: Option<RedisServer>,
    _database: Option<TestDatabase>,
    _dir: Option<tempfile::TempDir>,
}

impl Fixture {
    pub async fn sqlite(test: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = crate::sqlite_url(dir.path(), "products.db");
        Self::build(test, &url, None, Some(dir)).await
    }

    pub async fn postgres(test: &str) -> Option<Self> {
        let database = postgres_url_or_skip(test).await?;
        let url = database.url().to_owned();
        Self::build(test, &url, Some(database), None).await
    }

    pub async fn build(
        test: &str,
        db_url: &str,
        database: Option<TestDatabase>,
        dir: Option<tempfile::TempDir>,
    ) -> Option<Self> {
        let (redis_url, redis_server) = redis_url_or_skip(test).await?;
        let prefix = unique_prefix(test);
        let db = product_service::connect(db_url)
            .await
            .expect("database connects");
        product_service::migrate(&db)
            .await
            .expect("migrations apply");
        let cache = crate::redis_cache(&redis_url, prefix.clone()).await;
        let redis = crate::redis_client(&redis_url).await.expect("client");
        Some(Self {
            service: ProductService::new(db, cache).await.expect("service"),
            database_url: db_url.to_owned(),
            redis_url: redis_url.clone(),
            redis,
            prefix,
            redis_server,
            _database: database,
            _dir: dir,
        })
    }

    /// Another process's service on the same database and cache prefix, over
    /// `redis_url` (this Redis, or a [`TcpRelay`](crate::tcp_relay::TcpRelay) to it).
    pub async fn peer(&self, redis_url: &str) -> ProductService {
        self.peer_with(redis_url, CoherenceConfig::default()).await
    }

    /// [`peer`](Self::peer) with its own coherence settings.
    pub async fn peer_with(&self, redis_url: &str, config: CoherenceConfig) -> ProductService {
        let db = product_service::connect(&self.database_url)
            .await
            .expect("database connects");
        let cache = crate::redis_cache(redis_url, self.prefix.clone()).await;
        ProductService::with_config(db, cache, config)
            .await
            .expect("service")
    }

    /// Whether this fixture has a private Redis, which tests that stop or restart their
    /// Redis need; `false` after a loud "SKIPPED" notice (a panic in CI) when it uses the
    /// shared `TEST_REDIS_URL`.
    pub fn has_private_redis(&self, test: &str) -> bool {
        self.redis_server.is_some()
            || crate::skip::<()>(test, "needs a private redis-server (unset TEST_REDIS_URL)")
                .is_some()
    }

    /// Runs `sql` on the fixture's database over a separate connection, behind the
    /// service's back, as an admin tool would: only the outbox triggers see it.
    pub async fn raw_sql(&self, sql: &str) {
        crate::raw_sql(&self.database_url, sql).await;
    }

    /// The private Redis of a fixture that [`has_private_redis`](Self::has_private_redis),
    /// to stop, freeze or restart.
    pub fn private_redis(&mut self) -> &mut RedisServer {
        self.redis_server.as_mut().expect("a private Redis")
    }

    /// The service's relay, polling the outbox every `poll_interval`.
    pub fn spawn_relay_polling(&self, poll_interval: Duration) -> RelayHandle {
        self.service.spawn_relay(CoherenceConfig {
            poll_interval,
            ..CoherenceConfig::default()
        })
    }

    /// Creates [`new_product`]`(sku, price)` through the service.
    pub async fn create(&self, sku: &str, price: i64) -> Product {
        self.service
            .create(new_product(sku, price))
            .await
            .expect("create")
    }

    /// Product `id` as the service reads it (from the cache when it can).
    pub async fn read(&self, id: i64) -> Product {
        self.service
            .find_by_id(self::id(id))
            .await
            .expect("read through the service")
    }

    /// Whether the service reads product `id` at `price` now (`false` on any error), for
    /// polling with [`eventually`](crate::eventually).
    pub async fn serves_price(&self, id: i64, price: i64) -> bool {
        self.service
            .find_by_id(self::id(id))
            .await
            .is_ok_and(|p| p.price_cents == price)
    }

    /// Sets product `id`'s price through the service, with no version condition.
    pub async fn patch_price(&self, id: i64, price: i64) -> Product {
        self.service
            .patch(self::id(id), price_patch(price), None)
            .await
            .expect("patch through the service")
    }

    /// The Redis key of product `id`, in the cache's current epoch.
    pub fn item_key(&self, id: i64) -> String {
        self.service
            .cache()
            .key(product_service::PRODUCT, id)
            .as_str()
            .to_owned()
    }

    pub async fn is_cached(&self, id: i64) -> bool {
        let exists: i64 = self.redis.exists(self.item_key(id)).await.expect("EXISTS");
        exists == 1
    }

    pub async fn list_generation(&self) -> Option<String> {
        self.redis
            .get(format!("{}:product_list:generation", self.prefix))
            .await
            .expect("GET generation")
    }
}

/// A valid new product with this sku and price.
pub fn new_product(sku: &str, price: i64) -> NewProduct {
    NewProduct {
        sku: Sku::parse(sku).expect("valid sku"),
        name: ProductName::parse(format!("Product {sku}")).expect("valid name"),
        description: Description::default(),
        price_cents: PriceCents::parse(price).expect("valid price"),
        stock: Stock::parse(1).expect("valid stock"),
        category: Category::parse("cat").expect("valid category"),
    }
}

/// Creates `count` products `{prefix}-0`, `{prefix}-1`, … (see [`new_product`]) at
/// `price` through `service`; returns their ids in that order.
pub async fn create_products(
    service: &ProductService,
    prefix: &str,
    count: usize,
    price: i64,
) -> Vec<i64> {
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let sku = format!("{prefix}-{i}");
        ids.push(
            service
                .create(new_product(&sku, price))
                .await
                .expect("create")
                .id,
        );
    }
    ids
}

/// Creates products `{sku_prefix}-0`, `{sku_prefix}-1`, … at `price` through `service`
/// until each of `cluster`'s first `masters` nodes (its masters) holds one, at most
/// `limit` products; returns each product's id with the node holding its key.
pub async fn products_on_every_master(
    service: &ProductService,
    cluster: &RedisCluster,
    masters: usize,
    sku_prefix: &str,
    limit: usize,
) -> Vec<(i64, usize)> {
    let mut products: Vec<(i64, usize)> = Vec::new();
    for n in 0..limit {
        let p = service
            .create(new_product(&format!("{sku_prefix}-{n}"), 100))
            .await
            .expect("create");
        let key = service.cache().key(product_service::PRODUCT, p.id);
        products.push((p.id, cluster.master_of(key.as_str()).expect("master")));
        let held: std::collections::BTreeSet<usize> = products.iter().map(|(_, m)| *m).collect();
        if held.len() == masters {
            break;
        }
    }
    products
}

/// A patch of the price only.
pub fn price_patch(price: i64) -> ProductPatch {
    ProductPatch {
        price_cents: Some(PriceCents::parse(price).expect("valid price")),
        ..ProductPatch::default()
    }
}

/// A product id.
pub fn id(n: i64) -> ProductId {
    ProductId::parse(n).expect("valid id")
}

/// The first page of 20, unfiltered.
pub fn first_page() -> PageQuery {
    PageQuery::parse(1, 20, None).expect("valid page")
}

/// Asserts that each of `products` (its id, and the master holding its key) settles at
/// `price` (see [`settled_price`]): no read is older than the acknowledged write. `after`
/// names the event a failure blames.
pub async fn assert_every_product_settles_at(
    service: &ProductService,
    products: &[(i64, usize)],
    price: i64,
    after: &str,
) {
    for (product, held_by) in products {
        assert_eq!(
            settled_price(service, *product).await,
            price,
            "{after}: product {product} (on master {held_by}) is not at its acknowledged price"
        );
    }
}

/// Reads product `product` until the cache serves again (after a failover or a restore,
/// until the relay has checked the new Redis), then returns the price read; panics
/// after 20 s.
pub async fn settled_price(service: &ProductService, product: i64) -> i64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let price = service
            .find_by_id(id(product))
            .await
            .expect("read")
            .price_cents;
        if !service.cache().is_degraded() {
            return service
                .find_by_id(id(product))
                .await
                .expect("read")
                .price_cents;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cache is used again (last read {price})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A service on a fresh SQLite file over the Redis at `redis_url` (a cluster or a
/// sentinel set-up, say), with a relay that polls every 50 ms and has made its first
/// pass. Keep the directory alive as long as the service.
pub async fn service_over(
    redis_url: &str,
    test: &str,
) -> (
    ProductService,
    cache_service::RelayHandle,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = crate::sqlite_url(dir.path(), "products.db");
    let db = product_service::connect(&url).await.expect("database");
    product_service::migrate(&db).await.expect("migrate");
    let cache = crate::redis_cache(redis_url, unique_prefix(test)).await;
    let service = ProductService::new(db, cache).await.expect("service");
    let relay = service.spawn_relay(CoherenceConfig {
        poll_interval: std::time::Duration::from_millis(50),
        ..CoherenceConfig::default()
    });
    relay.first_pass().await;
    (service, relay, dir)
}
