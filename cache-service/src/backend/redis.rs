//! Redis backend over a `fred` pool.
//!
//! Each atomic step on one entry is one Lua script over keys that share a hash tag (see
//! [`key`](crate::key)), so the same code runs on a Redis Cluster. Two steps span
//! entries, to save a round trip: a write's invalidation (groups and items) and a group
//! member's read (generation and entry); on a standalone Redis each is one script, on a
//! cluster they run as separate steps in the same order. The client reconnects
//! with exponential backoff, every command has a timeout, and reads fail fast while
//! disconnected: a dead or frozen Redis costs a request at most one timeout.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fred::clients::WithOptions;
use fred::interfaces::ClusterInterface;
use fred::prelude::*;
use fred::types::InfoKind;
use fred::types::scripts::Script;

use super::{
    CacheBackend, FillOutcome, LeaseToken, Lookup, clock_generation, invalidate_write_in_steps,
    millis,
};
use crate::config::RedisConfig;
use crate::error::{CacheError, Result};
use crate::key::{CacheKey, Invalidation, MemberKey};

/// Reads the version from an entry's header (see [`codec`](crate::codec)); -1 for bytes
/// in another format, so they always count as older.
const ENTRY_VERSION: &str = r#"
local function entry_version(v)
  if string.len(v) < 10 or string.byte(v, 1) ~= 1 then return -1 end
  local n = 0
  for i = 2, 9 do n = n * 256 + string.byte(v, i) end
  return n
end
"#;

/// KEYS: value, lease. ARGV: token, lease ttl (ms).
/// Returns {1, value} on a hit, {0} when the lease was taken, {2} when another holds it.
const GET_OR_LEASE: &str = r#"
local v = redis.call('GET', KEYS[1])
if v then return {1, v} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0} end
return {2}
"#;

/// KEYS: value, lease, fence. ARGV: token, entry, ttl (ms).
/// Returns 0 stored, 1 lease lost, 2 fenced.
const FILL: &str = r#"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 1 end
redis.call('DEL', KEYS[2])
local fence = redis.call('GET', KEYS[3])
if fence and entry_version(ARGV[2]) < tonumber(fence) then return 2 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 0
"#;

/// Applies one invalidation (see [`Invalidation`]): `version` '' removes the entry and
/// its lease; a version removes older entries and raises the fence to it.
const INVALIDATE_FN: &str = r#"
local function invalidate(value, lease, fence_key, version, fence_ttl)
  if version == '' then
    redis.call('DEL', value, lease)
    return
  end
  local v = tonumber(version)
  local current = redis.call('GET', value)
  if current and entry_version(current) < v then redis.call('DEL', value) end
  local fence = redis.call('GET', fence_key)
  if fence and tonumber(fence) >= v then
    redis.call('PEXPIRE', fence_key, fence_ttl)
  else
    redis.call('SET', fence_key, version, 'PX', fence_ttl)
  end
end
"#;

/// Moves a group to its next generation, or seeds a lost counter from the clock.
const BUMP_FN: &str = r#"
-- INCR's integer reply, not tostring(): Lua 5.1 prints numbers with 14 significant
-- digits, so a clock-seeded counter (16 digits) would come back as "1.7957e+15".
local function bump(key, seed)
  if redis.call('EXISTS', key) == 1 then return redis.call('INCR', key) end
  redis.call('SET', key, seed)
  return seed
end
"#;

/// KEYS: value, lease, fence. ARGV: version ('' = unconditional), fence ttl (ms).
const INVALIDATE: &str = r#"
invalidate(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2])
return 1
"#;

/// KEYS: generation. ARGV: seed from the clock.
const GENERATION: &str = r#"
local g = redis.call('GET', KEYS[1])
if g then return g end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"#;

/// A group member's entry with the group's generation, in one step. The member's key
/// depends on the generation, so it is built here and is not in KEYS: standalone Redis
/// only (a cluster reads the two in turn).
/// KEYS: generation. ARGV: member key head, member key tail, seed from the clock.
/// Returns {generation} or {generation, entry}.
const GET_MEMBER: &str = r#"
local g = redis.call('GET', KEYS[1])
if not g then
  redis.call('SET', KEYS[1], ARGV[3])
  g = ARGV[3]
