//! Connecting: [`RedisBackend`]'s constructors, and building clients from a
//! [`RedisConfig`]: this crate's timeouts and reconnect policy, TLS with a private CA,
//! and messages that never show a password.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use fred::prelude::*;
use fred::types::config::ServerConfig;
use tokio::sync::Notify;

use super::cluster::Cluster;
use super::node::Node;
use super::scripts::Scripts;
use super::{RedisBackend, Servers};
use crate::backend::CacheBackend;
use crate::config::RedisConfig;
use crate::error::{CacheError, Result};

impl RedisBackend {
    /// Connects; fails if Redis cannot be reached now. Afterwards the pools reconnect on
    /// their own, forever (see [`connect_in_background`]).
    ///
    /// [`connect_in_background`]: Self::connect_in_background
    ///
    /// # Examples
    ///
    /// Not run: it needs a Redis server.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use cache_service::{CacheBackend, CacheConfig, CacheService, RedisBackend, RedisConfig};
    ///
    /// let backend = RedisBackend::connect(&RedisConfig::new("redis://127.0.0.1:6379")).await?;
    /// println!("Redis run_id: {:?}", backend.identity().await?);
    /// let cache = CacheService::new(Arc::new(backend), CacheConfig::with_prefix("shop"))?;
    /// # drop(cache);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(config: &RedisConfig) -> Result<Self> {
        let backend = Self::build(config, true)?;
        match &backend.servers {
            Servers::One(node) => {
                let init = node
                    .pool()
                    .init()
                    .await
                    .map_err(|e| backend_error(e, config))?;
                drop(init); // the connection tasks keep running inside the pool
            }
            Servers::Cluster(cluster) => cluster.refresh().await.map_err(|e| {
                CacheError::Backend(format!(
                    "cannot connect to Redis at {}: {e}",
                    redact(&config.url)
                ))
            })?,
        }
        backend.ping().await?;
        Ok(backend)
    }

    /// Like [`connect`](Self::connect), but a Redis that cannot be reached now is not an
    /// error: the pools keep trying in the background, and until they connect reads fail
    /// at once (and go to the loader) and other commands after the command timeout.
    /// Waits up to the connect timeout for the first connection. Fails only on a bad URL.
    ///
    /// Reconnection is fast on purpose (50 ms, doubling to at most
    /// [`RedisConfig::reconnect_max_delay`], 200 ms by default, forever): the cache is
    /// useless while it is away, and each attempt is one TCP connect.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use cache_service::{CacheBackend, RedisBackend, RedisConfig};
    ///
    /// // Nothing listens on port 1: no error, the pools keep trying.
    /// let config = RedisConfig {
    ///     connect_timeout: Duration::from_millis(100),
    ///     ..RedisConfig::new("redis://127.0.0.1:1")
    /// };
    /// let backend = RedisBackend::connect_in_background(&config).await?;
    /// assert!(backend.ping().await.is_err(), "until a server answers there");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_in_background(config: &RedisConfig) -> Result<Self> {
        let backend = Self::build(config, false)?;
        let connected = match &backend.servers {
            Servers::One(node) => {
                drop(node.pool().connect_pool());
                let waited =
                    tokio::time::timeout(config.connect_timeout, node.pool().wait_for_connect())
                        .await;
                matches!(waited, Ok(Ok(())))
            }
            Servers::Cluster(cluster) => cluster.refresh().await.is_ok(),
        };
        if !connected {
            tracing::warn!(redis = %redact(&config.url), "Redis cannot be reached now; reads go to the database until it can");
            let signal = backend.signal.clone();
            match &backend.servers {
                Servers::One(node) => {
                    let pool = node.pool().clone();
                    tokio::spawn(async move {
                        if pool.wait_for_connect().await.is_ok() {
                            signal.notify_one();
                        }
                    });
                }
                Servers::Cluster(cluster) => {
                    let cluster = cluster.clone();
                    let pause = config.reconnect_max_delay;
                    tokio::spawn(async move {
                        while cluster.refresh().await.is_err() {
                            tokio::time::sleep(pause).await;
                        }
                        signal.notify_one();
                    });
                }
            }
        }
        Ok(backend)
    }

    /// The backend, not connected yet. With `fail_fast`, a first connection that fails is
    /// an error; without, it is retried like any later one.
    fn build(config: &RedisConfig, fail_fast: bool) -> Result<Self> {
        let mut fred_config = fred_config(config)?;
        fred_config.fail_fast = fail_fast;
        let seen = Arc::new(AtomicU64::new(0));
        let signal = Arc::new(Notify::new());
        let servers = if matches!(fred_config.server, ServerConfig::Clustered { .. }) {
            let settings = config.clone();
            Servers::Cluster(Arc::new(Cluster::new(
                fred_config,
                Box::new(move |node_config| {
                    // Commands for a master that is down fail at once: its slots go to
                    // the loader, the other masters' keys are not held up.
                    new_pool(
                        Config {
                            fail_fast: true,
                            ..node_config
                        },
                        &settings,
                    )
                }),
                config.connect_timeout,
                config.command_timeout,
                seen.clone(),
                signal.clone(),
            )))
        } else {
            Servers::One(Arc::new(Node::over(
                new_pool(fred_config, config)?,
                config.command_timeout,
                seen.clone(),
                signal.clone(),
                false,
            )))
        };
        Ok(Self {
            servers,
            scripts: Arc::new(Scripts::new()),
            seen,
            signal,
        })
    }

    /// A backend over an application's own fred pool (connected already, or connected
    /// by the caller later with [`Pool::init`]). `command_timeout` is what the pool's
    /// commands give up after (for error messages; set it on the pool). The pool should
    /// have a reconnect policy and a command timeout, or a dead Redis hangs requests
    /// (see [`RedisConfig`] for the values this crate uses). A cluster pool is routed by
    /// fred, which holds every key off the cache while any master is down; a
    /// `redis-cluster://` URL given to [`connect`](Self::connect) does not.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use cache_service::RedisBackend;
    /// use cache_service::fred::prelude::{Builder, Config, ReconnectPolicy};
    ///
    /// // The application's pool: a reconnect policy and a command timeout, always.
    /// let config = Config::from_url("redis://127.0.0.1:6379")?;
    /// let pool = Builder::from_config(config)
    ///     .with_performance_config(|p| p.default_command_timeout = Duration::from_millis(250))
    ///     .set_policy(ReconnectPolicy::new_exponential(0, 50, 200, 2))
    ///     .build_pool(4)?;
    /// let backend = RedisBackend::from_pool(pool, Duration::from_millis(250));
    /// // `pool.init().await?` connects it (the backend shares the pool).
    /// assert!(backend.pool().is_some());
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_pool(pool: Pool, command_timeout: Duration) -> Self {
        let seen = Arc::new(AtomicU64::new(0));
        let signal = Arc::new(Notify::new());
        Self {
            servers: Servers::One(Arc::new(Node::over(
                pool,
                command_timeout,
                seen.clone(),
                signal.clone(),
                false,
            ))),
            scripts: Arc::new(Scripts::new()),
            seen,
            signal,
        }
    }

    /// The underlying pool, for callers that need commands this trait does not cover;
    /// `None` on a cluster, which has a pool per master.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use cache_service::RedisBackend;
    /// use cache_service::fred::prelude::Builder;
    ///
    /// let pool = Builder::default_centralized().build_pool(2)?;
    /// let backend = RedisBackend::from_pool(pool, Duration::from_millis(250));
    /// // Commands this crate does not cover go through the same pool.
    /// assert_eq!(backend.pool().map(|pool| pool.size()), Some(2));
    /// # Ok(())
    /// # }
    /// ```
    pub fn pool(&self) -> Option<&Pool> {
        match &self.servers {
            Servers::One(node) => Some(node.pool()),
            Servers::Cluster(_) => None,
        }
    }
}

