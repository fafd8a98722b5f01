//! `cache-service` against both of its backends.
//!
//! # Layout
//!
//! - [`support`]: the per-test environment ([`support::Env`]: a backend, a key prefix, a
//!   clock), the `Widget` test entity and its in-test "database", pause points.
//! - [`conformance`]: the [`CacheBackend`](cache_service::CacheBackend) contract, written
//!   once as generic functions and run against `MemoryBackend` and `RedisBackend`.
//! - [`service`]: `CacheService` behaviour (hits, negative caching, invalidation, groups,
//!   prefixes) on both backends.
//! - [`races`]: deterministic interleavings (set-after-invalidate, lagging replica, list
//!   groups, stampedes), driven by pause points inside loaders.
//! - [`fail_open`]: a dead or frozen Redis never fails a read.
//! - [`scopes`]: scopes of a group (each moves on alone) and TTLs per namespace.
//!
//! Every Redis test gets its own `redis-server` (or, with `TEST_REDIS_URL`, its own key
//! prefix on that server), so tests run in parallel and never see each other's keys.

/// Runs each generic `async fn name(env: &Env)` of the calling module once per backend,
/// as `memory::name` and `redis::name`.
///
/// `paused` memory tests run on a paused clock (`tokio::time::advance` moves time, so TTL
/// tests take no real time); `realtime` ones on a two-thread runtime. Redis tests always
/// run in real time, and print a loud SKIPPED notice when no Redis is available.
macro_rules! on_both_backends {
    (paused: $($name:ident),+ $(,)?) => {
        mod memory {
            $(
                #[tokio::test(start_paused = true)]
                async fn $name() {
                    let env = $crate::support::Env::memory(stringify!($name), $crate::support::Clock::Paused);
                    super::$name(&env).await;
                }
            )+
        }
        on_both_backends!(@redis $($name),+);
        on_both_backends!(@all $($name),+);
    };
    (realtime: $($name:ident),+ $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let env = $crate::support::Env::memory(stringify!($name), $crate::support::Clock::Real);
                    super::$name(&env).await;
                }
            )+
        }
        on_both_backends!(@redis $($name),+);
        on_both_backends!(@all $($name),+);
    };
    (@all $($name:ident),+) => {
        /// Every test of this module by name, for a run on another set-up (the cluster).
        pub(crate) const ALL: &[(&str, $crate::support::EnvTest)] = &[
            $((stringify!($name), |env| Box::pin($name(env)))),+
        ];
    };
    (@redis $($name:ident),+) => {
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(env) = $crate::support::Env::redis(stringify!($name)).await else {
                        return;
                    };
                    super::$name(&env).await;
                    env.cleanup().await;
                }
            )+
        }
    };
}

mod conformance;
mod fail_open;
mod races;
mod scopes;
mod service;
mod support;

/// The backend contract, the service's behaviour and every race on a 3-master Redis
/// Cluster (one for the whole binary, the tests in turn): every script's keys share a
/// hash slot, and the steps that span slots keep their order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backend_service_and_race_test_holds_on_a_redis_cluster() {
    use integration_tests::cluster::RedisCluster;
    let Some(cluster) = RedisCluster::start_or_skip("cache_suite_on_a_cluster", 3, 0).await else {
        return;
    };
    let tests = conformance::all()
        .chain(service::ALL)
        .chain(races::ALL)
        .chain(scopes::ALL);
    for (name, test) in tests {
        eprintln!("on the cluster: {name}");
        let env = support::Env::cluster(&cluster.url(), name).await;
        test(&env).await;
    }
}
