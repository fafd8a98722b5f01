//! The coherence component keeps its promises across processes: writers in other
//! processes, raw SQL that moves versions or ids, relays that share the outbox, a Redis
//! that restarts, a process cut off from Redis, and set-ups that cannot be coherent.
//!
//! "Processes" here are separate service handles with their own connections (pools,
//! Redis clients, relays), as two servers would have; the HTTP tests run real servers.

use std::time::{Duration, Instant};

use cache_service::{CacheConfig, CacheError, CacheService, Coherence, CoherenceConfig};
use fred::prelude::ClientLike;
use integration_tests::fixtures::{Fixture, id, new_product, price_patch};
use integration_tests::select_rows;
use integration_tests::tcp_relay::TcpRelay;
use product_service::{Error, ProductService};
use sea_orm::{ConnectionTrait, Database, TransactionTrait};

integration_tests::on_both_databases!("coherence_":
    raw_sql_that_lowers_a_version_still_invalidates_the_cached_copy,
    changing_a_product_id_with_raw_sql_invalidates_the_old_id,
    a_write_made_while_the_cache_recovers_returns_after_its_invalidation_is_applied,
    a_write_through_a_process_cut_off_from_redis_is_read_at_once_by_another,
    an_import_after_a_redis_restart_reaches_the_servers_new_epoch,
);
integration_tests::on_database!(on_sqlite = sqlite, "coherence_":
    on_sqlite_insert_or_replace_invalidates_the_cached_copy,
    the_eviction_policy_of_redis_is_checked,
);
integration_tests::on_database!(on_postgres = postgres, "coherence_":
    a_relay_keeps_reads_held_while_another_relay_holds_owed_rows,
);

/// A long poll: in these tests only a wake-up (a write's, `NOTIFY`, a reconnection) can
/// make a relay run in time.
fn slow_relay() -> CoherenceConfig {
    CoherenceConfig {
        poll_interval: Duration::from_secs(60),
        ..CoherenceConfig::default()
    }
}

async fn cached_price(f: &Fixture, product: i64) -> i64 {
    f.read(product).await.price_cents
}

/// Audit item 5: a restored row (its version set back) used to leave the cached copy
/// alone: the replay thought the fence, above the restored version, meant "applied".
async fn raw_sql_that_lowers_a_version_still_invalidates_the_cached_copy(f: Fixture) {
    let p = f.create("LOW-1", 100).await;
    for price in [200, 300] {
        f.patch_price(p.id, price).await;
    }
    assert_eq!(cached_price(&f, p.id).await, 300);
    assert!(f.is_cached(p.id).await, "v3 is cached");

    f.raw_sql(&format!(
        "UPDATE product SET price_cents = 7, version = 1 WHERE id = {}",
        p.id
    ))
    .await;
    f.service.relay(100).drain().await.expect("drain");

    let read = f.read(p.id).await;
    assert_eq!(
        read.price_cents, 7,
        "the restored row is served, not the cached v3"
    );
    assert_eq!(
        read.version, 4,
        "the version never goes back: the trigger raised it"
    );
}

/// Audit item 5: `UPDATE … SET id = …` used to owe an invalidation for the new id only.
async fn changing_a_product_id_with_raw_sql_invalidates_the_old_id(f: Fixture) {
    let p = f.create("REKEY-1", 100).await;
    assert_eq!(cached_price(&f, p.id).await, 100);
    let new_id = p.id + 1000;
    // The new id was read while absent: "absent" is cached for it.
    assert!(f.service.find_by_id(id(new_id)).await.is_err());

    f.raw_sql(&format!(
        "UPDATE product SET id = {new_id} WHERE id = {}",
        p.id
    ))
    .await;
    f.service.relay(100).drain().await.expect("drain");

    assert!(
        matches!(
            f.service.find_by_id(id(p.id)).await,
            Err(Error::NotFound { .. })
        ),
        "the old id is gone"
    );
    assert_eq!(
        cached_price(&f, new_id).await,
        100,
        "the new id is no longer cached as absent"
    );
}