/// The URL's configuration, with the private CA when one is given.
pub(super) fn fred_config(config: &RedisConfig) -> Result<Config> {
    let mut fred_config = Config::from_url(&config.url).map_err(config_error)?;
    if let Some(ca_file) = &config.tls_ca_file {
        fred_config.tls = Some(tls_with_ca(ca_file)?.into());
    }
    Ok(fred_config)
}

/// A builder with this crate's settings: command and connect timeouts, one attempt per
/// command, and the reconnect policy (50 ms doubling up to the configured maximum).
fn builder(fred_config: Config, config: &RedisConfig) -> Builder {
    let mut builder = Builder::from_config(fred_config);
    builder
        .with_performance_config(|p| p.default_command_timeout = config.command_timeout)
        .with_connection_config(|c| {
            c.connection_timeout = config.connect_timeout;
            c.internal_command_timeout = config.command_timeout.max(Duration::from_secs(1));
            c.max_command_attempts = 1;
        })
        .set_policy({
            let max = (config.reconnect_max_delay.as_millis() as u32).max(1);
            ReconnectPolicy::new_exponential(0, max.min(50), max, 2)
        });
    builder
}

/// A pool of `fred_config`'s server with this crate's settings.
pub(super) fn new_pool(fred_config: Config, config: &RedisConfig) -> Result<Pool> {
    builder(fred_config, config)
        .build_pool(config.pool_size.max(1))
        .map_err(config_error)
}

fn config_error(error: Error) -> CacheError {
    CacheError::Config(format!("REDIS_URL: {}", error.details()))
}

pub(super) fn backend_error(error: Error, config: &RedisConfig) -> CacheError {
    CacheError::Backend(format!(
        "cannot connect to Redis at {}: {error}",
        redact(&config.url)
    ))
}

/// The URL without its password, for messages.
pub(super) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// A TLS client that trusts the certificate authorities in the PEM file `ca_file`.
pub(super) fn tls_with_ca(ca_file: &std::path::Path) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bad =
        |what: String| CacheError::Config(format!("tls_ca_file {}: {what}", ca_file.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| bad(e.to_string()))? {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A client of the same Redis for a near cache's tracking connection: RESP3 (pushes
/// on the same connection), not connected yet, with room for bursts of pushes.
pub(crate) fn tracking_client(config: &RedisConfig) -> Result<Client> {
    let mut fred_config = fred_config(config)?;
    fred_config.version = fred::types::RespVersion::RESP3;
    fred_config.fail_fast = true;
    let mut builder = builder(fred_config, config);
    // fred sizes every broadcast channel of the client by this (reconnections, errors,
    // messages, invalidations, …), and preallocates each: 65 536 slots cost ≈ 56 MiB of
    // RSS. Pushes only wait here while a barrier round is in flight (one round trip); a
    // burst that overflows it is a `Lagged`, which empties the near cache.
    builder.with_performance_config(|p| p.broadcast_channel_capacity = 4_096);
    builder.build().map_err(config_error)
}
