//! Cache-aside over Redis (or an in-process store) that cannot serve or store a stale
//! value.
//!
//! `cache-service` knows nothing about any particular entity. A caller names its keys
//! with a [`Namespace`] and an id, or groups derived values (list pages, search results)
//! in a [`Group`] (or in one [`Scope`] of it: the pages filtered by one value), and reads
//! them through [`CacheService::get_or_load`], which runs the
//! caller's loader only on a miss (or [`CacheService::get_or_load_json`], which hands a
//! hit back as the stored JSON bytes, for a server to send as they are). After a database
//! write commits, the caller invalidates what the write made stale with
//! [`CacheService::invalidate_write`] (or [`CacheService::invalidate`]).
//!
//! # Example
//!
//! Cache-aside with the in-process store (a [`RedisConfig`] and
//! [`CacheService::connect_redis`] select Redis):
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
//! use std::sync::atomic::{AtomicU32, Ordering};
//!
//! use cache_service::{CacheConfig, CacheService, Cacheable, Group, Invalidation, Namespace};
//!
//! #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
//! struct Note {
//!     id: i64,
//!     body: String,
//!     version: u64,
//! }
//!
//! impl Cacheable for Note {
//!     fn version(&self) -> u64 {
//!         self.version
//!     }
//! }
//!
//! const NOTE: Namespace = Namespace::new("note");
//! const NOTE_LIST: Group = Group::new("note_list");
//!
//! let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 1_000)?;
//! let loads = AtomicU32::new(0);
//! let load = |version| {
//!     let loads = &loads;
//!     async move {
//!         loads.fetch_add(1, Ordering::Relaxed);
//!         Ok::<_, std::io::Error>(Some(Note { id: 1, body: "hello".into(), version }))
//!     }
//! };
//! let key = cache.key(NOTE, 1);
//!
//! let first = cache.get_or_load(&key, || load(1)).await?; // a miss: the loader runs
//! let again = cache.get_or_load(&key, || load(1)).await?; // a hit
//! assert_eq!(first, again);
//! assert_eq!(loads.load(Ordering::Relaxed), 1);
//!
//! // A write moved note 1 to version 2 and committed: invalidate what it made stale.
//! cache
//!     .invalidate_write(&[Invalidation::at_version(key.clone(), 2)], &[NOTE_LIST])
//!     .await?;
//! let fresh = cache.get_or_load(&key, || load(2)).await?;
//! assert_eq!(fresh.map(|note| note.version), Some(2));
//! assert_eq!(loads.load(Ordering::Relaxed), 2);
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - [`service`]: [`CacheService`], the cheap-to-clone handle: typed reads, single-flight,
//!   lease waits, invalidation, metrics.
//! - [`key`]: the only place keys are spelled: [`Namespace`], [`Group`], [`Scope`],
//!   [`CacheKey`], [`MemberKey`].
//! - [`codec`]: the entry format (a format byte, the source version, the payload).
//! - [`backend`]: the [`CacheBackend`] trait and its two implementations,
//!   [`RedisBackend`] (one pool, or on a Redis Cluster a pool per master routed by hash
//!   slot) and [`MemoryBackend`], which pass one conformance suite; and [`NearCache`], an
//!   in-process copy in front of Redis kept coherent by Redis's client tracking.
//! - [`config`]: [`CacheConfig`] (prefix, TTLs (one per namespace if wanted), jitter,
//!   lease and fence lifetimes).
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
//!    every member's key; invalidating the group is one `INCR`. So has each [`Scope`] of
//!    it, so a write moves only the scopes it touched. There is no `SCAN` or `KEYS`
//!    anywhere in this crate.
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
//!    [`coherence`] module states each with its reason. On a Redis Cluster the breaker
//!    and the replay work per hash slot: a master that is down holds only its own keys
//!    off the cache.
//! 6. **A near cache waits for Redis's word.** A [`NearCache`] entry is served only after
//!    a round trip on its tracking connection that began after the read did (so every
//!    invalidation of a write that returned before the read has been applied); a fill is
//!    dropped if an invalidation of its key arrived while it loaded; losing the tracking
//!    connection empties it.
//!
//! # Metrics
//!
//! Emitted through the [`metrics`] facade, so the embedding application chooses the
//! exporter: `cache_requests_total{namespace,result}`, `cache_loads_total{namespace}`,
//! `cache_invalidations_total{namespace}`, `cache_fills_refused_total{namespace,reason}`,
//! `cache_lease_waits_total{namespace}`, `cache_invalidation_errors_total{namespace}`;
//! from the [`coherence::audit`] auditor, `cache_audit_checks_total{namespace}` and
//! `cache_audit_mismatches_total{namespace}`; with a [`NearCache`],
//! `cache_l1_requests_total{namespace,result}`, the histogram `cache_l1_barrier_reads`
//! (reads that shared one barrier round) and the gauge `cache_l1_entries`.

pub mod backend;
pub mod codec;
pub mod coherence;
pub mod config;
pub mod key;
pub mod service;

mod breaker;
mod error;
mod flight;

pub use backend::{
    CacheBackend, FillOutcome, Lease, LeaseToken, Lookup, MemoryBackend, NearCache, NearCacheStats,
    RedisBackend, WriteInvalidation,
};
pub use coherence::{
    Applied, AuditConfig, AuditReport, AuditTotals, AuditorHandle, Change, Coherence,
    CoherenceConfig, OutboxTable, RelayHandle, ScopedGroup,
};
pub use config::{CacheConfig, NearCacheConfig, NearCacheConsistency, RedisConfig};
pub use error::{CacheError, Result};
/// The Redis client this crate uses, for [`RedisBackend::from_pool`].
pub use fred;
pub use key::{CacheKey, Group, Invalidation, MemberKey, Namespace, Scope};
pub use service::{CacheService, Cacheable, CachedJson};
