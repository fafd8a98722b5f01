//! What the order tests share: an [`Env`] per test (an [`OrderService`] over a fresh
//! database and a private `redis-server`, its relay running) and
//! [`on_both_databases!`], which runs a scenario on SQLite and on PostgreSQL.

use std::time::{Duration, Instant};

use cache_service::{CacheBackend, CacheKey, CoherenceConfig, RelayHandle};
use integration_tests::{
    RedisServer, TestDatabase, postgres_url_or_skip, redis_server_or_skip, unique_prefix,
};
use orders_example::{
    CustomerId, CustomerPage, NewOrder, ORDER_PAGE, Order, OrderId, OrderService, OrderStatus,
    TotalCents,
};

/// Runs each `async fn scenario(env: Env)` as `sqlite::scenario` and
/// `postgres::scenario`, with the default relay or, after `relay:`, one configured by
/// the expression given. A missing PostgreSQL or `redis-server` skips loudly (fails
/// under `CI=true`).
macro_rules! on_both_databases {
    ($($scenario:ident),* $(,)?) => {
        on_both_databases!(relay: cache_service::CoherenceConfig::default(); $($scenario),*);
    };
    (relay: $relay:expr; $($scenario:ident),* $(,)?) => {
        on_both_databases!(@on sqlite, $relay; $($scenario),*);
        on_both_databases!(@on postgres, $relay; $($scenario),*);
    };
    // A module named after the database, with one test per scenario on an
    // `Env::sqlite` or `Env::postgres`.
    (@on $database:ident, $relay:expr; $($scenario:ident),*) => {
        mod $database {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let name = concat!(
                        "orders_", stringify!($database), "_", stringify!($scenario)
                    );
                    if let Some(env) = crate::support::Env::$database(name, $relay).await {
                        super::$scenario(env).await;
                    }
                }
            )*
        }
    };
}

/// One test's world: the service under test over a fresh, migrated database and a
/// private Redis the test may stop and restart, with the service's relay running (it
/// has made its first pass).
#[derive(Debug)]
pub struct Env {
    /// The service under test.
    pub service: OrderService,
    /// Its relay.
    pub relay: RelayHandle,
    /// The private Redis behind the cache.
    pub redis: RedisServer,
    /// The database's URL, for writers outside the service.
    pub database_url: String,
    _database: Option<TestDatabase>,
    _dir: Option<tempfile::TempDir>,
}

impl Env {
    /// On a fresh SQLite file.
    pub async fn sqlite(test: &str, relay: CoherenceConfig) -> Option<Self> {
        let redis = redis_server_or_skip(test).await?;
        let dir = tempfile::tempdir().expect("temp dir");
        let url = integration_tests::sqlite_url(dir.path(), "orders.db");
        Some(Self::build(test, relay, redis, url, None, Some(dir)).await)
    }

    /// On a fresh PostgreSQL database.
    pub async fn postgres(test: &str, relay: CoherenceConfig) -> Option<Self> {
        let database = postgres_url_or_skip(test).await?;
        let redis = redis_server_or_skip(test).await?;
        let url = database.url().to_owned();
        Some(Self::build(test, relay, redis, url, Some(database), None).await)
    }

    async fn build(
        test: &str,
        relay: CoherenceConfig,
        redis: RedisServer,
        database_url: String,
        database: Option<TestDatabase>,
        dir: Option<tempfile::TempDir>,
    ) -> Self {
        let db = orders_example::connect(&database_url)
            .await
            .expect("the database connects");
        orders_example::migrate(&db)
            .await
            .expect("the migrations apply");
        let cache = integration_tests::redis_cache(&redis.url(), unique_prefix(test)).await;
        let service = OrderService::with_config(db, cache, relay)
            .await
            .expect("the service accepts the connection");
        let relay = service.start_relay().await.expect("the relay starts");
        relay.first_pass().await;
        Self {
            service,
            relay,
            redis,
            database_url,
            _database: database,
            _dir: dir,
        }
    }

