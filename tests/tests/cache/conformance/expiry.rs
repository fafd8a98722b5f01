//! Lifetimes, entries in a foreign format, and the health check.

use super::*;

on_both_backends!(paused:
    a_stored_value_expires_after_its_ttl,
    a_fence_expires_after_its_ttl,
    an_entry_in_an_unknown_format_is_returned_as_stored_and_counts_as_older_than_any_version,
    the_backend_answers_a_ping,
);

pub async fn a_stored_value_expires_after_its_ttl(env: &Env) {
    let key = env.key(1);
    let backend = &env.backend;
    assert_eq!(get_or_lease(env, 1, A, LEASE).await, Lookup::Leased);
    assert_eq!(
        backend
            .fill(Lease::new(&key, A), &entry(1, "short-lived"), SHORT)
            .await
            .expect("fill"),
        FillOutcome::Stored
    );
    assert!(get(env, 1).await.is_some(), "alive before its TTL");

    env.clock.pass(LONGER_THAN_SHORT).await;

    assert_eq!(get(env, 1).await, None, "gone after its TTL");
    assert_eq!(get_or_lease(env, 1, B, LEASE).await, Lookup::Leased);
}

pub async fn a_fence_expires_after_its_ttl(env: &Env) {
    env.backend
        .invalidate(&Invalidation::at_version(env.key(1), 5), SHORT)
        .await
        .expect("invalidate");

    env.clock.pass(LONGER_THAN_SHORT).await;

    assert_eq!(
        lease_and_fill(env, 1, A, &entry(4, "v4")).await,
        FillOutcome::Stored,
        "the fence is gone"
    );
}

pub async fn an_entry_in_an_unknown_format_is_returned_as_stored_and_counts_as_older_than_any_version(
    env: &Env,
) {
    let foreign = foreign_entry();
    assert_eq!(
        lease_and_fill(env, 1, A, &foreign).await,
        FillOutcome::Stored
    );
    assert_eq!(
        get(env, 1).await.as_deref(),
        Some(&foreign[..]),
        "the backend does not interpret the bytes"
    );
    assert_eq!(
        get_or_lease(env, 1, B, LEASE).await,
        Lookup::Hit(Bytes::from(foreign.clone()))
    );

    invalidate(env, 1, Some(1)).await;
    assert_eq!(
        get(env, 1).await,
        None,
        "removed by any versioned invalidation, whatever its header seems to say"
    );

    // Fences at 1 and at 0: an entry of unknown format is older than both.
    invalidate(env, 2, Some(0)).await;
    for id in [1, 2] {
        assert_eq!(
            lease_and_fill(env, id, A, &foreign).await,
            FillOutcome::Fenced,
            "key {id}"
        );
    }
}

pub async fn the_backend_answers_a_ping(env: &Env) {
    env.backend.ping().await.expect("ping");
}
