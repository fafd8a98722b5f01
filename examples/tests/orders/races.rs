//! A read whose database query ran before a write committed cannot store what it read
//! after that write's invalidation.

use orders_example::OrderStatus;
use tokio::sync::oneshot;

use crate::support::{Env, order_id, within_10s};

on_both_databases!(relay: crate::support::slow_relay();
    a_read_that_queried_before_a_write_committed_cannot_cache_the_old_order,
);

async fn a_read_that_queried_before_a_write_committed_cannot_cache_the_old_order(env: Env) {
    let placed = env.place(7, 1_000).await;
    let id = order_id(placed.id);
    // The reader misses, takes the lease, queries the database, then waits for the test.
    let (queried, mut reader_queried) = oneshot::channel();
    let (resume_reader, resume) = oneshot::channel::<()>();
    let reader = tokio::spawn({
        let service = env.service.clone();
        async move {
            let loader = service.clone();
            service
                .cache()
                .get_or_load(&service.order_key(id), move || async move {
                    let loaded = loader.load(id).await;
                    let _ = queried.send(());
                    let _ = resume.await;
                    loaded
                })
                .await
        }
    });
    within_10s(&mut reader_queried)
        .await
        .expect("the reader queried the database");
    assert!(env.is_leased(id), "the reader missed and holds the lease");

    let paid = env
        .set_status(id, OrderStatus::Paid, "the write commits and invalidates")
        .await;
    assert_eq!(
        env.fence(id).await,
        Some(2),
        "when the write returns, its invalidation is applied: the key is fenced at v2"
    );
    resume_reader.send(()).expect("the reader waits");
    let early = within_10s(reader)
        .await
        .expect("the reader finishes")
        .expect("the read succeeds");

    assert_eq!(
        early.map(|o| o.status),
        Some(OrderStatus::Pending),
        "the early read returns what it queried (it began before the write)"
    );
    assert!(
        !env.is_cached(id).await,
        "but could not store it after the write's invalidation"
    );
    assert_eq!(
        env.service.find(id).await.expect("read"),
        paid,
        "the next read loads the write"
    );
    assert!(env.is_cached(id).await, "and caches it");
    assert_eq!(env.service.find(id).await.expect("read"), paid);
    env.finish().await;
}
