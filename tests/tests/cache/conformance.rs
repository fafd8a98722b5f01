//! The `CacheBackend` contract, written once and run against every backend.
//!
//! Each function states one rule of the trait's documentation in terms of raw entries,
//! tokens and TTLs, with no `CacheService` in between: a backend passes only if the
//! memory store and the Redis scripts agree on every one of them.

use std::time::Duration;

use bytes::Bytes;
use cache_service::codec;
use cache_service::{FillOutcome, Invalidation, LeaseToken, Lookup};

use crate::support::{Env, Widget};

const A: LeaseToken = LeaseToken(0xA);
const B: LeaseToken = LeaseToken(0xB);
const LEASE: Duration = Duration::from_secs(5);
const TTL: Duration = Duration::from_secs(60);
const FENCE: Duration = Duration::from_secs(60);
/// A lifetime that TTL tests let run out (real time on Redis, so keep it small).
const SHORT: Duration = Duration::from_millis(100);
/// Comfortably longer than [`SHORT`].
const LONGER_THAN_SHORT: Duration = Duration::from_millis(160);

on_both_backends!(paused:
    a_get_misses_until_a_leased_fill_is_stored,
    a_second_reader_is_told_busy_while_the_lease_is_held,
    a_fill_by_a_reader_without_the_lease_is_lost,
    a_lease_is_good_for_one_fill_only,
    a_fill_after_its_lease_expired_is_lost,
    a_fenced_fill_still_releases_the_lease,
    an_unversioned_invalidation_removes_the_value,
    an_unversioned_invalidation_voids_the_outstanding_lease,
    a_versioned_invalidation_removes_an_older_value,
    a_versioned_invalidation_keeps_a_value_at_the_same_or_a_newer_version,
    a_versioned_invalidation_fences_fills_of_older_versions,
    the_fence_keeps_the_highest_version_of_two_invalidations,
    a_negative_entry_counts_as_version_zero,
    a_missing_generation_is_seeded_from_the_clock_and_stable_on_read,
    bumping_a_generation_moves_it_strictly_forward,
    invalidating_a_write_moves_its_groups_and_applies_its_items,
    a_group_member_is_read_at_the_current_generation,
    invalidating_a_write_seeds_a_lost_generation_from_the_clock,
    a_stored_value_expires_after_its_ttl,
    a_fence_expires_after_its_ttl,
    an_entry_in_an_unknown_format_is_returned_as_stored_and_counts_as_older_than_any_version,
    the_backend_answers_a_ping,
);

fn entry(version: u64, name: &str) -> Vec<u8> {
    codec::encode(version, &Widget::new(1, version, name)).expect("a widget encodes")
}

/// An entry in a format this release does not know (format byte 2), whose header would
/// claim version 9 if it were read as format 1.
fn foreign_entry() -> Vec<u8> {
    let mut bytes = entry(9, "from a future release");
    bytes[0] = 2;
    bytes
}

/// Takes the lease with `token` and fills `bytes`, asserting the lease was granted.
async fn lease_and_fill(env: &Env, id: u64, token: LeaseToken, bytes: &[u8]) -> FillOutcome {
    let key = env.key(id);
    assert_eq!(
        env.backend
            .get_or_lease(&key, token, LEASE)
            .await
            .expect("get_or_lease"),
        Lookup::Leased,
        "{key}: nobody else holds the lease and there is no value"
    );
    env.backend
        .fill(&key, token, bytes, TTL)
        .await
        .expect("fill")
}

async fn get(env: &Env, id: u64) -> Option<Bytes> {
    env.backend.get(&env.key(id)).await.expect("get")
}

async fn invalidate(env: &Env, id: u64, version: Option<u64>) {
    let key = env.key(id);
    let invalidation = match version {
        Some(version) => Invalidation::at_version(key, version),
        None => Invalidation::remove(key),
    };
    env.backend
        .invalidate(&invalidation, FENCE)
        .await
        .expect("invalidate");
}

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
            .get_or_lease(&key, B, LEASE)
            .await
            .expect("get_or_lease"),
        Lookup::Hit(Bytes::from(one)),
        "a reader that asks for a lease on a filled key gets the value"
    );
}