/// Audit item 2: a write that committed while the cache was recovering from an outage
/// skipped its invalidation and returned; a relay pass that had already looked at the
/// outbox could then reopen reads with the old entry in place. Now the write returns only
/// once its invalidation is applied (here by this process's relay, woken at once).
async fn a_write_made_while_the_cache_recovers_returns_after_its_invalidation_is_applied(
    mut f: Fixture,
) {
    if !f.has_private_redis(
        "a_write_made_while_the_cache_recovers_returns_after_its_invalidation_is_applied",
    ) {
        return;
    }
    let mut redis = f.redis_server.take().expect("a private Redis");
    let p = f.create("RECOVER-1", 100).await;
    let relay = f.service.spawn_relay(slow_relay());
    relay.first_pass().await;
    assert_eq!(cached_price(&f, p.id).await, 100);
    assert!(f.is_cached(p.id).await);

    // An outage: a read times out and trips the breaker; then Redis answers again.
    redis.freeze().expect("freeze");
    assert_eq!(
        cached_price(&f, p.id).await,
        100,
        "served from the database"
    );
    redis.thaw().expect("thaw");
    assert!(f.service.cache().is_degraded(), "reads wait for the replay");

    f.patch_price(p.id, 250).await;
    assert!(
        !f.is_cached(p.id).await,
        "when the write returns, its invalidation has been applied"
    );
    assert_eq!(cached_price(&f, p.id).await, 250);
    relay.shutdown().await;
}

/// Audit item 1: a process whose Redis is cut off used to return from a write with the
/// invalidation owed, while another process kept serving the old value from Redis until
/// some relay polled. Now the write wakes every relay and waits for one to apply it.
async fn a_write_through_a_process_cut_off_from_redis_is_read_at_once_by_another(f: Fixture) {
    let relay_to_redis = TcpRelay::start(redis_addr(&f.redis_url))
        .await
        .expect("TCP relay");
    let cut_off = f.peer(&relay_to_redis.url()).await;
    let reader = f.peer_with(&f.redis_url, slow_relay()).await;
    let relay = reader.spawn_relay(slow_relay());
    relay.first_pass().await;

    let p = cut_off
        .create(new_product("CUT-1", 100))
        .await
        .expect("create");
    assert_eq!(
        reader.find_by_id(id(p.id)).await.expect("read").price_cents,
        100
    );
    assert_eq!(
        reader.find_by_id(id(p.id)).await.expect("read").price_cents,
        100
    );
    assert!(f.is_cached(p.id).await, "the reader serves it from Redis");

    relay_to_redis.freeze();
    // On SQLite the other relays poll: with a 60 s poll none would come in time, so
    // there the write's own bound applies; give the reader a normal relay.
    let sqlite = f.database_url.starts_with("sqlite:");
    let fast = sqlite.then(|| reader.spawn_relay(CoherenceConfig::default()));
    let started = Instant::now();
    cut_off
        .patch(id(p.id), price_patch(250), None)
        .await
        .expect("the write succeeds without its Redis");
    let took = started.elapsed();
    assert_eq!(
        reader.find_by_id(id(p.id)).await.expect("read").price_cents,
        250,
        "read at once on the other process (the write took {took:?})"
    );
    relay_to_redis.thaw();
    if let Some(fast) = fast {
        fast.shutdown().await;
    }
    relay.shutdown().await;
}

