//! Configuration of [`CacheService`](crate::CacheService) and of the Redis backend.

use std::time::Duration;

use crate::error::{CacheError, Result};
use crate::key::Namespace;

/// How entries are named and how long they live.
///
/// Invariant (checked by [`CacheConfig::validate`]): `fence_ttl > lease_ttl`, so a fence
/// outlives every lease that was outstanding when it was set; a loader slower than its
/// lease loses the lease and cannot store.
///
/// A stored value lives [`ttl_for`](Self::ttl_for) its namespace: the namespace's own
/// TTL ([`with_ttl`](Self::with_ttl)), else `ttl`.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use cache_service::CacheConfig;
///
/// let config = CacheConfig {
///     ttl: Duration::from_secs(60),
///     ..CacheConfig::with_prefix("shop")
/// };
/// config.validate()?;
/// let broken = CacheConfig { fence_ttl: Duration::from_millis(1), ..config.clone() };
/// assert!(broken.validate().is_err(), "a fence must outlive every lease");
///
/// // List pages (the members of a group live under the group's namespace) for a minute,
/// // everything else for `ttl`.
/// const PRODUCT_LIST: cache_service::Group = cache_service::Group::new("product_list");
/// let config = config.with_ttl(PRODUCT_LIST.namespace(), Duration::from_secs(60));
/// config.validate()?;
/// assert_eq!(config.ttl_for(PRODUCT_LIST.namespace()), Duration::from_secs(60));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Every key starts with `{prefix}:`.
    pub prefix: String,
    /// Lifetime of a stored value, before jitter, in a namespace without a TTL of its own
    /// in `namespace_ttls`.
    pub ttl: Duration,
    /// Lifetimes of stored values, before jitter, per namespace (a group's members live
    /// under the group's namespace); each overrides `ttl`. Set with
    /// [`with_ttl`](Self::with_ttl), read with [`ttl_for`](Self::ttl_for).
    pub namespace_ttls: Vec<(Namespace, Duration)>,
    /// Fraction of `ttl` by which each entry's lifetime is randomly shortened or
    /// lengthened, so entries written together do not expire together.
    pub ttl_jitter: f64,
    /// Lifetime of an "absent" entry (negative caching of ids that do not exist).
    pub negative_ttl: Duration,
    /// Lifetime of a lease taken on a miss: the longest a loader may take and still store.
    pub lease_ttl: Duration,
    /// Lifetime of the version fence left by a versioned invalidation.
    pub fence_ttl: Duration,
    /// How long, in total, a reader waits for another process's fill before loading
    /// itself (without storing).
    pub lease_wait: Duration,
    /// How long reads skip the cache after a backend error (the circuit breaker).
    pub breaker_cooldown: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            prefix: "cache".to_owned(),
            ttl: Duration::from_secs(300),
            namespace_ttls: Vec::new(),
            ttl_jitter: 0.1,
            negative_ttl: Duration::from_secs(30),
            lease_ttl: Duration::from_secs(5),
            fence_ttl: Duration::from_secs(60),
            lease_wait: Duration::from_millis(200),
            breaker_cooldown: Duration::from_secs(1),
        }
    }
}