end
return {g, redis.call('GET', ARGV[1] .. g .. ARGV[2])}
"#;

/// KEYS: generation. ARGV: seed from the clock.
const BUMP_GENERATION: &str = r#"
return bump(KEYS[1], ARGV[1])
"#;

/// One write's invalidations in one step: the groups first, then the items, so an
/// item's fence never exists without its groups having moved on (what
/// `CacheService::replay_write` relies on); a failing group bump stops the script
/// before any item.
/// KEYS: the groups' generation keys, then value, lease, fence of each item.
/// ARGV: number of groups, clock seed, fence ttl (ms), then each item's version.
const INVALIDATE_WRITE: &str = r#"
local groups = tonumber(ARGV[1])
for i = 1, groups do bump(KEYS[i], ARGV[2]) end
local item = 0
for k = groups + 1, #KEYS, 3 do
  item = item + 1
  invalidate(KEYS[k], KEYS[k + 1], KEYS[k + 2], ARGV[3 + item], ARGV[3])
end
return 1
"#;

struct Scripts {
    get_or_lease: Script,
    fill: Script,
    invalidate: Script,
    generation: Script,
    get_member: Script,
    bump_generation: Script,
    invalidate_write: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            get_or_lease: Script::from_lua(GET_OR_LEASE),
            fill: Script::from_lua(format!("{ENTRY_VERSION}{FILL}")),
            invalidate: Script::from_lua(format!("{ENTRY_VERSION}{INVALIDATE_FN}{INVALIDATE}")),
            generation: Script::from_lua(GENERATION),
            get_member: Script::from_lua(GET_MEMBER),
            bump_generation: Script::from_lua(format!("{BUMP_FN}{BUMP_GENERATION}")),
            invalidate_write: Script::from_lua(format!(
                "{ENTRY_VERSION}{INVALIDATE_FN}{BUMP_FN}{INVALIDATE_WRITE}"
            )),
        }
    }
}

/// Redis through a `fred` connection pool. Cloning is shallow.
#[derive(Clone)]
pub struct RedisBackend {
    pool: Pool,
    /// Each pooled client with `fail_fast` set, for reads (built once: `with_options`
    /// clones the client per call).
    readers: Arc<[WithOptions<Client>]>,
    /// Round-robin position over the pool.
    next: Arc<AtomicUsize>,
    scripts: Arc<Scripts>,
    command_timeout: Duration,
    reconnects: Arc<Reconnects>,
    /// Woken on every reconnection (and on the first connection, when it came late).
    signal: Arc<tokio::sync::Notify>,
}

/// Counts new connections, per pooled client. Every command looks at the reconnections
/// of the client it used after its reply came back, so a reply that came over a new
/// connection is always counted by the time the caller looks: fred announces a new
/// connection before it sends anything over it. Only that one client is looked at, so
/// the hit path takes one uncontended lock, not one per client.
struct Reconnects {
    receivers: Vec<std::sync::Mutex<tokio::sync::broadcast::Receiver<fred::types::config::Server>>>,
    seen: AtomicU64,
}