pub async fn a_second_reader_is_told_busy_while_the_lease_is_held(env: &Env) {
    let key = env.key(1);
    let backend = &env.backend;
    let lease = |token| backend.get_or_lease(&key, token, LEASE);

    assert_eq!(lease(A).await.expect("lease"), Lookup::Leased);
    assert_eq!(lease(B).await.expect("lease"), Lookup::Busy);
    assert_eq!(
        lease(A).await.expect("lease"),
        Lookup::Busy,
        "asking again, even with the same token, does not take a second lease"
    );

    let one = entry(1, "one");
    assert_eq!(
        backend.fill(&key, A, &one, TTL).await.expect("fill"),
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
            .fill(&key, A, &entry(1, "unleased"), TTL)
            .await
            .expect("fill"),
        FillOutcome::LeaseLost,
        "nobody holds a lease"
    );
    assert_eq!(get(env, 1).await, None);

    assert_eq!(
        backend.get_or_lease(&key, A, LEASE).await.expect("lease"),
        Lookup::Leased
    );
    assert_eq!(
        backend
            .fill(&key, B, &entry(1, "stranger"), TTL)
            .await
            .expect("fill"),
        FillOutcome::LeaseLost,
        "another reader holds the lease"
    );
    assert_eq!(get(env, 1).await, None);

    let holders = entry(1, "holder");
    assert_eq!(
        backend.fill(&key, A, &holders, TTL).await.expect("fill"),
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
            .fill(&env.key(1), A, &entry(2, "second"), TTL)
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
            backend.get_or_lease(key, A, SHORT).await.expect("lease"),
            Lookup::Leased
        );
    }

    env.clock.pass(LONGER_THAN_SHORT).await;

    assert_eq!(
        backend
            .get_or_lease(&taken_over, B, LEASE)
            .await
            .expect("lease"),
        Lookup::Leased,
        "an expired lease no longer blocks other readers"
    );
    for key in [&abandoned, &taken_over] {
        assert_eq!(
            backend
                .fill(key, A, &entry(1, "slow"), TTL)
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
            .fill(&taken_over, B, &entry(1, "fresh"), TTL)
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
            .get_or_lease(&env.key(1), B, LEASE)
            .await
            .expect("lease"),
        Lookup::Leased,
        "the next reader can load at once"
    );
}

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
        backend.get_or_lease(&key, A, LEASE).await.expect("lease"),
        Lookup::Leased
    );

    invalidate(env, 1, None).await;

    assert_eq!(
        backend
            .fill(&key, A, &entry(1, "loaded before the write"), TTL)
            .await
            .expect("fill"),
        FillOutcome::LeaseLost,
        "a load that began before the invalidation cannot store"
    );
    assert_eq!(get(env, 1).await, None);
    assert_eq!(
        backend.get_or_lease(&key, B, LEASE).await.expect("lease"),
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
                .get_or_lease(&env.key(id), A, LEASE)
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
            .fill(&env.key(1), A, &entry(4, "v4"), TTL)
            .await
            .expect("fill"),
        FillOutcome::Fenced,
        "a value older than the fence is refused"
    );
    assert_eq!(get(env, 1).await, None);

    let v5 = entry(5, "v5");
    assert_eq!(
        backend.fill(&env.key(2), A, &v5, TTL).await.expect("fill"),
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

pub async fn a_missing_generation_is_seeded_from_the_clock_and_stable_on_read(env: &Env) {
    const MICROS_IN_2001: u64 = 1_000_000_000_000_000;
    let (read_first, bumped_first) = (env.generation_key("read"), env.generation_key("bumped"));

    let generation = env
        .backend
        .generation(&read_first)
        .await
        .expect("generation");
    assert!(
        generation > MICROS_IN_2001,
        "seeded from the clock: {generation}"
    );
    assert_eq!(
        env.backend
            .generation(&read_first)
            .await
            .expect("generation"),
        generation,
        "reading does not move the generation"
    );

    let bumped = env
        .backend
        .bump_generation(&bumped_first)
        .await
        .expect("bump");
    assert!(bumped > MICROS_IN_2001, "seeded from the clock: {bumped}");
    assert_eq!(
        env.backend
            .generation(&bumped_first)
            .await
            .expect("generation"),
        bumped
    );
}

pub async fn bumping_a_generation_moves_it_strictly_forward(env: &Env) {
    let (key, other_key) = (env.generation_key("group"), env.generation_key("other"));
    let first = env.backend.generation(&key).await.expect("generation");
    let other = env
        .backend
        .generation(&other_key)
        .await
        .expect("generation");

    let second = env.backend.bump_generation(&key).await.expect("bump");
    let third = env.backend.bump_generation(&key).await.expect("bump");

    assert!(second > first, "{second} > {first}");
    assert!(third > second, "{third} > {second}");
    assert_eq!(
        env.backend.generation(&key).await.expect("generation"),
        third
    );
    assert_eq!(
        env.backend
            .generation(&other_key)
            .await
            .expect("generation"),
        other,
        "another group's counter is its own"
    );
}

pub async fn a_group_member_is_read_at_the_current_generation(env: &Env) {
    const MICROS_IN_2001: u64 = 1_000_000_000_000_000;
    let group = env.generation_key("pages");
    let member = env.member_key("pages", "p1");

    let (seeded, stored) = env
        .backend
        .get_member(&group, &member)
        .await
        .expect("get_member");
    assert!(seeded > MICROS_IN_2001, "seeded from the clock: {seeded}");
    assert_eq!(stored, None, "nothing stored yet");
    assert_eq!(
        env.backend.generation(&group).await.expect("generation"),
        seeded,
        "the seed was stored"
    );

    let key = member.at(seeded);
    let page = entry(0, "page one");
    assert_eq!(
        env.backend
            .get_or_lease(&key, A, LEASE)
            .await
            .expect("lease"),
        Lookup::Leased
    );
    env.backend.fill(&key, A, &page, TTL).await.expect("fill");
    let (generation, stored) = env
        .backend
        .get_member(&group, &member)
        .await
        .expect("get_member");
    assert_eq!(generation, seeded);
    assert_eq!(stored.as_deref(), Some(&page[..]), "the member's entry");

    let bumped = env.backend.bump_generation(&group).await.expect("bump");
    let (generation, stored) = env
        .backend
        .get_member(&group, &member)
        .await
        .expect("get_member");
    assert_eq!(generation, bumped);
    assert_eq!(stored, None, "the new generation has no entry yet");
}

pub async fn invalidating_a_write_moves_its_groups_and_applies_its_items(env: &Env) {
    let (group, other_group) = (env.generation_key("list"), env.generation_key("other"));
    let before = env.backend.generation(&group).await.expect("generation");
    let other = env
        .backend
        .generation(&other_group)
        .await
        .expect("generation");
    lease_and_fill(env, 1, A, &entry(1, "fenced")).await;
    lease_and_fill(env, 2, A, &entry(1, "removed")).await;
    lease_and_fill(env, 3, A, &entry(1, "untouched")).await;

    env.backend
        .invalidate_write(
            &[
                Invalidation::at_version(env.key(1), 2),
                Invalidation::remove(env.key(2)),
            ],
            std::slice::from_ref(&group),
            FENCE,
        )
        .await
        .expect("invalidate_write");

    let after = env.backend.generation(&group).await.expect("generation");
    assert!(after > before, "the group moved on: {after} > {before}");
    assert_eq!(
        env.backend
            .generation(&other_group)
            .await
            .expect("generation"),
        other,
        "a group the write does not name stays"
    );
    assert_eq!(get(env, 1).await, None, "the older value is removed");
    assert_eq!(
        env.backend.fence(&env.key(1)).await.expect("fence"),
        Some(2),
        "and fenced at the write's version"
    );
    assert_eq!(get(env, 2).await, None, "the unversioned item is removed");
    assert_eq!(env.backend.fence(&env.key(2)).await.expect("fence"), None);
    assert!(get(env, 3).await.is_some(), "an item not named stays");
    assert_eq!(
        lease_and_fill(env, 1, B, &entry(1, "stale")).await,
        FillOutcome::Fenced,
        "a fill of the old version is refused"
    );
}

pub async fn invalidating_a_write_seeds_a_lost_generation_from_the_clock(env: &Env) {
    const MICROS_IN_2001: u64 = 1_000_000_000_000_000;
    let group = env.generation_key("never-read");

    env.backend
        .invalidate_write(&[], std::slice::from_ref(&group), FENCE)
        .await
        .expect("invalidate_write");

    let generation = env.backend.generation(&group).await.expect("generation");
    assert!(
        generation > MICROS_IN_2001,
        "seeded from the clock, never restarted at 1: {generation}"
    );
}

pub async fn a_stored_value_expires_after_its_ttl(env: &Env) {
    let key = env.key(1);
    let backend = &env.backend;
    assert_eq!(
        backend.get_or_lease(&key, A, LEASE).await.expect("lease"),
        Lookup::Leased
    );
    assert_eq!(
        backend
            .fill(&key, A, &entry(1, "short-lived"), SHORT)
            .await
            .expect("fill"),
        FillOutcome::Stored
    );
    assert!(get(env, 1).await.is_some(), "alive before its TTL");

    env.clock.pass(LONGER_THAN_SHORT).await;

    assert_eq!(get(env, 1).await, None, "gone after its TTL");
    assert_eq!(
        backend.get_or_lease(&key, B, LEASE).await.expect("lease"),
        Lookup::Leased
    );
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
        env.backend
            .get_or_lease(&env.key(1), B, LEASE)
            .await
            .expect("lease"),
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