    /// Places an order through the service.
    pub async fn place(&self, customer: i64, cents: i64) -> Order {
        let new = NewOrder {
            customer: CustomerId::parse(customer).expect("valid customer"),
            total: TotalCents::parse(cents).expect("valid total"),
        };
        self.service.place(new).await.expect("the order is placed")
    }

    /// Moves order `id` to `status` through the service, without a version check;
    /// `what` says why the write must succeed.
    pub async fn set_status(&self, id: OrderId, status: OrderStatus, what: &str) -> Order {
        let written = self.service.set_status(id, status, None).await;
        written.unwrap_or_else(|error| panic!("{what}: {error}"))
    }

    /// Places an order, reads it, and checks that the read cached it: the state every
    /// test of a stale read starts from. Returns the order and its id.
    pub async fn place_cached(&self, customer: i64, cents: i64) -> (Order, OrderId) {
        let placed = self.place(customer, cents).await;
        let id = order_id(placed.id);
        assert_eq!(self.service.find(id).await.expect("read"), placed);
        assert!(self.is_cached(id).await, "the read cached the order");
        (placed, id)
    }

    /// The backend of the order service's cache, and order `id`'s key in it: what a test
    /// looks at directly.
    fn stored(&self, id: OrderId) -> (&dyn CacheBackend, CacheKey) {
        (
            &**self.service.cache().backend(),
            self.service.order_key(id),
        )
    }

    /// Whether Redis holds an entry for order `id` (in the cache's current epoch).
    pub async fn is_cached(&self, id: OrderId) -> bool {
        let (backend, key) = self.stored(id);
        let entry = backend.get(&key).await.expect("GET of the order's key");
        entry.is_some()
    }

    /// The version fenced on order `id`'s key, if any.
    pub async fn fence(&self, id: OrderId) -> Option<u64> {
        let (backend, key) = self.stored(id);
        backend.fence(&key).await.expect("the fence can be read")
    }

    /// Whether Redis holds a lease on order `id`'s key: a read is loading it and will
    /// try to fill it.
    pub fn is_leased(&self, id: OrderId) -> bool {
        // `{key}:lease`, as `cache_service::key` documents it (the spelling is private).
        let lease = format!("{}:lease", self.service.order_key(id));
        self.redis.command(&["EXISTS", &lease]).expect("EXISTS") == "1"
    }

    /// Whether Redis holds `page` in its customer's scope's current generation.
    pub async fn page_is_cached(&self, page: &CustomerPage) -> bool {
        let cache = self.service.cache();
        let pages = ORDER_PAGE.scope(page.customer().get());
        let generation_key = cache.generation_key(&pages);
        let member = cache.member_key(pages, page.cache_member());
        let (_, entry) = cache
            .backend()
            .get_member(&generation_key, &member)
            .await
            .expect("GET of the page's key");
        entry.is_some()
    }

    /// Runs `sql` on a connection of its own, as an admin tool would (on PostgreSQL its
    /// commit notifies the relays).
    pub async fn raw_sql(&self, sql: &str) {
        integration_tests::raw_sql(&self.database_url, sql).await;
    }

    /// Waits until the relay has applied every invalidation the outbox owes; fails the
    /// test after 10 s.
    pub async fn relay_caught_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.service.coherence().backlog().await.expect("backlog") > 0 {
            assert!(
                Instant::now() < deadline,
                "the relay applies what the outbox owes"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the relay after its last drain.
    pub async fn finish(self) {
        self.relay.shutdown().await;
    }
}

/// A relay that polls once a minute: within a test it runs only when woken (by a
/// reconnection, a `NOTIFY`, or a write that could not invalidate inline), so what a
/// write's own invalidation does is not masked by a relay pass.
pub fn slow_relay() -> CoherenceConfig {
    CoherenceConfig {
        poll_interval: Duration::from_secs(60),
        ..CoherenceConfig::default()
    }
}

/// An order id from the database.
pub fn order_id(id: i64) -> OrderId {
    OrderId::parse(id).expect("a valid order id")
}

/// Awaits `future`, failing the test instead of hanging if it takes over 10 s.
pub async fn within_10s<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .expect("finished within 10 s")
}