/// The measured defect: after a Redis restart the servers moved to a new epoch, but an
/// import never joined it: it invalidated keys of the old epoch, settled its outbox rows,
/// and the servers kept the old price until the TTL.
async fn an_import_after_a_redis_restart_reaches_the_servers_new_epoch(mut f: Fixture) {
    if !f.has_private_redis("an_import_after_a_redis_restart_reaches_the_servers_new_epoch") {
        return;
    }
    let p = f.create("IMP-EPOCH-1", 100).await;
    let relay = f.service.spawn_relay(slow_relay());
    relay.first_pass().await;
    assert_eq!(cached_price(&f, p.id).await, 100);

    let before = f.service.cache().epoch();
    f.private_redis().restart().expect("restart");
    // The reconnection wakes the relay, which moves to the new epoch.
    let deadline = Instant::now() + Duration::from_secs(10);
    while f.service.cache().epoch() == before || f.service.cache().is_degraded() {
        assert!(Instant::now() < deadline, "the relay moved to a new epoch");
        let _ = f.service.find_by_id(id(p.id)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cached_price(&f, p.id).await, 100);
    assert_eq!(cached_price(&f, p.id).await, 100);

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("prices.csv");
    std::fs::write(&file, "sku,price_cents\nIMP-EPOCH-1,250\n").expect("CSV");
    let settings = api_server::Settings {
        bind: "127.0.0.1:0".parse().expect("address"),
        database_url: f.database_url.clone(),
        redis_url: Some(f.redis_url.clone()),
        cache_prefix: f.prefix.clone(),
        cache_ttl_secs: 300,
        cache_max_entries: 1000,
        api_token: Some("t".into()),
        ..api_server::Settings::default()
    };
    api_server::import::run(&settings, &file, false)
        .await
        .expect("import succeeds");

    assert_eq!(
        cached_price(&f, p.id).await,
        250,
        "the server shows the import's change at once"
    );
    relay.shutdown().await;
}

fn redis_addr(url: &str) -> std::net::SocketAddr {
    url.trim_start_matches("redis://")
        .parse()
        .expect("redis://host:port")
}

/// Audit item 3: a relay whose `SKIP LOCKED` select found nothing, because another relay
/// held the owed rows, reopened reads before those rows were applied.
async fn a_relay_keeps_reads_held_while_another_relay_holds_owed_rows(f: Fixture) {
    let p = f.create("HELD-1", 100).await;
    // A change from outside the service: it is owed until a relay applies it.
    f.raw_sql(&format!(
        "UPDATE product SET price_cents = 5 WHERE id = {}",
        p.id
    ))
    .await;
    // Another relay's transaction: it holds every owed row.
    let other = Database::connect(&f.database_url).await.expect("connect");
    let holding = other.begin().await.expect("begin");
    holding
        .execute_unprepared("SELECT id FROM cache_outbox FOR UPDATE")
        .await
        .expect("lock the rows");

    let relay = f.service.spawn_relay(CoherenceConfig {
        poll_interval: Duration::from_millis(20),
        ..CoherenceConfig::default()
    });
    relay.first_pass().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        f.service.cache().is_degraded(),
        "owed rows are still held by another relay: reads wait"
    );

    holding.rollback().await.expect("the other relay gives up");
    let deadline = Instant::now() + Duration::from_secs(5);
    while f.service.cache().is_degraded() {
        assert!(
            Instant::now() < deadline,
            "reads reopen once the rows are applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(f.service.relay(100).backlog().await.expect("backlog"), 0);
    relay.shutdown().await;
}

/// SQLite's `INSERT OR REPLACE` replaces a row without its delete trigger: the re-created
/// row, at version 1, used to be taken as "already applied" (the fence was higher).
async fn on_sqlite_insert_or_replace_invalidates_the_cached_copy(f: Fixture) {
    let p = f.create("REPL-1", 100).await;
    f.patch_price(p.id, 200).await;
    assert_eq!(cached_price(&f, p.id).await, 200);
    assert!(f.is_cached(p.id).await);

    f.raw_sql(&format!(
        "INSERT OR REPLACE INTO product (id, sku, name, description, price_cents, stock, \
             category, version, created_at, updated_at) VALUES ({}, 'REPL-1', 'Restored', '', 9, \
             1, '', 1, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
        p.id
    ))
    .await;
    f.service.relay(100).drain().await.expect("drain");
    assert_eq!(
        cached_price(&f, p.id).await,
        9,
        "the re-created row is served, not the cached v2"
    );
}

/// Sets the fixture's Redis `maxmemory-policy`.
async fn set_eviction_policy(f: &Fixture, policy: &str) {
    let _: () = f
        .redis
        .custom(
            fred::cmd!("CONFIG"),
            vec!["SET", "maxmemory-policy", policy],
        )
        .await
        .expect("CONFIG SET");
}

/// Audit item 6: an eviction policy that may drop fences and leases is reported.
async fn the_eviction_policy_of_redis_is_checked(f: Fixture) {
    set_eviction_policy(&f, "volatile-lru").await;
    assert_eq!(
        f.service
            .coherence()
            .check_eviction_policy()
            .await
            .as_deref(),
        Some("volatile-lru")
    );
    set_eviction_policy(&f, "noeviction").await;
}

/// The measured defect: two servers on one database with in-process caches served 78 of
/// 80 reads stale after the other's writes. A second relay with an in-process cache is
/// now refused, and so is any relay next to one.
#[tokio::test]
async fn an_in_process_cache_refuses_to_share_its_database() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = integration_tests::sqlite_url(dir.path(), "products.db");
    let service = async |db| {
        let cache =
            CacheService::in_memory(CacheConfig::with_prefix("shared"), 1000).expect("cache");
        ProductService::new(db, cache).await.expect("service")
    };
    let db = product_service::connect(&url).await.expect("connect");
    product_service::migrate(&db).await.expect("migrate");
    let first = service(db).await;
    let running = first
        .coherence()
        .start_relay()
        .await
        .expect("the first one starts");

    let second = service(product_service::connect(&url).await.expect("connect")).await;
    let refused = second.coherence().start_relay().await;
    assert!(
        matches!(&refused, Err(CacheError::Incoherent(message)) if message.contains("Redis")),
        "a second process with an in-process cache is refused: {refused:?}"
    );

    // After a clean stop the database is free again.
    running.shutdown().await;
    let again = second
        .coherence()
        .start_relay()
        .await
        .expect("starts once alone");
    again.shutdown().await;
}

/// Creates a table with `create_table` and the coherence tables on `db`; the schema
/// manager, to install the table's triggers with.
async fn table_and_coherence_tables<'a>(
    db: &'a sea_orm::DatabaseConnection,
    create_table: &str,
) -> sea_orm_migration::SchemaManager<'a> {
    db.execute_unprepared(create_table).await.expect("table");
    let manager = sea_orm_migration::SchemaManager::new(db);
    cache_service::coherence::tables_migration()
        .up(&manager)
        .await
        .expect("coherence tables");
    manager
}

