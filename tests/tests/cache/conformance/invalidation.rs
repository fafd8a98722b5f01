//! Invalidations: removal, fences and versions.

use super::*;

on_both_backends!(paused:
    an_unversioned_invalidation_removes_the_value,
    an_unversioned_invalidation_voids_the_outstanding_lease,
    a_versioned_invalidation_removes_an_older_value,
    a_versioned_invalidation_keeps_a_value_at_the_same_or_a_newer_version,
    a_versioned_invalidation_fences_fills_of_older_versions,
    the_fence_keeps_the_highest_version_of_two_invalidations,
    a_negative_entry_counts_as_version_zero,
);

pub async fn an_unversioned_invalidation_removes_the_value(env: &Env) {
    assert_eq!(
        lease_and_fill(env, 1, A, &entry(3, "cached")).await,
        FillOutcome::Stored
    );
    assert_eq!(
        lease_and_fill(env, 2, A, &entry(3, "other")).await,
        FillOutcome::Stored
    );

    invalidate(env, 1, None).await;

    assert_eq!(get(env, 1).await, None);
    assert!(get(env, 2).await.is_some(), "other keys are untouched");
}

pub async fn an_unversioned_invalidation_voids_the_outstanding_lease(env: &Env) {
    let key = env.key(1);
    let backend = &env.backend;
    assert_eq!(
        backend
            .get_or_lease(Lease::new(&key, A), LEASE)
            .await
            .expect("lease"),
        Lookup::Leased
    );

    invalidate(env, 1, None).await;

    assert_eq!(
        backend
            .fill(
                Lease::new(&key, A),
                &entry(1, "loaded before the write"),
                TTL
            )
            .await
            .expect("fill"),
        FillOutcome::LeaseLost,
        "a load that began before the invalidation cannot store"
    );
    assert_eq!(get(env, 1).await, None);
    assert_eq!(
        backend
            .get_or_lease(Lease::new(&key, B), LEASE)
            .await
            .expect("lease"),
        Lookup::Leased,
        "the next reader gets a fresh lease"
    );
}

pub async fn a_versioned_invalidation_removes_an_older_value(env: &Env) {
    assert_eq!(
        lease_and_fill(env, 1, A, &entry(1, "v1")).await,
        FillOutcome::Stored
    );

    invalidate(env, 1, Some(2)).await;

    assert_eq!(get(env, 1).await, None);
}

pub async fn a_versioned_invalidation_keeps_a_value_at_the_same_or_a_newer_version(env: &Env) {
    let (same, newer) = (entry(2, "v2"), entry(3, "v3"));
    assert_eq!(lease_and_fill(env, 1, A, &same).await, FillOutcome::Stored);
    assert_eq!(lease_and_fill(env, 2, A, &newer).await, FillOutcome::Stored);

    invalidate(env, 1, Some(2)).await;
    invalidate(env, 2, Some(2)).await;

    assert_eq!(
        get(env, 1).await.as_deref(),
        Some(&same[..]),
        "already holds the version"
    );
    assert_eq!(
        get(env, 2).await.as_deref(),
        Some(&newer[..]),
        "holds a newer version (a late invalidation)"
    );
}

pub async fn a_versioned_invalidation_fences_fills_of_older_versions(env: &Env) {
    let backend = &env.backend;
    // Keys 1 and 2: leases taken before the invalidation. Key 3: after it.
    for id in [1, 2] {
        assert_eq!(
            backend
                .get_or_lease(Lease::new(&env.key(id), A), LEASE)
                .await
                .expect("lease"),
            Lookup::Leased
        );
    }
    for id in [1, 2, 3] {
        invalidate(env, id, Some(5)).await;
    }

    assert_eq!(
        backend
            .fill(Lease::new(&env.key(1), A), &entry(4, "v4"), TTL)
            .await
            .expect("fill"),
        FillOutcome::Fenced,
        "a value older than the fence is refused"
    );
    assert_eq!(get(env, 1).await, None);

    let v5 = entry(5, "v5");
    assert_eq!(
        backend
            .fill(Lease::new(&env.key(2), A), &v5, TTL)
            .await
            .expect("fill"),
        FillOutcome::Stored,
        "a versioned invalidation leaves the lease alone: a loader that read the new \
         version may store it"
    );
    assert_eq!(get(env, 2).await.as_deref(), Some(&v5[..]));

    let v6 = entry(6, "v6");
    assert_eq!(
        lease_and_fill(env, 3, B, &v6).await,
        FillOutcome::Stored,
        "a newer version passes the fence"
    );
    assert_eq!(get(env, 3).await.as_deref(), Some(&v6[..]));
}

pub async fn the_fence_keeps_the_highest_version_of_two_invalidations(env: &Env) {
    // Key 1: the newer invalidation first (a late, older one must not lower the fence).
    // Key 2: in order.
    invalidate(env, 1, Some(7)).await;
    invalidate(env, 1, Some(3)).await;
    invalidate(env, 2, Some(3)).await;
    invalidate(env, 2, Some(7)).await;

    for id in [1, 2] {
        assert_eq!(
            lease_and_fill(env, id, A, &entry(6, "v6")).await,
            FillOutcome::Fenced,
            "key {id}: the fence is at 7"
        );
        assert_eq!(
            lease_and_fill(env, id, B, &entry(7, "v7")).await,
            FillOutcome::Stored,
            "key {id}"
        );
    }
}

pub async fn a_negative_entry_counts_as_version_zero(env: &Env) {
    let absent = codec::encode_absent();
    assert_eq!(
        lease_and_fill(env, 1, A, &absent).await,
        FillOutcome::Stored
    );
    assert_eq!(get(env, 1).await.as_deref(), Some(&absent[..]));

    invalidate(env, 1, Some(1)).await;

    assert_eq!(
        get(env, 1).await,
        None,
        "creating the row (version 1) removes the negative entry"
    );
    assert_eq!(
        lease_and_fill(env, 1, B, &absent).await,
        FillOutcome::Fenced,
        "a 'no such row' loaded before the row was created is refused"
    );
}
