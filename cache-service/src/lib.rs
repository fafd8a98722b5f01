//! Cache-aside over Redis (or an in-process store) that cannot serve or store a stale
//! value.
//!
//! `cache-service` knows nothing about any particular entity. A caller names its keys
//! with a [`Namespace`] and an id, or groups derived values (list pages, search results)
//! in a [`Group`], and reads them through [`CacheService::get_or_load`], which runs the
//! caller's loader only on a miss (or [`CacheService::get_or_load_json`], which hands a
//! hit back as the stored JSON bytes, for a server to send as they are). After a database
//! write commits, the caller invalidates what the write made stale with
//! [`CacheService::invalidate_write`] (or [`CacheService::invalidate`]).
//!
//! # Layout
//!
//! - [`service`]: [`CacheService`], the cheap-to-clone handle: typed reads, single-flight,
//!   lease waits, invalidation, metrics.
//! - [`key`]: the only place keys are spelled: [`Namespace`], [`Group`], [`CacheKey`],
//!   [`MemberKey`].
//! - [`codec`]: the entry format (a format byte, the source version, the payload).
//! - [`backend`]: the [`CacheBackend`] trait and its two implementations,
//!   [`RedisBackend`] and [`MemoryBackend`], which pass one conformance suite.
//! - [`config`]: [`CacheConfig`] (prefix, TTLs, jitter, lease and fence lifetimes).
//! - [`coherence`]: [`Coherence`], the component that keeps the promises across processes
//!   for any table: a transactional outbox filled by triggers ([`OutboxTable`]) and its
//!   relay, the one after-commit routine every writer calls, the cache epoch per Redis
//!   identity, the read gate after outages and reconnections. Stored through sea-orm
//!   (PostgreSQL or SQLite).
//!
//! # Invariants callers rely on
//!
//! 1. **No stale set.** A miss takes a lease in the same atomic step as the read; a fill
//!    is stored only while its lease is still current and its version is not below the
//!    fence left by the latest versioned invalidation. A loader that read the database
//!    before a write committed therefore cannot store its value after that write's
//!    invalidation.
//! 2. **O(1) group invalidation.** A [`Group`] has a generation counter that is part of
//!    every member's key; invalidating the group is one `INCR`. There is no `SCAN` or
//!    `KEYS` anywhere in this crate.
//! 3. **One load per key per process.** Concurrent misses of one key share one loader
//!    call. A reader only accepts a shared result whose fill was stored under a lease
//!    granted before the reader joined, so a read that starts after an invalidation
//!    never receives a value loaded before it.
//! 4. **Fail open.** A backend error on the read path is counted and logged, and the
//!    loader's value is returned; errors on invalidation are returned to the caller,
//!    which owns the decision (retry, outbox, alert). After any error a circuit breaker
//!    sends reads straight to the loader for a cool-down, and, once a [`Coherence`]
//!    relay runs, until it has replayed what is owed.
//! 5. **Across processes** (with [`Coherence`]): every writer joins the epoch of the
//!    Redis it talks to before it invalidates; a write is acknowledged once its
//!    invalidation is applied, inline or by a relay, within a bound; no reply that came
//!    over an unchecked connection is served; versions only grow, for every writer; an
//!    in-process cache never shares its database with another process. The
//!    [`coherence`] module states each with its reason.
//!
//! # Metrics
//!
//! Emitted through the [`metrics`] facade, so the embedding application chooses the
//! exporter: `cache_requests_total{namespace,result}`, `cache_loads_total{namespace}`,
//! `cache_invalidations_total{namespace}`, `cache_fills_refused_total{namespace,reason}`,
//! `cache_lease_waits_total{namespace}`, `cache_invalidation_errors_total{namespace}`,
//! and, from the [`coherence::audit`] auditor, `cache_audit_checks_total{namespace}` and
//! `cache_audit_mismatches_total{namespace}`.

pub mod backend;
pub mod codec;
pub mod coherence;
pub mod config;
pub mod key;
pub mod service;

mod breaker;
mod error;
mod flight;

pub use backend::{CacheBackend, FillOutcome, LeaseToken, Lookup, MemoryBackend, RedisBackend};
pub use coherence::{
    Applied, AuditConfig, AuditReport, AuditorHandle, Change, Coherence, CoherenceConfig,
    OutboxTable, RelayHandle,
};
pub use config::{CacheConfig, RedisConfig};
pub use error::{CacheError, Result};
/// The Redis client this crate uses, for [`RedisBackend::from_pool`].
pub use fred;
pub use key::{CacheKey, Group, Invalidation, MemberKey, Namespace};
pub use service::{CacheService, Cacheable, CachedJson};
