//! Building and running the server.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use cache_service::{
    AuditConfig, CacheConfig, CacheService, CoherenceConfig, NearCacheConfig, NearCacheConsistency,
    RedisConfig,
};
use poem::listener::{Acceptor, Listener, TcpAcceptor, TcpListener};
use poem::{EndpointExt, Route, Server};
use product_service::{JobConfig, ProductService};

use crate::api::{self, ApiToken};
use crate::config::{L1Mode, Settings, redact_url};

/// A server that is connected, migrated and bound, but not yet serving.
pub struct Application {
    acceptor: TcpAcceptor,
    local_addr: SocketAddr,
    products: ProductService,
    token: String,
    /// How long in-flight requests may run after a shutdown signal.
    grace: Duration,
    /// Time between passes of the invalidation auditor; `None`: off.
    audit_every: Option<Duration>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Connects to the database and cache, migrates, and binds `settings.bind` (port 0
    /// picks a free port; see [`Application::port`]).
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let products = connect(settings).await?;
        let token = match &settings.api_token {
            Some(token) if !token.is_empty() => token.clone(),
            _ => {
                let token = generate_token();
                println!("API token (generated; set API_TOKEN to choose one): {token}");
                token
            }
        };
        let acceptor = TcpListener::bind(settings.bind)
            .into_acceptor()
            .await
            .with_context(|| format!("failed to listen on {}", settings.bind))?;
        let local_addr = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .context("the listener has no socket address")?;
        Ok(Self {
            acceptor,
            local_addr,
            products,
            token,
            grace: Duration::from_secs(settings.shutdown_grace_secs),
            audit_every: (settings.cache_audit_interval_ms > 0)
                .then(|| Duration::from_millis(settings.cache_audit_interval_ms)),
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// The bearer token writes need.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Serves until `shutdown` completes, with the outbox relay and the job worker
    /// running alongside; then lets in-flight requests finish (up to the shutdown grace),
    /// queues the running job again, applies the invalidations still owed, and closes the
    /// database pool.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let api = api::service(self.products.clone());
        let document = api::document(&api);
        let docs = api::swagger_ui(&api, &document);
        let app = Route::new()
            .nest("/", api)
            .nest("/docs", docs)
            .at("/openapi.json", api::document_endpoint(document));
        let app = crate::middleware::stack(app).data(ApiToken(self.token.clone()));
        let upkeep = crate::telemetry::spawn_upkeep();
        self.products.coherence().check_eviction_policy().await;
        let relay = self.products.coherence().start_relay().await.context(
            "the cache would be incoherent across processes: give every server the same REDIS_URL",
        )?;
        // Serve with the cache open when it is healthy; a dead Redis must not delay start.
        let _ = tokio::time::timeout(Duration::from_secs(2), relay.first_pass()).await;
        let jobs = self.products.spawn_job_worker(JobConfig::default());
        let auditor = self.audit_every.map(|every| {
            self.products.coherence().spawn_auditor(AuditConfig {
                every,
                ..AuditConfig::default()
            })
        });
        tracing::info!(address = %self.local_addr, "serving; Swagger UI at http://{}/docs", self.local_addr);
        Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(app, shutdown, Some(self.grace))
            .await
            .context("HTTP server failed")?;
        upkeep.abort();
        if let Some(auditor) = auditor {
            auditor.shutdown().await;
        }
        jobs.shutdown().await;
        relay.shutdown().await;
        tracing::info!("shut down");
        self.products
            .close()
            .await
            .context("failed to close the database")?;
        Ok(())
    }
}

/// Applies the database migrations (the `migrate` subcommand).
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let db = connect_database(settings).await?;
    product_service::migrate(&db).await?;
    Ok(())
}

/// The database the settings name, with their pool size.
async fn connect_database(
    settings: &Settings,
) -> anyhow::Result<product_service::DatabaseConnection> {
    product_service::connect_with_pool_size(&settings.database_url, settings.database_pool_size)
        .await
        .with_context(|| {
            format!(
                "failed to connect to {}",
                redact_url(&settings.database_url)
            )
        })
}

/// The product service the settings describe: database connected and migrated, cache
/// connected.
pub async fn connect(settings: &Settings) -> anyhow::Result<ProductService> {
    let db = connect_database(settings).await?;
    product_service::migrate(&db)
        .await
        .context("failed to migrate the database")?;
    let config = CacheConfig {
        prefix: settings.cache_prefix.clone(),
        ttl: Duration::from_secs(settings.cache_ttl_secs),
        ..CacheConfig::default()
    };
    let cache = match settings.redis_url() {
        Some(url) => {
            // Starts without Redis too: reads go to the database until it answers.
            let redis = RedisConfig {
                pool_size: usize::from(settings.redis_pool_size),
                command_timeout: Duration::from_millis(settings.redis_command_timeout_ms),
                reconnect_max_delay: Duration::from_millis(settings.redis_reconnect_max_ms),
                tls_ca_file: settings.redis_tls_ca_file.clone(),
                near_cache: match settings.cache_l1 {
                    L1Mode::Strict => Some(NearCacheConsistency::Strict),
                    L1Mode::Bounded => Some(NearCacheConsistency::Bounded(Duration::from_millis(
                        settings.cache_l1_bound_ms,
                    ))),
                    L1Mode::Off => None,
                }
                .map(|consistency| NearCacheConfig {
                    max_bytes: settings.cache_l1_max_mb << 20,
                    consistency,
                    ..NearCacheConfig::default()
                }),
                ..RedisConfig::new(url)
            };
            let cache = CacheService::connect_redis_in_background(&redis, config)
                .await
                .with_context(|| format!("cannot use Redis at {}", redact_url(url)))?;
            tracing::info!(redis = %redact_url(url), prefix = %settings.cache_prefix, near_cache = ?settings.cache_l1, "cache: Redis");
            cache
        }
        None => {
            let max_entries = usize::try_from(settings.cache_max_entries).unwrap_or(usize::MAX);
            let cache = CacheService::in_memory(config, max_entries)?;
            tracing::info!(
                max_entries,
                "cache: in-process memory (set REDIS_URL to use Redis)"
            );
            cache
        }
    };
    let coherence = CoherenceConfig {
        ack_timeout: Duration::from_millis(settings.cache_ack_timeout_ms),
        ..CoherenceConfig::default()
    };
    let products = ProductService::with_config(db, cache, coherence)
        .await
        .context("the database connection cannot serve the products")?;
    // Test-only (the `fault-injection` feature): see
    // `ProductService::pause_after_commit_for_tests`.
    #[cfg(feature = "fault-injection")]
    if std::env::var_os("API_SERVER_TEST_PAUSE_AFTER_COMMIT").is_some() {
        tracing::warn!("fault injection on: every write pauses between commit and invalidation");
        return Ok(products.pause_after_commit_for_tests());
    }
    Ok(products)
}

/// 32 random bytes, hex-encoded.
fn generate_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
