//! Invalidation runs after a commit, never for a write that did not happen.

use orders_example::{CustomerPage, Error, OrderStatus, Version};

use crate::support::{Env, order_id};

on_both_databases!(
    a_write_at_a_stale_version_changes_nothing_and_invalidates_nothing,
    a_write_to_a_missing_order_is_not_found,
);

async fn a_write_at_a_stale_version_changes_nothing_and_invalidates_nothing(env: Env) {
    let (placed, id) = env.place_cached(7, 1_000).await;
    let page = CustomerPage::parse(7, 1, 20).expect("a valid page");
    env.service.find_page(&page).await.expect("page");
    assert!(env.page_is_cached(&page).await, "the page is cached");

    let stale = Some(Version::parse(2).expect("a valid version"));
    let refused = env.service.set_status(id, OrderStatus::Paid, stale).await;
    assert!(
        matches!(refused, Err(Error::VersionMismatch { actual: 1, .. })),
        "{refused:?}"
    );
    let refused = env.service.delete(id, stale).await;
    assert!(
        matches!(refused, Err(Error::VersionMismatch { actual: 1, .. })),
        "{refused:?}"
    );

    assert!(env.is_cached(id).await, "the order's entry was left alone");
    assert!(env.page_is_cached(&page).await, "and so was the page");
    assert_eq!(env.service.find(id).await.expect("read"), placed);
    env.finish().await;
}

async fn a_write_to_a_missing_order_is_not_found(env: Env) {
    let missing = order_id(9_999);
    let result = env
        .service
        .set_status(missing, OrderStatus::Paid, None)
        .await;
    assert!(
        matches!(result, Err(Error::NotFound { id }) if id == missing),
        "{result:?}"
    );
    let result = env.service.delete(missing, None).await;
    assert!(
        matches!(result, Err(Error::NotFound { id }) if id == missing),
        "{result:?}"
    );
    assert!(matches!(
        env.service.find(missing).await,
        Err(Error::NotFound { .. })
    ));
    env.finish().await;
}
