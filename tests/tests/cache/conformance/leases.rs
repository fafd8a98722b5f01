//! Leases: who may fill, and when a fill is lost.

use super::*;

on_both_backends!(paused:
    a_get_misses_until_a_leased_fill_is_stored,
    a_second_reader_is_told_busy_while_the_lease_is_held,
    a_fill_by_a_reader_without_the_lease_is_lost,
    a_lease_is_good_for_one_fill_only,
    a_fill_after_its_lease_expired_is_lost,
    a_fenced_fill_still_releases_the_lease,
);

pub async fn a_get_misses_until_a_leased_fill_is_stored(env: &Env) {
    let key = env.key(1);
    let one = entry(1, "one");

    assert_eq!(get(env, 1).await, None);
    assert_eq!(
        lease_and_fill(env, 1, A, &one).await,
        FillOutcome::Stored,
        "the lease holder's fill is stored"
    );

    assert_eq!(get(env, 1).await.as_deref(), Some(&one[..]));
    assert_eq!(
        env.backend
            .get_or_lease(Lease::new(&key, B), LEASE)
            .await
            .expect("get_or_lease"),
        Lookup::Hit(Bytes::from(one)),
        "a reader that asks for a lease on a filled key gets the value"
    );
}

pub async fn a_second_reader_is_told_busy_while_the_lease_is_held(env: &Env) {
    let key = env.key(1);
    let backend = &env.backend;
    let lease = |token| backend.get_or_lease(Lease::new(&key, token), LEASE);

    assert_eq!(lease(A).await.expect("lease"), Lookup::Leased);
    assert_eq!(lease(B).await.expect("lease"), Lookup::Busy);
    assert_eq!(
        lease(A).await.expect("lease"),
        Lookup::Busy,
        "asking again, even with the same token, does not take a second lease"
    );

    let one = entry(1, "one");
    assert_eq!(
        backend
            .fill(Lease::new(&key, A), &one, TTL)
            .await
            .expect("fill"),
        FillOutcome::Stored
    );
    assert_eq!(
        lease(B).await.expect("lease"),
        Lookup::Hit(Bytes::from(one)),
        "the waiting reader finds the fill"
    );
}

pub async fn a_fill_by_a_reader_without_the_lease_is_lost(env: &Env) {
    let key = env.key(1);
    let backend = &env.backend;

    assert_eq!(
        backend
            .fill(Lease::new(&key, A), &entry(1, "unleased"), TTL)
            .await
            .expect("fill"),
        FillOutcome::LeaseLost,
        "nobody holds a lease"
    );
    assert_eq!(get(env, 1).await, None);

    assert_eq!(
        backend
            .get_or_lease(Lease::new(&key, A), LEASE)
            .await
            .expect("lease"),
        Lookup::Leased
    );
    assert_eq!(
        backend
            .fill(Lease::new(&key, B), &entry(1, "stranger"), TTL)
            .await
            .expect("fill"),
        FillOutcome::LeaseLost,
        "another reader holds the lease"
    );
    assert_eq!(get(env, 1).await, None);

    let holders = entry(1, "holder");
    assert_eq!(
        backend
            .fill(Lease::new(&key, A), &holders, TTL)
            .await
            .expect("fill"),
        FillOutcome::Stored,
        "a stranger's fill does not release the holder's lease"
    );
    assert_eq!(get(env, 1).await.as_deref(), Some(&holders[..]));
}

pub async fn a_lease_is_good_for_one_fill_only(env: &Env) {
    let first = entry(1, "first");
    assert_eq!(lease_and_fill(env, 1, A, &first).await, FillOutcome::Stored);

    assert_eq!(
        env.backend
            .fill(Lease::new(&env.key(1), A), &entry(2, "second"), TTL)
            .await
            .expect("fill"),
        FillOutcome::LeaseLost,
        "the fill released the lease"
    );
    assert_eq!(get(env, 1).await.as_deref(), Some(&first[..]));
}

pub async fn a_fill_after_its_lease_expired_is_lost(env: &Env) {
    let backend = &env.backend;
    let (abandoned, taken_over) = (env.key(1), env.key(2));
    for key in [&abandoned, &taken_over] {
        assert_eq!(
            backend
                .get_or_lease(Lease::new(key, A), SHORT)
                .await
                .expect("lease"),
            Lookup::Leased
        );
    }

    env.clock.pass(LONGER_THAN_SHORT).await;

    assert_eq!(
        backend
            .get_or_lease(Lease::new(&taken_over, B), LEASE)
            .await
            .expect("lease"),
        Lookup::Leased,
        "an expired lease no longer blocks other readers"
    );
    for key in [&abandoned, &taken_over] {
        assert_eq!(
            backend
                .fill(Lease::new(key, A), &entry(1, "slow"), TTL)
                .await
                .expect("fill"),
            FillOutcome::LeaseLost,
            "{key}: the slow loader's lease expired"
        );
        // Checked on the value, so the expired holder is not confused with the new one.
        assert_eq!(backend.get(key).await.expect("get"), None, "{key}");
    }
    assert_eq!(
        backend
            .fill(Lease::new(&taken_over, B), &entry(1, "fresh"), TTL)
            .await
            .expect("fill"),
        FillOutcome::Stored
    );
}

pub async fn a_fenced_fill_still_releases_the_lease(env: &Env) {
    invalidate(env, 1, Some(5)).await;
    assert_eq!(
        lease_and_fill(env, 1, A, &entry(4, "old")).await,
        FillOutcome::Fenced
    );
    assert_eq!(
        env.backend
            .get_or_lease(Lease::new(&env.key(1), B), LEASE)
            .await
            .expect("lease"),
        Lookup::Leased,
        "the next reader can load at once"
    );
}
