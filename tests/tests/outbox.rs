//! Invalidations are never lost: the outbox triggers record every change, from any
//! writer, and the relay applies them through Redis outages and restarts.

use std::time::{Duration, Instant};

use fred::prelude::ClientLike;
use integration_tests::fixtures::{Fixture, create_products, id};
use integration_tests::{eventually, test_name};
use product_service::{CoherenceConfig, Product, ProductService, RelayHandle};

integration_tests::on_database!(on_sqlite = sqlite, "outbox_":
    raw_sql_deletes_and_inserts_owe_invalidations_too,
    replaying_an_applied_invalidation_costs_no_load,
    invalidations_owed_before_a_crash_are_applied_at_the_next_start,
);
integration_tests::on_database!(on_postgres = postgres, "outbox_":
    on_postgres_only_writes_from_outside_the_service_notify_the_relays,
    two_instances_share_the_outbox_and_lose_nothing,
);

/// Reads product `product` until it is cached (the relay's first pass may hold reads).
async fn warm(f: &Fixture, product: i64) {
    let cached = eventually(Duration::from_secs(5), || async {
        f.service.find_by_id(id(product)).await.is_ok() && f.is_cached(product).await
    })
    .await;
    assert!(cached, "product {product} is cached");
}

/// A fixture on SQLite whose private Redis the test may stop and restart (a loud skip,
/// or a failure in CI, without one), its relay polling every `poll_interval`, and a
/// product at 100, cached.
async fn cached_product_over_private_redis(
    poll_interval: Duration,
) -> Option<(Fixture, RelayHandle, Product)> {
    let test = test_name();
    let f = Fixture::sqlite(&test).await?;
    if !f.has_private_redis(&test) {
        return None;
    }
    let relay = f.spawn_relay_polling(poll_interval);
    let p = f.create("CACHED-1", 100).await;
    warm(&f, p.id).await;
    Some((f, relay, p))
}

/// [`cached_product_over_private_redis`], then an RDB snapshot of its Redis (as a
/// persistent Redis takes) that still holds the product at 100.
async fn snapshot_of_a_cached_product(
    poll_interval: Duration,
) -> Option<(Fixture, RelayHandle, Product)> {
    let (f, relay, p) = cached_product_over_private_redis(poll_interval).await?;
    let _: () = f
        .redis
        .custom(fred::cmd!("SAVE"), Vec::<String>::new())
        .await
        .expect("SAVE");
    Some((f, relay, p))
}

/// Restarts the fixture's Redis from its RDB file and checks that the snapshot brought
/// product `product`'s entry (`entry`, for the failure message) back.
async fn restart_from_snapshot(f: &mut Fixture, product: i64, entry: &str) {
    f.private_redis()
        .restart()
        .expect("restart from the RDB file");
    assert!(
        f.is_cached(product).await,
        "the snapshot brought {entry} back"
    );
}

