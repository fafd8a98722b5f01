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
mod service;
mod support;
