//! Redis goes away and comes back: writes succeed meanwhile, no read serves the value
//! from before them, and the cache is used again afterwards.

use std::time::{Duration, Instant};

use orders_example::{Order, OrderStatus};

use crate::support::{Env, order_id};

on_both_databases!(
    a_write_while_redis_is_down_is_read_after_redis_returns_empty,
    a_write_while_redis_is_down_is_read_after_redis_returns_from_a_snapshot_taken_before_it,
);

/// How Redis comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comeback {
    /// A fresh instance: its memory is empty.
    Empty,
    /// Restored from a snapshot taken before the write: it holds the old order.
    FromSnapshot,
}

async fn a_write_while_redis_is_down_is_read_after_redis_returns_empty(env: Env) {
    write_through_an_outage(env, Comeback::Empty).await;
}

async fn a_write_while_redis_is_down_is_read_after_redis_returns_from_a_snapshot_taken_before_it(
    env: Env,
) {
    write_through_an_outage(env, Comeback::FromSnapshot).await;
}

async fn write_through_an_outage(mut env: Env, comeback: Comeback) {
    let (_, id) = env.place_cached(7, 1_000).await;
    let old_key = env.service.order_key(id);
    if comeback == Comeback::FromSnapshot {
        assert_eq!(env.redis.command(&["SAVE"]).expect("SAVE"), "OK");
    }

    env.redis.stop();
    let paid = env
        .set_status(id, OrderStatus::Paid, "the write succeeds with Redis down")
        .await;
    assert_eq!(
        env.service.find(id).await.expect("read"),
        paid,
        "during the outage reads come from the database"
    );

    env.redis.restart().expect("Redis comes back on its port");
    let held = env
        .redis
        .command(&["EXISTS", old_key.as_str()])
        .expect("EXISTS");
    let expected_held = match comeback {
        Comeback::Empty => "0",
        Comeback::FromSnapshot => "1",
    };
    assert_eq!(
        held, expected_held,
        "what the returning Redis holds under the old key ({comeback:?})"
    );

    let last = read_until_the_cache_is_used(&env, &paid).await;
    assert_eq!(last, paid);
    assert!(
        env.is_cached(id).await,
        "the cache is used again: the read filled it"
    );
    assert_eq!(env.service.find(id).await.expect("read"), paid);
    env.finish().await;
}

/// Reads the order until the cache serves again (the relay has checked which Redis this
/// is and applied what is owed), asserting that every read sees `expected`; returns the
/// first read made with the cache in use. Fails after 20 s.
async fn read_until_the_cache_is_used(env: &Env, expected: &Order) -> Order {
    let id = order_id(expected.id);
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.service.cache().is_degraded() {
        assert_eq!(
            &env.service.find(id).await.expect("read"),
            expected,
            "no read serves the order from before the write"
        );
        assert!(Instant::now() < deadline, "the cache is used again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.service.find(id).await.expect("read")
}