/// Reads product `product` every 10 ms for `window`, asserting each read is at `price`
/// and never `stale` (what the failure message calls the value it must not see).
async fn assert_read_at_price_throughout(
    f: &Fixture,
    product: i64,
    price: i64,
    window: Duration,
    stale: &str,
) {
    let started = Instant::now();
    while started.elapsed() < window {
        let read = f.read(product).await;
        assert_eq!(read.price_cents, price, "never {stale}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn a_raw_sql_update_reaches_the_cache(f: Fixture, poll_interval: Duration) {
    let relay = f.spawn_relay_polling(poll_interval);
    let p = f.create("RAW-1", 100).await;
    assert_eq!(f.read(p.id).await.price_cents, 100);

    // No version bump in the statement: the trigger bumps it.
    f.raw_sql(&format!(
        "UPDATE product SET price_cents = 555 WHERE id = {}",
        p.id
    ))
    .await;

    let committed = Instant::now();
    let seen = eventually(Duration::from_secs(5), || f.serves_price(p.id, 555)).await;
    // Reported, not asserted: timings belong in benchmarks.
    println!(
        "raw SQL UPDATE to a fresh cached read: {:?} (relay poll every {poll_interval:?})",
        committed.elapsed()
    );
    assert!(seen, "the cached product shows the raw UPDATE");
    let read = f.read(p.id).await;
    assert_eq!(read.version, 2, "the trigger bumped the version");
    relay.shutdown().await;
    assert_eq!(f.service.relay(100).backlog().await.expect("backlog"), 0);
}

#[tokio::test]
async fn a_raw_sql_update_on_sqlite_reaches_the_cache() {
    if let Some(f) = Fixture::sqlite("raw_sql_sqlite").await {
        a_raw_sql_update_reaches_the_cache(f, Duration::from_millis(100)).await;
    }
}

/// The relay polls only once a minute here, so only `NOTIFY` can wake it in time.
#[tokio::test]
async fn a_raw_sql_update_on_postgres_reaches_the_cache_through_notify() {
    if let Some(f) = Fixture::postgres("raw_sql_postgres").await {
        a_raw_sql_update_reaches_the_cache(f, Duration::from_secs(60)).await;
    }
}

/// The service invalidates inline, so its writes do not `NOTIFY` (a notifying commit
/// serialises every concurrent commit on PostgreSQL's notify lock); writes from anyone
/// else still do.
async fn on_postgres_only_writes_from_outside_the_service_notify_the_relays(f: Fixture) {
    use sea_orm::sqlx::{Connection, postgres::PgConnection, postgres::PgListener};

    let mut listener = PgListener::connect(&f.database_url)
        .await
        .expect("LISTEN connection");
    listener.listen("cache_outbox").await.expect("LISTEN");

    let p = f.create("QUIET-1", 100).await;
    f.patch_price(p.id, 200).await;
    f.service.delete(id(p.id), None).await.expect("delete");
    let mut admin = PgConnection::connect(&f.database_url)
        .await
        .expect("an admin tool's connection");
    let admin_pid: i32 = sea_orm::sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut admin)
        .await
        .expect("pid");
    sea_orm::sqlx::query(
        "INSERT INTO product (sku, name, price_cents, stock, created_at, updated_at) \
         VALUES ('QUIET-2', 'Raw', 1, 1, now(), now())",
    )
    .execute(&mut admin)
    .await
    .expect("raw INSERT");

    // Notifications arrive in commit order, so any sent by the service's three earlier
    // commits would come before the admin's.
    let first = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("the raw INSERT notifies within 5 s")
        .expect("notification");
    assert_eq!(
        first.process_id() as i32,
        admin_pid,
        "the first notification is the admin's: the service's writes sent none"
    );
}

async fn raw_sql_deletes_and_inserts_owe_invalidations_too(f: Fixture) {
    let p = f.create("DEL-1", 1).await;
    f.read(p.id).await;
    let relay = f.service.relay(100);
    relay.drain().await.expect("drain the create");

    f.raw_sql(&format!("DELETE FROM product WHERE id = {}", p.id))
        .await;
    assert_eq!(
        relay.backlog().await.expect("backlog"),
        1,
        "the DELETE owes one invalidation"
    );
    relay.drain().await.expect("drain");
    assert!(
        f.service.find_by_id(id(p.id)).await.is_err(),
        "the deleted product is gone from the cache"
    );
}

async fn replaying_an_applied_invalidation_costs_no_load(f: Fixture) {
    let p = f.create("REP-1", 1).await;
    f.patch_price(p.id, 2).await;
    f.read(p.id).await;
    let generation = f.list_generation().await;

    let applied = f.service.relay(100).drain().await.expect("drain");

    assert_eq!(
        applied, 1,
        "the patch was owed (the create removed its own row once it was applied)"
    );
    assert!(
        f.is_cached(p.id).await,
        "the v2 entry survived the late replay"
    );
    assert_eq!(
        f.list_generation().await,
        generation,
        "list pages were not invalidated again"
    );
}

#[tokio::test]
async fn a_redis_outage_loses_no_invalidation() {
    let Some((mut f, relay, p)) =
        cached_product_over_private_redis(Duration::from_millis(50)).await
    else {
        return;
    };

    f.private_redis().stop();
    let patched = f.patch_price(p.id, 200).await;
    assert_eq!(patched.price_cents, 200);
    let read = f.read(p.id).await;
    assert_eq!(
        read.price_cents, 200,
        "read from the database while Redis is down"
    );
    assert!(f.service.cache().is_degraded());
    assert!(
        f.service.relay(100).backlog().await.expect("backlog") >= 1,
        "the invalidation is owed"
    );

    f.private_redis().restart().expect("restart");
    let drained = eventually(Duration::from_secs(10), || async {
        f.service.relay(100).backlog().await.is_ok_and(|n| n == 0)
            && !f.service.cache().is_degraded()
    })
    .await;
    assert!(drained, "the backlog drains and the cache is used again");
    assert_eq!(f.read(p.id).await.price_cents, 200);
    let refilled = eventually(Duration::from_secs(5), || async {
        f.serves_price(p.id, 200).await && f.is_cached(p.id).await
    })
    .await;
    assert!(refilled, "reads fill the cache again, with the new value");
    relay.shutdown().await;
}

#[tokio::test]
async fn a_redis_restored_from_an_old_snapshot_never_serves_the_old_value() {
    // The relay wakes later than the breaker's 1 s cool-down ends, so reads in between
    // must be held by the resync gate, not by the cool-down.
    let Some((mut f, relay, p)) = snapshot_of_a_cached_product(Duration::from_secs(2)).await else {
        return;
    };

    f.private_redis().stop();
    f.patch_price(p.id, 200).await;
    restart_from_snapshot(&mut f, p.id, "the old entry").await;

    assert_read_at_price_throughout(&f, p.id, 200, Duration::from_millis(2500), "the old value")
        .await;
    relay.shutdown().await;
}

async fn invalidations_owed_before_a_crash_are_applied_at_the_next_start(f: Fixture) {
    let p = f.create("CRASH-1", 1).await;
    f.service
        .relay(100)
        .drain()
        .await
        .expect("drain the create");
    f.read(p.id).await;
    // A write whose process died between commit and invalidation leaves exactly this: a
    // committed row change and its outbox row, and nothing done in Redis.
    f.raw_sql(&format!(
        "UPDATE product SET price_cents = 9 WHERE id = {}",
        p.id
    ))
    .await;
    assert_eq!(f.read(p.id).await.price_cents, 1, "stale before");

    // The next start runs a relay.
    let relay = f.service.spawn_relay(CoherenceConfig::default());
    let seen = eventually(Duration::from_secs(5), || f.serves_price(p.id, 9)).await;
    assert!(seen, "the owed invalidation was applied");
    relay.shutdown().await;
}

#[tokio::test]
async fn a_redis_restarted_from_a_snapshot_older_than_an_applied_invalidation_is_not_trusted() {
    let Some((mut f, relay, p)) = snapshot_of_a_cached_product(Duration::from_millis(50)).await
    else {
        return;
    };

    // While Redis is up: the write is invalidated inline, and the new value cached.
    f.patch_price(p.id, 200).await;
    assert_eq!(f.read(p.id).await.price_cents, 200);

    // Redis dies and comes back from the snapshot, which still holds the old value.
    restart_from_snapshot(&mut f, p.id, "the invalidated entry").await;

    assert_read_at_price_throughout(
        &f,
        p.id,
        200,
        Duration::from_millis(1500),
        "the value from the old snapshot",
    )
    .await;
    assert_eq!(
        f.service.cache().epoch(),
        1,
        "every instance moved to a new cache epoch"
    );
    relay.shutdown().await;
}

/// Two instances (each with its own cache handle and relay) on one PostgreSQL database and
/// one Redis: every owed invalidation is applied, replays are harmless, none is lost.
async fn two_instances_share_the_outbox_and_lose_nothing(f: Fixture) {
    let other = ProductService::new(
        product_service::connect(&f.database_url)
            .await
            .expect("second pool"),
        integration_tests::redis_cache(&f.redis_url, f.prefix.clone()).await,
    )
    .await
    .expect("service");
    let fast = CoherenceConfig {
        poll_interval: Duration::from_millis(50),
        batch_size: 25,
        ..CoherenceConfig::default()
    };
    let relays = [f.service.spawn_relay(fast.clone()), other.spawn_relay(fast)];
    let ids = create_products(&f.service, "TWO", 100, 100).await;
    for instance in [&f.service, &other] {
        for product in &ids {
            instance.find_by_id(id(*product)).await.expect("warm");
        }
    }

    f.raw_sql("UPDATE product SET price_cents = price_cents + 1")
        .await;

    let all_fresh = eventually(Duration::from_secs(10), || async {
        for instance in [&f.service, &other] {
            for product in &ids {
                if !instance
                    .find_by_id(id(*product))
                    .await
                    .is_ok_and(|p| p.price_cents == 101 && p.version == 2)
                {
                    return false;
                }
            }
        }
        true
    })
    .await;
    assert!(all_fresh, "both instances serve every product's new value");
    for relay in relays {
        relay.shutdown().await;
    }
    assert_eq!(
        f.service.relay(100).backlog().await.expect("backlog"),
        0,
        "nothing left owed"
    );
}
