//! The invalidation auditor (`cache_service::coherence::audit`) against a real Redis and
//! real databases: silent across concurrent writers and readers on two processes, and
//! loud about an entry planted behind the invalidation path's back (but not about one
//! whose invalidation is still owed). Each scenario runs on SQLite and PostgreSQL.

use std::time::{Duration, Instant};

use cache_service::{AuditConfig, CoherenceConfig, codec};
use fred::prelude::KeysInterface;
use integration_tests::fixtures::{Fixture, id, new_product, price_patch};
use sea_orm::{ConnectionTrait, Database};

integration_tests::on_both_databases!("audit_":
    no_mismatch_across_concurrent_writes_and_reads_on_two_processes,
    a_planted_stale_entry_is_caught_and_an_owed_one_is_not,
);

const PRODUCTS: i64 = 6;
const WRITES_PER_WRITER: usize = 40;
const READS_PER_READER: usize = 150;

/// Two processes write the same products while four readers read them and an auditor
/// runs passes back to back. Every stale entry the auditor could see has its
/// invalidation owed in the outbox, so it counts none; after the relay caught up and
/// every product was read again, a last pass compares cached entries and still finds
/// none.
async fn no_mismatch_across_concurrent_writes_and_reads_on_two_processes(f: Fixture) {
    let mut ids = Vec::new();
    for n in 0..PRODUCTS {
        let created = f
            .service
            .create(new_product(&format!("AUDIT-{n}"), 100))
            .await
            .expect("create");
        ids.push(created.id);
    }
    let fast = CoherenceConfig {
        poll_interval: Duration::from_millis(20),
        ..CoherenceConfig::default()
    };
    let relay = f.service.spawn_relay(fast.clone());
    relay.first_pass().await;
    let other = f.peer_with(&f.redis_url, fast.clone()).await;
    let other_relay = other.spawn_relay(fast);
    other_relay.first_pass().await;
    let auditor = f.service.coherence().spawn_auditor(AuditConfig {
        every: Duration::from_millis(1),
        sample: PRODUCTS as u32,
    });

    let mut tasks = Vec::new();
    for (writer, service) in [f.service.clone(), other.clone()].into_iter().enumerate() {
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..WRITES_PER_WRITER {
                let product = ids[(n + writer) % ids.len()];
                let price = (writer * 10_000 + n) as i64;
                service
                    .patch(id(product), price_patch(price), None)
                    .await
                    .expect("write");
            }
        }));
    }
    for reader in 0..4 {
        let service = if reader % 2 == 0 {
            f.service.clone()
        } else {
            other.clone()
        };
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..READS_PER_READER {
                let product = ids[(n * 7 + reader) % ids.len()];
                service.find_by_id(id(product)).await.expect("read");
            }
        }));
    }
    for task in tasks {
        task.await.expect("no task panicked");
    }
    auditor.passes(1).await;
    let during = auditor.shutdown().await;
    println!("auditor during the run: {during:?}");
    assert!(
        during.passes > 0,
        "the auditor ran during the run: {during:?}"
    );
    assert_eq!(
        during.mismatches, 0,
        "no stale entry during the run: {during:?}"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    while f.service.coherence().backlog().await.expect("backlog") > 0 {
        assert!(Instant::now() < deadline, "the relays apply what is owed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for product in &ids {
        f.read(*product).await;
        assert!(f.is_cached(*product).await, "product {product} is cached");
    }
    let last = f
        .service
        .coherence()
        .audit(4 * PRODUCTS as u32)
        .await
        .expect("audit");
    assert!(last.checks > 0, "cached entries were compared: {last:?}");
    assert_eq!(last.mismatches, 0, "and none is stale: {last:?}");
    other_relay.shutdown().await;
    relay.shutdown().await;
}

/// An entry older than its row is a mismatch only when nothing owed explains it: a raw
/// SQL write whose invalidation waits in the outbox is not one; the same old version
/// written straight into Redis after the invalidation was applied is, and the auditor
/// names its key and leaves it where it is.
async fn a_planted_stale_entry_is_caught_and_an_owed_one_is_not(f: Fixture) {
    let coherence = f.service.coherence().clone();
    let created = f
        .service
        .create(new_product("PLANT-1", 100))
        .await
        .expect("create");
    let patched = f.patch_price(created.id, 200).await;
    assert_eq!(patched.version, 2);
    f.read(created.id).await;
    let fresh = coherence.audit(4).await.expect("audit");
    assert_eq!((fresh.checks, fresh.mismatches), (1, 0), "{fresh:?}");

    // A raw SQL write (version 3): no relay runs, so its invalidation stays owed and
    // the cached version 2 is stale but explained.
    let admin = Database::connect(&f.database_url)
        .await
        .expect("a separate connection");
    admin
        .execute_unprepared(&format!(
            "UPDATE product SET price_cents = 300 WHERE id = {}",
            created.id
        ))
        .await
        .expect("raw SQL");
    admin.close().await.expect("closes");
    assert!(
        f.is_cached(created.id).await,
        "the old entry is still there"
    );
    let owed = coherence.audit(4).await.expect("audit");
    assert_eq!(
        (owed.checks, owed.mismatches),
        (1, 0),
        "an owed invalidation explains the old entry: {owed:?}"
    );

    f.service.relay(100).drain().await.expect("drain");
    assert!(
        !f.is_cached(created.id).await,
        "the drain removed the entry"
    );
    let empty = coherence.audit(4).await.expect("audit");
    assert_eq!((empty.checks, empty.mismatches), (0, 0), "{empty:?}");

    // Version 2 again, written straight into Redis: nothing will ever remove it.
    let key = f.item_key(created.id);
    let planted = codec::encode(2, &serde_json::json!({"price_cents": 200})).expect("encodes");
    let _: () = f
        .redis
        .set(
            &key,
            fred::types::Value::Bytes(planted.clone().into()),
            None,
            None,
            false,
        )
        .await
        .expect("SET");
    let caught = coherence.audit(4).await.expect("audit");
    assert_eq!(
        (caught.checks, caught.mismatches),
        (1, 1),
        "the planted entry is caught: {caught:?}"
    );
    assert_eq!(caught.stale_keys, vec![key.clone()], "and named by its key");

    let auditor = coherence.spawn_auditor(AuditConfig {
        every: Duration::from_millis(5),
        sample: 4,
    });
    let totals = auditor.passes(2).await;
    assert!(
        totals.mismatches >= 2,
        "the background auditor reports it on every pass: {totals:?}"
    );
    auditor.shutdown().await;
    let stored: Option<Vec<u8>> = f.redis.get(&key).await.expect("GET");
    assert_eq!(
        stored,
        Some(planted),
        "the auditor never modifies: the entry is still there"
    );
}
