//! What the cache tests share: a per-test [`Env`], the [`Widget`] entity with its in-test
//! database [`Db`], and [`pause_point`]s for deterministic interleavings.

use std::convert::Infallible;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_service::{
    CacheBackend, CacheConfig, CacheKey, CacheService, Cacheable, Group, MemberKey, MemoryBackend,
    Namespace, RedisBackend, RedisConfig,
};
use integration_tests::{
    RedisServer, delete_keys_with_prefix, redis_client, redis_url_or_skip, unique_prefix,
};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// The namespace of single widgets.
pub const WIDGET: Namespace = Namespace::new("widget");

/// How a test lets time pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The runtime's clock is paused: [`Clock::pass`] advances it instantly.
    Paused,
    /// Real time: [`Clock::pass`] sleeps.
    Real,
}

impl Clock {
    /// Lets `duration` pass.
    pub async fn pass(self, duration: Duration) {
        match self {
            Clock::Paused => tokio::time::advance(duration).await,
            Clock::Real => tokio::time::sleep(duration).await,
        }
    }
}

/// A Redis that a test may inspect.
#[derive(Debug)]
pub struct RedisEnv {
    /// Where it is.
    pub url: String,
    /// A plain client, to look at keys or act like code that bypasses `CacheService`.
    pub client: fred::prelude::Client,
    /// The private server, if this test has one (`None` with `TEST_REDIS_URL`).
    pub server: Option<RedisServer>,
}

/// A test written once over an [`Env`] (see `on_both_backends!`).
pub type EnvTest =
    for<'a> fn(&'a Env) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>;

/// One test's view of one backend: the backend, a key prefix nobody else uses, the
/// clock to let TTLs run out, and for Redis a way to look inside.
#[derive(Debug)]
pub struct Env {
    /// The backend under test.
    pub backend: Arc<dyn CacheBackend>,
    /// This test's key prefix.
    pub prefix: String,
    /// How to let time pass.
    pub clock: Clock,
    /// `Some` for the Redis backend.
    pub redis: Option<RedisEnv>,
}

impl Env {
    /// A fresh `MemoryBackend`.
    pub fn memory(test_name: &str, clock: Clock) -> Self {
        Self {
            backend: Arc::new(MemoryBackend::new(10_000)),
            prefix: unique_prefix(test_name),
            clock,
            redis: None,
        }
    }

    /// A `RedisBackend` over a Redis of this test's own (see
    /// [`redis_url_or_skip`]); `None` when the test is skipped.
    pub async fn redis(test_name: &str) -> Option<Self> {
        let (url, server) = redis_url_or_skip(test_name).await?;
        let backend = RedisBackend::connect(&RedisConfig::new(url.clone()))
            .await
            .expect("RedisBackend connects");
        let client = redis_client(&url).await.expect("a plain client connects");
        Some(Self {
            backend: Arc::new(backend),
            prefix: unique_prefix(test_name),
            clock: Clock::Real,
            redis: Some(RedisEnv {
                url,
                client,
                server,
            }),
        })
    }

    /// A `RedisBackend` over the Redis Cluster at `url` (private to the test binary, so
    /// nothing needs cleaning up).
    pub async fn cluster(url: &str, test_name: &str) -> Self {
        let backend = RedisBackend::connect(&RedisConfig::new(url))
            .await
            .expect("RedisBackend connects to the cluster");
        let client = redis_client(url).await.expect("a cluster client connects");
        Self {
            backend: Arc::new(backend),
            prefix: unique_prefix(test_name),
            clock: Clock::Real,
            redis: Some(RedisEnv {
                url: url.to_owned(),
                client,
                server: None,
            }),
        }
    }

    /// Removes this test's keys from a shared Redis (`TEST_REDIS_URL`); a private server
    /// or a memory store simply goes away with the test. Called at the end of each test,
    /// so a failed test leaves its keys behind for inspection (they carry its name).
    pub async fn cleanup(self) {
        if let Some(RedisEnv {
            client,
            server: None,
            ..
        }) = &self.redis
        {
            delete_keys_with_prefix(client, &self.prefix)
                .await
                .expect("this test's keys can be deleted");
        }
    }

    /// The key of widget `id` under this test's prefix.
    pub fn key(&self, id: impl fmt::Display) -> CacheKey {
        // `CacheKey`s are only built by a `CacheService`; this one exists just to
        // spell keys the way the service under test will.
        CacheService::in_memory(CacheConfig::with_prefix(&self.prefix), 1)
            .expect("a valid config")
            .key(WIDGET, id)
    }

    /// The key of `member` of `group` under this test's prefix, for any generation.
    pub fn member_key(&self, group: &'static str, member: impl fmt::Display) -> MemberKey {
        CacheService::in_memory(CacheConfig::with_prefix(&self.prefix), 1)
            .expect("a valid config")
            .member_key(Group::new(group), member)
    }

    /// The key of a group generation counter under this test's prefix.
    pub fn generation_key(&self, group: &str) -> String {
        format!("{}:{group}:generation", self.prefix)
    }