/// The coherence component works for any table: a second entity declares its table and
/// gets the triggers (created rows, changes and deletes all owe their invalidation).
#[tokio::test]
async fn any_table_gets_the_outbox_triggers() {
    use cache_service::{Group, Namespace, OutboxTable};
    const ORDER: Namespace = Namespace::new("order");
    const ORDER_LIST: Group = Group::new("order_list");
    const ORDERS: OutboxTable = OutboxTable {
        table: "orders",
        id_column: "id",
        version_column: "version",
        namespace: ORDER,
        groups: &[ORDER_LIST],
        scoped_groups: &[],
    };
    let db = product_service::connect("sqlite::memory:")
        .await
        .expect("connect");
    let manager = table_and_coherence_tables(
        &db,
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER NOT NULL, version INTEGER NOT NULL DEFAULT 1)",
    )
    .await;
    ORDERS
        .migration("m_orders_outbox")
        .up(&manager)
        .await
        .expect("triggers");
    db.execute_unprepared("INSERT INTO orders (id, total) VALUES (1, 10)")
        .await
        .expect("insert");
    db.execute_unprepared("UPDATE orders SET total = 11 WHERE id = 1")
        .await
        .expect("update");
    db.execute_unprepared("DELETE FROM orders WHERE id = 1")
        .await
        .expect("delete");
    let owed: Vec<(String, i64, i64)> = select_rows(
        &db,
        "SELECT namespace, entity_id, version FROM cache_outbox ORDER BY id",
    )
    .await;
    assert_eq!(
        owed,
        vec![
            ("order".into(), 1, -1),
            ("order".into(), 1, 2),
            ("order".into(), 1, 3)
        ],
        "created at v1, changed to v2 (raised by the trigger), deleted after v2"
    );
    let cache = CacheService::in_memory(CacheConfig::with_prefix("orders"), 100).expect("cache");
    let coherence = Coherence::new(db, cache, &[ORDERS], CoherenceConfig::default())
        .await
        .expect("coherence");
    assert_eq!(coherence.drain().await.expect("drain"), 3);
    assert_eq!(coherence.backlog().await.expect("backlog"), 0);
}

