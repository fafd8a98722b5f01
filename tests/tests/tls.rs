//! `rediss://`: a redis-server with a certificate signed by a CA this test makes (with
//! `openssl`), reached with that CA as the only trusted root: the cache reads, fills
//! and invalidates over TLS, and a client that does not trust the CA is refused.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use cache_service::{
    CacheConfig, CacheService, Invalidation, Namespace, RedisBackend, RedisConfig,
};
use integration_tests::{RedisServer, find_on_path, in_ci, unique_prefix, unused_port};

const ITEM: Namespace = Namespace::new("item");

/// A CA, and a server certificate for 127.0.0.1 signed by it, in `dir`.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(status.status.success(), "openssl {args:?}: {status:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("extensions");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
}

#[tokio::test]
async fn over_rediss_with_a_private_ca_the_cache_works_and_an_untrusted_server_is_refused() {
    if find_on_path("redis-server").is_none() || find_on_path("openssl").is_none() {
        assert!(
            !in_ci(),
            "CI needs redis-server and openssl for the TLS test"
        );
        eprintln!("SKIPPED: the TLS test needs redis-server and openssl on PATH");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    make_certificates(dir.path());
    let file = |name: &str| dir.path().join(name).display().to_string();
    let tls_port = unused_port().expect("a port");
    let _redis = RedisServer::start_with(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &file("server.pem"),
        "--tls-key-file",
        &file("server.key"),
        "--tls-ca-cert-file",
        &file("ca.pem"),
        "--tls-auth-clients",
        "no",
    ])
    .expect("redis-server with TLS starts");
    let url = format!("rediss://127.0.0.1:{tls_port}");

    let config = RedisConfig {
        tls_ca_file: Some(dir.path().join("ca.pem")),
        ..RedisConfig::new(url.clone())
    };
    let backend = RedisBackend::connect(&config).await.expect("TLS connects");
    let cache = CacheService::new(
        Arc::new(backend),
        CacheConfig::with_prefix(unique_prefix("tls")),
    )
    .expect("cache");
    let key = cache.key(ITEM, 1);
    let load = |version: u64| async move { Ok::<_, std::convert::Infallible>(Some(Item(version))) };
    assert_eq!(cache.get_or_load(&key, || load(1)).await, Ok(Some(Item(1))));
    assert_eq!(
        cache.get_or_load(&key, || load(99)).await,
        Ok(Some(Item(1))),
        "the second read is a hit, over TLS"
    );
    cache
        .invalidate(&[Invalidation::at_version(key.clone(), 2)])
        .await
        .expect("invalidate over TLS");
    assert_eq!(cache.get_or_load(&key, || load(2)).await, Ok(Some(Item(2))));

    // Only the private CA signs this server's certificate: without it, no connection.
    let untrusting = RedisConfig {
        tls_ca_file: Some(dir.path().join("server.pem")),
        ..RedisConfig::new(url)
    };
    assert!(
        RedisBackend::connect(&untrusting).await.is_err(),
        "a certificate not signed by a trusted root is refused"
    );
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Item(u64);

impl cache_service::Cacheable for Item {
    fn version(&self) -> u64 {
        self.0
    }
}
