//! Writers outside the service: the triggers record what their changes owe, in their own
//! transactions, and the relay applies it.

use orders_example::OrderStatus;

use crate::support::Env;

on_both_databases!(
    an_admin_tools_update_is_invalidated_by_the_relay_and_read_next,
    an_admin_tools_delete_is_invalidated_by_the_relay,
);

async fn an_admin_tools_update_is_invalidated_by_the_relay_and_read_next(env: Env) {
    let (_, id) = env.place_cached(7, 1_000).await;

    // No version change: the trigger raises it, so the fence moves on too.
    env.raw_sql(&format!(
        "UPDATE orders SET status = 'shipped', total_cents = 900 WHERE id = {id}"
    ))
    .await;
    env.relay_caught_up().await;

    let read = env.service.find(id).await.expect("read");
    assert_eq!(
        (read.status, read.total_cents, read.version),
        (OrderStatus::Shipped, 900, 2),
        "the admin tool's change is read, at the version the trigger raised"
    );
    env.finish().await;
}

async fn an_admin_tools_delete_is_invalidated_by_the_relay(env: Env) {
    let (_, id) = env.place_cached(7, 1_000).await;

    env.raw_sql(&format!("DELETE FROM orders WHERE id = {id}"))
        .await;
    env.relay_caught_up().await;

    let read = env.service.find(id).await;
    assert!(
        matches!(read, Err(orders_example::Error::NotFound { .. })),
        "the deleted order is gone for readers: {read:?}"
    );
    env.finish().await;
}