impl CacheConfig {
    /// A default configuration with the given key prefix.
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            ..Self::default()
        }
    }

    /// This configuration with values of `namespace` living `ttl` (before jitter)
    /// instead of [`ttl`](Self::ttl); a second call for the same namespace replaces the
    /// first.
    pub fn with_ttl(mut self, namespace: Namespace, ttl: Duration) -> Self {
        self.namespace_ttls.retain(|(n, _)| *n != namespace);
        self.namespace_ttls.push((namespace, ttl));
        self
    }

    /// How long a value of `namespace` lives, before jitter: the one place a TTL is
    /// chosen.
    pub fn ttl_for(&self, namespace: Namespace) -> Duration {
        self.namespace_ttls
            .iter()
            .find(|(n, _)| *n == namespace)
            .map_or(self.ttl, |(_, ttl)| *ttl)
    }

    /// Rejects configurations that would break the crate's invariants; the error names
    /// the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(CacheError::Config(m.to_owned()));
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            return bad("prefix: must be non-empty and contain no '{' or '}'");
        }
        if self.ttl.is_zero() || self.negative_ttl.is_zero() || self.lease_ttl.is_zero() {
            return bad("ttl, negative_ttl and lease_ttl must be positive");
        }
        for (i, (namespace, ttl)) in self.namespace_ttls.iter().enumerate() {
            let name = namespace.name();
            if ttl.is_zero() {
                return bad(&format!("namespace_ttls: {name}: must be positive"));
            }
            if self.namespace_ttls[..i].iter().any(|(n, _)| n == namespace) {
                return bad(&format!("namespace_ttls: {name}: given twice"));
            }
        }
        if !(0.0..1.0).contains(&self.ttl_jitter) {
            return bad("ttl_jitter: must be in [0, 1)");
        }
        if self.fence_ttl <= self.lease_ttl {
            return bad("fence_ttl: must be longer than lease_ttl");
        }
        Ok(())
    }
}

/// Connection settings of [`RedisBackend`](crate::RedisBackend).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use cache_service::RedisConfig;
///
/// let redis = RedisConfig {
///     command_timeout: Duration::from_millis(100),
///     ..RedisConfig::new("redis://127.0.0.1:6379")
/// };
/// assert_eq!(redis.url, "redis://127.0.0.1:6379");
/// // `CacheService::connect_redis(&redis, config)` connects (with a server running).
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://`, `rediss://` (TLS), `redis-cluster://` or `redis-sentinel://`.
    pub url: String,
    /// Number of multiplexed connections.
    pub pool_size: usize,
    /// Every command fails after this long, so a dead or frozen Redis fails fast instead
    /// of hanging requests.
    pub command_timeout: Duration,
    /// Timeout of one connection attempt.
    pub connect_timeout: Duration,
    /// Longest pause between reconnection attempts (they start at 50 ms and double up
    /// to it).
    pub reconnect_max_delay: Duration,
    /// For `rediss://`: a PEM file of the certificate authorities that sign the
    /// server's certificate (a private CA). Unset: the system's trusted roots.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// An in-process near cache in front of Redis, kept coherent by Redis's client
    /// tracking (see [`NearCache`](crate::NearCache)); `None`: every read asks Redis.
    /// Standalone Redis or Sentinel only: on a cluster it is off.
    pub near_cache: Option<NearCacheConfig>,
}

/// The near cache's size. Entries are the bytes read from Redis, under their key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NearCacheConfig {
    /// Upper bound of the entries' bytes (keys and values, plus a fixed overhead per
    /// entry, so many tiny entries count too).
    pub max_bytes: u64,
    /// Longest time an entry stays in the near cache (Redis's own expiry also removes it,
    /// through tracking).
    pub max_age: Duration,
    /// When an entry may be served.
    pub consistency: NearCacheConsistency,
}

/// When a near cache may serve what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NearCacheConsistency {
    /// Only after a round trip on the tracking connection that began after the read did:
    /// never staler than Redis, across every process.
    #[default]
    Strict,
    /// At once, while the newest round trip that passed began at most this long before
    /// the read; otherwise as `Strict`. A read then reflects every write (from any
    /// process) that returned at least this long before the read began, and every write
    /// of this process. A zero bound is `Strict`.
    Bounded(Duration),
}

impl Default for NearCacheConfig {
    /// 64 MiB, entries kept at most 5 minutes, strict.
    fn default() -> Self {
        Self {
            max_bytes: 64 << 20,
            max_age: Duration::from_secs(300),
            consistency: NearCacheConsistency::Strict,
        }
    }
}

impl RedisConfig {
    /// Defaults suited to a cache in front of a database: a 4-connection pool, 250 ms
    /// command timeout, 1 s connect timeout, reconnection attempts at most 200 ms apart.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: 4,
            command_timeout: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(1),
            reconnect_max_delay: Duration::from_millis(200),
            tls_ca_file: None,
            near_cache: None,
        }
    }
}
