//! Group generations and the invalidation of a whole write.

use super::*;

on_both_backends!(paused:
    a_missing_generation_is_seeded_from_the_clock_and_stable_on_read,
    bumping_a_generation_moves_it_strictly_forward,
    a_group_member_is_read_at_the_current_generation,
    invalidating_a_write_moves_its_groups_and_applies_its_items,
    invalidating_a_write_seeds_a_lost_generation_from_the_clock,
);

pub async fn a_missing_generation_is_seeded_from_the_clock_and_stable_on_read(env: &Env) {
    const MICROS_IN_2001: u64 = 1_000_000_000_000_000;
    let (read_first, bumped_first) = (env.generation_key("read"), env.generation_key("bumped"));

    let generation = generation_of(env, &read_first).await;
    assert!(
        generation > MICROS_IN_2001,
        "seeded from the clock: {generation}"
    );
    assert_eq!(
        generation_of(env, &read_first).await,
        generation,
        "reading does not move the generation"
    );

    let bumped = bump(env, &bumped_first).await;
    assert!(bumped > MICROS_IN_2001, "seeded from the clock: {bumped}");
    assert_eq!(generation_of(env, &bumped_first).await, bumped);
}

pub async fn bumping_a_generation_moves_it_strictly_forward(env: &Env) {
    let (key, other_key) = (env.generation_key("group"), env.generation_key("other"));
    let first = generation_of(env, &key).await;
    let other = generation_of(env, &other_key).await;

    let second = bump(env, &key).await;
    let third = bump(env, &key).await;

    assert!(second > first, "{second} > {first}");
    assert!(third > second, "{third} > {second}");
    assert_eq!(generation_of(env, &key).await, third);
    assert_eq!(
        generation_of(env, &other_key).await,
        other,
        "another group's counter is its own"
    );
}

pub async fn a_group_member_is_read_at_the_current_generation(env: &Env) {
    const MICROS_IN_2001: u64 = 1_000_000_000_000_000;
    let group = env.generation_key("pages");
    let member = env.member_key("pages", "p1");
    // The member as a reader sees it: the group's generation and the entry stored at it.
    let read_member = async || {
        env.backend
            .get_member(&group, &member)
            .await
            .expect("get_member")
    };

    let (seeded, stored) = read_member().await;
    assert!(seeded > MICROS_IN_2001, "seeded from the clock: {seeded}");
    assert_eq!(stored, None, "nothing stored yet");
    assert_eq!(
        generation_of(env, &group).await,
        seeded,
        "the seed was stored"
    );

    let key = member.at(seeded);
    let page = entry(0, "page one");
    assert_eq!(
        env.backend
            .get_or_lease(Lease::new(&key, A), LEASE)
            .await
            .expect("lease"),
        Lookup::Leased
    );
    env.backend
        .fill(Lease::new(&key, A), &page, TTL)
        .await
        .expect("fill");
    let (generation, stored) = read_member().await;
    assert_eq!(generation, seeded);
    assert_eq!(stored.as_deref(), Some(&page[..]), "the member's entry");

    let bumped = bump(env, &group).await;
    let (generation, stored) = read_member().await;
    assert_eq!(generation, bumped);
    assert_eq!(stored, None, "the new generation has no entry yet");
}

pub async fn invalidating_a_write_moves_its_groups_and_applies_its_items(env: &Env) {
    let (group, other_group) = (env.generation_key("list"), env.generation_key("other"));
    let before = generation_of(env, &group).await;
    let other = generation_of(env, &other_group).await;
    lease_and_fill(env, 1, A, &entry(1, "fenced")).await;
    lease_and_fill(env, 2, A, &entry(1, "removed")).await;
    lease_and_fill(env, 3, A, &entry(1, "untouched")).await;

    env.backend
        .invalidate_write(
            WriteInvalidation {
                items: &[
                    Invalidation::at_version(env.key(1), 2),
                    Invalidation::remove(env.key(2)),
                ],
                generation_keys: std::slice::from_ref(&group),
            },
            FENCE,
        )
        .await
        .expect("invalidate_write");

    let after = generation_of(env, &group).await;
    assert!(after > before, "the group moved on: {after} > {before}");
    assert_eq!(
        generation_of(env, &other_group).await,
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
        .invalidate_write(
            WriteInvalidation {
                items: &[],
                generation_keys: std::slice::from_ref(&group),
            },
            FENCE,
        )
        .await
        .expect("invalidate_write");

    let generation = generation_of(env, &group).await;
    assert!(
        generation > MICROS_IN_2001,
        "seeded from the clock, never restarted at 1: {generation}"
    );
}
