//! The `CacheBackend` contract, written once and run against every backend.
//!
//! Each function states one rule of the trait's documentation in terms of raw entries,
//! tokens and TTLs, with no `CacheService` in between: a backend passes only if the
//! memory store and the Redis scripts agree on every one of them.

use std::time::Duration;

use bytes::Bytes;
use cache_service::codec;
use cache_service::{FillOutcome, Invalidation, Lease, LeaseToken, Lookup, WriteInvalidation};

use crate::support::{Env, Widget};

mod expiry;
mod groups;
mod invalidation;
mod leases;

/// Every test of the contract by name, for a run on another set-up (the cluster).
pub(crate) fn all() -> impl Iterator<Item = &'static (&'static str, crate::support::EnvTest)> {
    expiry::ALL
        .iter()
        .chain(groups::ALL)
        .chain(invalidation::ALL)
        .chain(leases::ALL)
}

const A: LeaseToken = LeaseToken(0xA);
const B: LeaseToken = LeaseToken(0xB);
const LEASE: Duration = Duration::from_secs(5);
const TTL: Duration = Duration::from_secs(60);
const FENCE: Duration = Duration::from_secs(60);
/// A lifetime that TTL tests let run out (real time on Redis, so keep it small).
const SHORT: Duration = Duration::from_millis(100);
/// Comfortably longer than [`SHORT`].
const LONGER_THAN_SHORT: Duration = Duration::from_millis(160);

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

/// The backend's `get_or_lease` of item `id` with `token`, for a lease of `lease`.
async fn get_or_lease(env: &Env, id: u64, token: LeaseToken, lease: Duration) -> Lookup {
    env.backend
        .get_or_lease(Lease::new(&env.key(id), token), lease)
        .await
        .expect("get_or_lease")
}

/// The backend's `fill` of item `id` with `token` and `bytes`, for [`TTL`].
async fn fill(env: &Env, id: u64, token: LeaseToken, bytes: &[u8]) -> FillOutcome {
    env.backend
        .fill(Lease::new(&env.key(id), token), bytes, TTL)
        .await
        .expect("fill")
}

/// Takes the lease with `token` and fills `bytes`, asserting the lease was granted.
async fn lease_and_fill(env: &Env, id: u64, token: LeaseToken, bytes: &[u8]) -> FillOutcome {
    assert_eq!(
        get_or_lease(env, id, token, LEASE).await,
        Lookup::Leased,
        "{}: nobody else holds the lease and there is no value",
        env.key(id)
    );
    fill(env, id, token, bytes).await
}

/// The backend's generation of group key `group`.
async fn generation_of(env: &Env, group: &str) -> u64 {
    env.backend.generation(group).await.expect("generation")
}

/// The backend's `bump_generation` of group key `group`: the new generation.
async fn bump(env: &Env, group: &str) -> u64 {
    env.backend.bump_generation(group).await.expect("bump")
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