    /// A `CacheService` over this backend, with [`test_config`].
    pub fn service(&self) -> CacheService {
        self.service_with(|_| {})
    }

    /// A `CacheService` over this backend, with [`test_config`] changed by `change`.
    pub fn service_with(&self, change: impl FnOnce(&mut CacheConfig)) -> CacheService {
        let mut config = test_config(&self.prefix);
        change(&mut config);
        CacheService::new(Arc::clone(&self.backend), config).expect("a valid config")
    }

    /// Another instance of the backend over the same store: for Redis a separate
    /// connection pool (as another server process would have); for memory the same
    /// store, since a memory store is never shared between processes.
    pub async fn another_backend(&self) -> Arc<dyn CacheBackend> {
        match &self.redis {
            Some(redis) => Arc::new(
                RedisBackend::connect(&RedisConfig::new(redis.url.clone()))
                    .await
                    .expect("RedisBackend connects"),
            ),
            None => Arc::clone(&self.backend),
        }
    }
}

/// The defaults, with `prefix` and without TTL jitter (so tests see exact TTLs).
pub fn test_config(prefix: &str) -> CacheConfig {
    CacheConfig {
        ttl_jitter: 0.0,
        ..CacheConfig::with_prefix(prefix)
    }
}

/// The test entity: a row with a version that each write increments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Widget {
    /// Row id.
    pub id: u64,
    /// Row version, starting at 1.
    pub version: u64,
    /// Payload.
    pub name: String,
}

impl Widget {
    /// A widget.
    pub fn new(id: u64, version: u64, name: &str) -> Self {
        Self {
            id,
            version,
            name: name.to_owned(),
        }
    }
}

impl Cacheable for Widget {
    fn version(&self) -> u64 {
        self.version
    }
}

/// A list page: derived from many rows, so it lives in a group and has version 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// Names on the page.
    pub names: Vec<String>,
}

impl Cacheable for Page {
    fn version(&self) -> u64 {
        0
    }
}

/// The in-test "database": one widget row (or none) and a count of loads.
#[derive(Debug, Default)]
pub struct Db {
    row: Mutex<Option<Widget>>,
    loads: AtomicUsize,
}

impl Db {
    /// A database holding `widget`.
    pub fn with(widget: Widget) -> Arc<Self> {
        Arc::new(Self {
            row: Mutex::new(Some(widget)),
            loads: AtomicUsize::new(0),
        })
    }

    /// A database without the row.
    pub fn empty() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// What a loader sees: the row now. Counts as one load.
    pub fn load(&self) -> Option<Widget> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.peek()
    }

    /// The row, without counting a load.
    pub fn peek(&self) -> Option<Widget> {
        self.row.lock().expect("not poisoned").clone()
    }

    /// Renames the widget, bumping its version (a committed write); returns the new row.
    pub fn write(&self, name: &str) -> Widget {
        let mut row = self.row.lock().expect("not poisoned");
        let widget = row.as_mut().expect("the row exists");
        widget.version += 1;
        widget.name = name.to_owned();
        widget.clone()
    }

    /// How many loads ran.
    pub fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }
}

/// `cache.get_or_load(key)` with a loader reading `db`.
pub async fn read(cache: &CacheService, key: &CacheKey, db: &Db) -> Option<Widget> {
    let Ok(widget) = cache
        .get_or_load(key, || async { Ok::<_, Infallible>(db.load()) })
        .await;
    widget
}

/// A point where a loader stops until the test lets it go on: the loader holds the
/// [`PausePoint`], the test the [`PauseControl`].
pub fn pause_point() -> (PausePoint, PauseControl) {
    let (reached_tx, reached_rx) = oneshot::channel();
    let (resume_tx, resume_rx) = oneshot::channel();
    (
        PausePoint {
            reached: reached_tx,
            resume: resume_rx,
        },
        PauseControl {
            reached: reached_rx,
            resume: resume_tx,
        },
    )
}

/// The loader's side of a [`pause_point`].
#[derive(Debug)]
pub struct PausePoint {
    reached: oneshot::Sender<()>,
    resume: oneshot::Receiver<()>,
}

impl PausePoint {
    /// Tells the test the loader got here, then waits until it may go on.
    pub async fn pause(self) {
        let _ = self.reached.send(());
        self.resume
            .await
            .expect("the test resumes the loader before it ends");
    }
}

/// The test's side of a [`pause_point`].
#[derive(Debug)]
pub struct PauseControl {
    reached: oneshot::Receiver<()>,
    resume: oneshot::Sender<()>,
}

impl PauseControl {
    /// Waits until the loader is at the pause point (at most 10 s, to fail rather than
    /// hang if it never gets there).
    pub async fn reached(&mut self) {
        tokio::time::timeout(Duration::from_secs(10), &mut self.reached)
            .await
            .expect("the loader reaches its pause point")
            .expect("the loader is still alive");
    }

    /// Lets the loader go on.
    pub fn resume(self) {
        let _ = self.resume.send(());
    }
}

/// Awaits `future`, failing the test instead of hanging if it takes over 10 s.
pub async fn within_10s<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .expect("finished within 10 s")
}