/// A crashed process leaves its registration behind; it blocks nobody once stale (3 s),
/// and the next relay to register deletes it once it is an hour old, so the table does
/// not grow with every crash.
#[tokio::test]
async fn registrations_of_long_gone_processes_are_forgotten() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = integration_tests::sqlite_url(dir.path(), "r.db");
    let db = product_service::connect(&url).await.expect("connect");
    product_service::migrate(&db).await.expect("migrate");
    let two_hours_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
        - 2 * 3600 * 1000;
    db.execute_unprepared(&format!(
        "INSERT INTO cache_instance (id, in_process, heartbeat_ms) VALUES ('crashed', true, {two_hours_ago})"
    ))
    .await
    .expect("a crashed process's registration");
    let cache = CacheService::in_memory(CacheConfig::with_prefix("forget"), 100).expect("cache");
    let service = ProductService::new(db.clone(), cache)
        .await
        .expect("service");
    let relay = service
        .coherence()
        .start_relay()
        .await
        .expect("a stale registration blocks nobody");
    let left: Vec<(i64,)> = select_rows(
        &db,
        "SELECT COUNT(*) FROM cache_instance WHERE id = 'crashed'",
    )
    .await;
    assert_eq!(left, [(0,)], "the crashed process's registration is gone");
    relay.shutdown().await;
}

/// Reinstalling a table's triggers on a pooled SQLite file runs on one connection. Its
/// `DROP` and the `CREATE` after it used to go to two pooled connections, one of which
/// still had the old schema cached, and the `CREATE` failed with "trigger … already
/// exists" (a migration that failed now and then under load).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reinstalling_triggers_on_a_pooled_sqlite_file_never_meets_a_stale_schema() {
    use cache_service::{Namespace, OutboxTable};
    const ITEMS: OutboxTable = OutboxTable {
        table: "items",
        id_column: "id",
        version_column: "version",
        namespace: Namespace::new("item"),
        groups: &[],
        scoped_groups: &[],
    };
    const POOL: u32 = 8;
    for round in 0..20 {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = integration_tests::sqlite_url(dir.path(), "items.db");
        let mut options = sea_orm::ConnectOptions::new(url);
        options.max_connections(POOL).min_connections(POOL);
        let db = Database::connect(options).await.expect("connect");
        let manager = table_and_coherence_tables(
            &db,
            "CREATE TABLE items (id INTEGER PRIMARY KEY, version INTEGER NOT NULL DEFAULT 1)",
        )
        .await;
        let install = ITEMS.migration("m_items_outbox");
        install.up(&manager).await.expect("first install");
        // Every pooled connection caches the schema with the triggers in it.
        let held: Vec<_> = futures::future::join_all((0..POOL).map(|_| async {
            let txn = db.begin().await.expect("begin");
            txn.execute_unprepared("SELECT count(*) FROM sqlite_master")
                .await
                .expect("read the schema");
            txn
        }))
        .await;
        for txn in held {
            txn.commit().await.expect("commit");
        }
        install
            .up(&manager)
            .await
            .unwrap_or_else(|e| panic!("round {round}: reinstall: {e}"));
    }
}
