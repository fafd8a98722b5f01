//! Building clients from a [`RedisConfig`]: this crate's timeouts and reconnect policy,
//! TLS with a private CA, and messages that never show a password.

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;

use crate::config::RedisConfig;
use crate::error::{CacheError, Result};

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