impl Reconnects {
    /// Counts the reconnections announced on client `index`.
    fn poll(&self, index: usize) {
        use tokio::sync::broadcast::error::TryRecvError;
        let Some(receiver) = self.receivers.get(index) else {
            return;
        };
        let mut new = 0;
        let mut rx = receiver.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match rx.try_recv() {
                Ok(_) => new += 1,
                Err(TryRecvError::Lagged(n)) => new += n,
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        if new > 0 {
            self.seen.fetch_add(new, Ordering::AcqRel);
        }
    }

    fn count(&self) -> u64 {
        self.seen.load(Ordering::Acquire)
    }

    fn poll_all(&self) -> u64 {
        for index in 0..self.receivers.len() {
            self.poll(index);
        }
        self.count()
    }
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("pool_size", &self.pool.size())
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// Connects the pool; fails if Redis cannot be reached now. Afterwards the pool
    /// reconnects on its own, forever (see [`connect_in_background`]).
    ///
    /// [`connect_in_background`]: Self::connect_in_background
    pub async fn connect(config: &RedisConfig) -> Result<Self> {
        let backend = Self::build(config, true)?;
        let init = backend
            .pool
            .init()
            .await
            .map_err(|e| backend_error(e, config))?;
        drop(init); // the connection tasks keep running inside the pool
        backend.ping().await?;
        Ok(backend)
    }

    /// Like [`connect`](Self::connect), but a Redis that cannot be reached now is not an
    /// error: the pool keeps trying in the background, and until it connects reads fail
    /// at once (and go to the loader) and other commands after the command timeout.
    /// Waits up to the connect timeout for the first connection. Fails only on a bad URL.
    ///
    /// Reconnection is fast on purpose (50 ms, doubling to at most
    /// [`RedisConfig::reconnect_max_delay`], 200 ms by default, forever): the cache is
    /// useless while it is away, and each attempt is one TCP connect.
    pub async fn connect_in_background(config: &RedisConfig) -> Result<Self> {
        let backend = Self::build(config, false)?;
        drop(backend.pool.connect_pool());
        let connected =
            tokio::time::timeout(config.connect_timeout, backend.pool.wait_for_connect()).await;
        if !matches!(connected, Ok(Ok(()))) {
            tracing::warn!(redis = %redact(&config.url), "Redis cannot be reached now; reads go to the database until it can");
            let pool = backend.pool.clone();
            let signal = backend.signal.clone();
            tokio::spawn(async move {
                if pool.wait_for_connect().await.is_ok() {
                    signal.notify_one();
                }
            });
        }
        Ok(backend)
    }

    /// The pool, not connected yet. With `fail_fast`, a first connection that fails is an
    /// error; without, it is retried like any later one.
    fn build(config: &RedisConfig, fail_fast: bool) -> Result<Self> {
        let mut fred_config = Config::from_url(&config.url)
            .map_err(|e| CacheError::Config(format!("REDIS_URL: {}", e.details())))?;
        fred_config.fail_fast = fail_fast;
        if let Some(ca_file) = &config.tls_ca_file {
            fred_config.tls = Some(tls_with_ca(ca_file)?.into());
        }
        let pool = Builder::from_config(fred_config)
            .with_performance_config(|p| p.default_command_timeout = config.command_timeout)
            .with_connection_config(|c| {
                c.connection_timeout = config.connect_timeout;
                c.internal_command_timeout = config.command_timeout.max(Duration::from_secs(1));
                c.max_command_attempts = 1;
            })
            .set_policy({
                let max = (config.reconnect_max_delay.as_millis() as u32).max(1);
                ReconnectPolicy::new_exponential(0, max.min(50), max, 2)
            })
            .build_pool(config.pool_size.max(1))
            .map_err(|e| CacheError::Config(format!("REDIS_URL: {}", e.details())))?;
        Ok(Self::over(pool, config.command_timeout))
    }

    /// A backend over an application's own fred pool (connected already, or connected
    /// by the caller later with [`Pool::init`]). `command_timeout` is what the pool's
    /// commands give up after (for error messages; set it on the pool). The pool should
    /// have a reconnect policy and a command timeout, or a dead Redis hangs requests
    /// (see [`RedisConfig`] for the values this crate uses).
    pub fn from_pool(pool: Pool, command_timeout: Duration) -> Self {
        Self::over(pool, command_timeout)
    }

    fn over(pool: Pool, command_timeout: Duration) -> Self {
        let reconnects = Arc::new(Reconnects {
            receivers: pool
                .clients()
                .iter()
                .map(|client| std::sync::Mutex::new(client.reconnect_rx()))
                .collect(),
            seen: AtomicU64::new(0),
        });
        let signal = Arc::new(tokio::sync::Notify::new());
        for client in pool.clients() {
            let mut events = client.reconnect_rx();
            let signal = signal.clone();
            tokio::spawn(async move {
                use tokio::sync::broadcast::error::RecvError;
                while let Ok(_) | Err(RecvError::Lagged(_)) = events.recv().await {
                    signal.notify_one();
                }
            });
        }
        let fail_fast = Options {
            fail_fast: true,
            ..Options::default()
        };
        let readers = pool
            .clients()
            .iter()
            .map(|client| client.with_options(&fail_fast))
            .collect();
        Self {
            pool,
            readers,
            next: Arc::new(AtomicUsize::new(0)),
            scripts: Arc::new(Scripts::new()),
            command_timeout,
            reconnects,
            signal,
        }
    }

    /// The underlying pool, for callers that need commands this trait does not cover.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The next pooled client, round robin, and its index.
    fn client(&self) -> (usize, &Client) {
        let clients = self.pool.clients();
        let index = self.next.fetch_add(1, Ordering::Relaxed) % clients.len();
        (index, &clients[index])
    }

    fn map_error(&self, error: Error) -> CacheError {
        match error.kind() {
            ErrorKind::Timeout => CacheError::Timeout(self.command_timeout),
            _ => CacheError::Backend(error.to_string()),
        }
    }

    /// The `run_id` of the server behind every pooled connection, which must be one
    /// master. After a Sentinel failover a connection may still lead to the old master,
    /// now a replica that answers reads: it is reconnected (through the sentinels, to the
    /// new master), and until every connection agrees the identity is an error, so reads
    /// stay off the cache.
    async fn standalone_identity(&self) -> Result<String> {
        let mut identity: Option<String> = None;
        for (index, client) in self.pool.clients().iter().enumerate() {
            let reply = client.info::<String>(None).await;
            self.reconnects.poll(index);
            let info = reply.map_err(|e| self.map_error(e))?;
            if !info.lines().any(|line| line.trim() == "role:master") {
                let _ = client.force_reconnection().await;
                return Err(CacheError::Backend(
                    "a connection leads to a replica; reconnecting it to the master".into(),
                ));
            }
            let id = run_id(&info)?;
            match &identity {
                Some(seen) if *seen != id => {
                    return Err(CacheError::Backend(
                        "the pooled connections lead to different servers".into(),
                    ));
                }
                _ => identity = Some(id),
            }
        }
        identity.ok_or_else(|| CacheError::Backend("the pool has no connection".into()))
    }

    async fn eval<R: FromValue>(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<R> {
        let (index, client) = self.client();
        let reply = script.evalsha_with_reload(client, keys, args).await;
        self.reconnects.poll(index);
        reply.map_err(|e| self.map_error(e))
    }
}

/// The script argument of an invalidation's version ('' for an unconditional one).
fn version_arg(invalidation: &Invalidation) -> String {
    invalidation
        .version
        .map(|v| v.to_string())
        .unwrap_or_default()
}

fn backend_error(error: Error, config: &RedisConfig) -> CacheError {
    CacheError::Backend(format!(
        "cannot connect to Redis at {}: {error}",
        redact(&config.url)
    ))
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// A TLS client that trusts the certificate authorities in the PEM file `ca_file`.
fn tls_with_ca(ca_file: &std::path::Path) -> Result<rustls::ClientConfig> {
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

/// The `run_id` line of `INFO server`.
fn run_id(info: &str) -> Result<String> {
    info.lines()
        .find_map(|line| line.trim().strip_prefix("run_id:"))
        .map(str::to_owned)
        .ok_or_else(|| CacheError::Protocol("INFO server has no run_id".into()))
}

fn unexpected(what: &str, value: &Value) -> CacheError {
    CacheError::Protocol(format!("{what}: {value:?}"))
}

#[async_trait]
impl CacheBackend for RedisBackend {
    /// The `fred` command future is about 7 KB; the box `async_trait` puts it in keeps
    /// the futures of everything that awaits a read small (a server moves its request
    /// future into a new box at each layer of its router and middleware, and would
    /// copy those 7 KB a dozen times per request).
    async fn get(&self, key: &CacheKey) -> Result<Option<Bytes>> {
        let (index, _) = self.client();
        let reply = self.readers[index]
            .get::<Option<Bytes>, _>(key.as_str())
            .await;
        self.reconnects.poll(index);
        reply.map_err(|e| self.map_error(e))
    }

    async fn get_or_lease(
        &self,
        key: &CacheKey,
        token: LeaseToken,
        lease_ttl: Duration,
    ) -> Result<Lookup> {
        let reply: Value = self
            .eval(
                &self.scripts.get_or_lease,
                vec![key.as_str().to_owned(), key.lease_key()],
                vec![
                    Value::from(token.0.to_string()),
                    Value::from(millis(lease_ttl) as i64),
                ],
            )
            .await?;
        let Value::Array(mut items) = reply else {
            return Err(unexpected("get_or_lease", &reply));
        };
        match items.first().and_then(Value::as_i64) {
            Some(0) => Ok(Lookup::Leased),
            Some(2) => Ok(Lookup::Busy),
            Some(1) if items.len() == 2 => match items.pop() {
                Some(value) => value
                    .into_bytes()
                    .map(Lookup::Hit)
                    .ok_or_else(|| CacheError::Protocol("get_or_lease: value is not bytes".into())),
                None => Err(CacheError::Protocol("get_or_lease: missing value".into())),
            },
            _ => Err(unexpected("get_or_lease", &Value::Array(items))),
        }
    }

    async fn fill(
        &self,
        key: &CacheKey,
        token: LeaseToken,
        entry: &[u8],
        ttl: Duration,
    ) -> Result<FillOutcome> {
        let reply: i64 = self
            .eval(
                &self.scripts.fill,
                vec![key.as_str().to_owned(), key.lease_key(), key.fence_key()],
                vec![
                    Value::from(token.0.to_string()),
                    Value::Bytes(Bytes::copy_from_slice(entry)),
                    Value::from(millis(ttl) as i64),
                ],
            )
            .await?;
        match reply {
            0 => Ok(FillOutcome::Stored),
            1 => Ok(FillOutcome::LeaseLost),
            2 => Ok(FillOutcome::Fenced),
            other => Err(unexpected("fill", &Value::Integer(other))),
        }
    }

    async fn invalidate(&self, invalidation: &Invalidation, fence_ttl: Duration) -> Result<()> {
        let key = &invalidation.key;
        let _: i64 = self
            .eval(
                &self.scripts.invalidate,
                vec![key.as_str().to_owned(), key.lease_key(), key.fence_key()],
                vec![
                    Value::from(version_arg(invalidation)),
                    Value::from(millis(fence_ttl) as i64),
                ],
            )
            .await?;
        Ok(())
    }

    /// One script, one round trip. On a cluster the keys live on different nodes, which
    /// one script cannot reach: there the steps run one after another.
    async fn invalidate_write(
        &self,
        items: &[Invalidation],
        generation_keys: &[String],
        fence_ttl: Duration,
    ) -> Result<()> {
        if self.pool.is_clustered() {
            return invalidate_write_in_steps(self, items, generation_keys, fence_ttl).await;
        }
        let mut keys = generation_keys.to_vec();
        let mut args = vec![
            Value::from(generation_keys.len() as i64),
            Value::from(clock_generation().to_string()),
            Value::from(millis(fence_ttl) as i64),
        ];
        for invalidation in items {
            let key = &invalidation.key;
            keys.extend([key.as_str().to_owned(), key.lease_key(), key.fence_key()]);
            args.push(Value::from(version_arg(invalidation)));
        }
        let _: i64 = self
            .eval(&self.scripts.invalidate_write, keys, args)
            .await?;
        Ok(())
    }

    async fn fence(&self, key: &CacheKey) -> Result<Option<u64>> {
        let (index, client) = self.client();
        let reply = client.get::<Option<String>, _>(key.fence_key()).await;
        self.reconnects.poll(index);
        let fence = reply.map_err(|e| self.map_error(e))?;
        fence
            .map(|f| {
                f.parse()
                    .map_err(|_| CacheError::Protocol(format!("fence {f:?}")))
            })
            .transpose()
    }

    async fn generation(&self, key: &str) -> Result<u64> {
        let reply: String = self
            .eval(
                &self.scripts.generation,
                vec![key.to_owned()],
                vec![Value::from(clock_generation().to_string())],
            )
            .await?;
        reply
            .parse()
            .map_err(|_| CacheError::Protocol(format!("generation {reply:?}")))
    }

    async fn get_member(
        &self,
        generation_key: &str,
        member: &MemberKey,
    ) -> Result<(u64, Option<Bytes>)> {
        if self.pool.is_clustered() {
            let generation = self.generation(generation_key).await?;
            return Ok((generation, self.get(&member.at(generation)).await?));
        }
        let reply: Value = self
            .eval(
                &self.scripts.get_member,
                vec![generation_key.to_owned()],
                vec![
                    Value::from(member.head()),
                    Value::from(member.tail()),
                    Value::from(clock_generation().to_string()),
                ],
            )
            .await?;
        let Value::Array(mut items) = reply else {
            return Err(unexpected("get_member", &reply));
        };
        let entry = match items.len() {
            1 => None,
            2 => items.pop().and_then(Value::into_bytes),
            _ => return Err(unexpected("get_member", &Value::Array(items))),
        };
        let generation = items
            .first()
            .and_then(|g| g.as_str().and_then(|g| g.parse().ok()))
            .ok_or_else(|| CacheError::Protocol(format!("get_member generation {items:?}")))?;
        Ok((generation, entry))
    }

    async fn bump_generation(&self, key: &str) -> Result<u64> {
        let reply: String = self
            .eval(
                &self.scripts.bump_generation,
                vec![key.to_owned()],
                vec![Value::from(clock_generation().to_string())],
            )
            .await?;
        reply
            .parse()
            .map_err(|_| CacheError::Protocol(format!("generation {reply:?}")))
    }

    /// Standalone (or behind Sentinel): the master's `run_id`, as every pooled
    /// connection sees it. Cluster: every master's
    /// address and `run_id`, each asked directly, so a restart, a restore or a failover
    /// of any one master changes it, and a reconnection to the same masters does not.
    async fn identity(&self) -> Result<Option<String>> {
        let (index, client) = self.client();
        if !self.pool.is_clustered() {
            return self.standalone_identity().await.map(Some);
        }
        // The routing table fred caches may still name a master that died and was
        // replaced by its replica: refresh it first (one `CLUSTER SLOTS`).
        let bound = self.command_timeout.max(Duration::from_millis(100)) * 4;
        match tokio::time::timeout(bound, client.sync_cluster()).await {
            Ok(result) => result.map_err(|e| self.map_error(e))?,
            Err(_) => return Err(CacheError::Backend("CLUSTER SLOTS: timed out".into())),
        }
        let mut masters = client
            .cached_cluster_state()
            .map(|state| state.unique_primary_nodes())
            .unwrap_or_default();
        if masters.is_empty() {
            return Err(CacheError::Backend(
                "the cluster's masters are not known yet".into(),
            ));
        }
        masters.sort_by(|a, b| (&a.host, a.port).cmp(&(&b.host, b.port)));
        let mut parts = Vec::with_capacity(masters.len());
        for master in masters {
            let address = format!("{}:{}", master.host, master.port);
            let reply = tokio::time::timeout(
                bound,
                client
                    .with_cluster_node(master)
                    .info::<String>(Some(InfoKind::Server)),
            )
            .await
            .map_err(|_| CacheError::Backend(format!("INFO on {address}: timed out")))?;
            let info = reply.map_err(|e| self.map_error(e))?;
            parts.push(format!("{address}={}", run_id(&info)?));
        }
        self.reconnects.poll(index);
        Ok(Some(parts.join(",")))
    }

    fn reconnects(&self) -> u64 {
        self.reconnects.count()
    }

    fn refresh_reconnects(&self) -> u64 {
        self.reconnects.poll_all()
    }

    async fn reconnected(&self) {
        self.signal.notified().await;
    }

    async fn eviction_policy(&self) -> Result<Option<String>> {
        let (index, client) = self.client();
        let reply = client.info::<String>(Some(InfoKind::Memory)).await;
        self.reconnects.poll(index);
        let info = reply.map_err(|e| self.map_error(e))?;
        Ok(info
            .lines()
            .find_map(|line| line.trim().strip_prefix("maxmemory_policy:"))
            .map(str::to_owned))
    }

    async fn ping(&self) -> Result<()> {
        let (index, client) = self.client();
        let reply = client.ping::<String>(None).await;
        self.reconnects.poll(index);
        reply.map_err(|e| self.map_error(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn urls_lose_their_password_in_messages() {
        assert_eq!(
            redact("redis://user:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
    }
}
