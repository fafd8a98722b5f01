//! One Redis server (or what fred routes to as one: a Sentinel-watched master, or an
//! application's own cluster pool) through a `fred` pool, with what every command needs
//! around it: round robin, fail-fast reads, error mapping and reconnection counting.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fred::clients::WithOptions;
use fred::interfaces::ClusterInterface;
use fred::prelude::*;
use fred::types::InfoKind;
use fred::types::scripts::Script;
use tokio::sync::Notify;

use crate::error::{CacheError, Result};

/// A pool and its bookkeeping.
pub(super) struct Node {
    pool: Pool,
    /// Each pooled client with `fail_fast` set, for reads (built once: `with_options`
    /// clones the client per call).
    readers: Box<[WithOptions<Client>]>,
    /// Round-robin position over the pool.
    next: AtomicUsize,
    command_timeout: Duration,
    reconnects: Reconnects,
}

/// Counts new connections, per pooled client, into a count shared by every node of a
/// backend. Every command looks at the reconnections of the client it used after its
/// reply came back, so a reply that came over a new connection is always counted by the
/// time the caller looks: fred announces a new connection before it sends anything over
/// it. Only that one client is looked at, so the hit path takes one uncontended lock,
/// not one per client.
struct Reconnects {
    receivers: Vec<std::sync::Mutex<tokio::sync::broadcast::Receiver<fred::types::config::Server>>>,
    seen: Arc<AtomicU64>,
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
}

impl Node {
    /// The node over `pool` (connected or not). Reconnections are counted into `seen`
    /// and wake `signal`; with `signal_first`, each client's first connection wakes it
    /// too (a node that joins a running backend).
    pub(super) fn over(
        pool: Pool,
        command_timeout: Duration,
        seen: Arc<AtomicU64>,
        signal: Arc<Notify>,
        signal_first: bool,
    ) -> Self {
        let reconnects = Reconnects {
            receivers: pool
                .clients()
                .iter()
                .map(|client| std::sync::Mutex::new(client.reconnect_rx()))
                .collect(),
            seen,
        };
        for client in pool.clients() {
            let mut events = client.reconnect_rx();
            let signal = signal.clone();
            tokio::spawn(async move {
                use tokio::sync::broadcast::error::RecvError;
                // A client's first connection is not a reconnection: the relay's first pass
                // checks it (a connection that comes late is signalled by whoever waits
                // for it). Waking the relay for it only ran a second pass at some moment
                // after start, which a test holding an invalidation owed cannot allow.
                let mut first = !signal_first;
                while let Ok(_) | Err(RecvError::Lagged(_)) = events.recv().await {
                    if !std::mem::take(&mut first) {
                        signal.notify_one();
                    }
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
            next: AtomicUsize::new(0),
            command_timeout,
            reconnects,
        }
    }

    pub(super) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The next pooled client, round robin, and its index.
    pub(super) fn client(&self) -> (usize, &Client) {
        let clients = self.pool.clients();
        let index = self.next.fetch_add(1, Ordering::Relaxed) % clients.len();
        (index, &clients[index])
    }

    pub(super) fn map_error(&self, error: Error) -> CacheError {
        match error.kind() {
            ErrorKind::Timeout => CacheError::Timeout(self.command_timeout),
            _ => CacheError::Backend(error.to_string()),
        }
    }

    /// Counts the reconnections of every pooled client.
    pub(super) fn poll_all(&self) {
        for index in 0..self.reconnects.receivers.len() {
            self.reconnects.poll(index);
        }
    }

    /// Runs `command` on the next client, then counts that client's reconnections.
    pub(super) async fn run<'a, R, F>(&'a self, command: impl FnOnce(&'a Client) -> F) -> Result<R>
    where
        F: Future<Output = std::result::Result<R, Error>> + 'a,
    {
        let (index, client) = self.client();
        let reply = command(client).await;
        self.reconnects.poll(index);
        reply.map_err(|e| self.map_error(e))
    }

    /// `GET`, failing at once while disconnected.
    pub(super) async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let (index, _) = self.client();
        let reply = self.readers[index].get::<Option<Bytes>, _>(key).await;
        self.reconnects.poll(index);
        reply.map_err(|e| self.map_error(e))
    }

    pub(super) async fn eval<R: FromValue>(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<R> {
        self.run(|client| script.evalsha_with_reload(client, keys, args))
            .await
    }

    /// `INFO` (the default sections) from every pooled connection, which must lead to
    /// one master: after a Sentinel failover a connection may still lead to the old
    /// master, now a replica that answers reads: it is reconnected (through the
    /// sentinels, to the new master), and until every connection agrees the identity is
    /// an error, so reads stay off the cache. Returns the first reply.
    pub(super) async fn master_info(&self) -> Result<String> {
        let mut first: Option<String> = None;
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
            match &first {
                Some(seen) if info_field(seen, "run_id") != info_field(&info, "run_id") => {
                    return Err(CacheError::Backend(
                        "the pooled connections lead to different servers".into(),
                    ));
                }
                Some(_) => {}
                None => first = Some(info),
            }
        }
        first.ok_or_else(|| CacheError::Backend("the pool has no connection".into()))
    }

    /// The identity of an application's own cluster pool, routed by fred: every
    /// master's address and `run_id`, each asked directly.
    pub(super) async fn fred_cluster_identity(&self) -> Result<String> {
        let (_, client) = self.client();
        // The routing table fred caches may still name a master that died and was
        // replaced by its replica: refresh it first (one `CLUSTER SLOTS`).
        let bound = Duration::from_secs(2);
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
        self.poll_all();
        Ok(parts.join(","))
    }

    /// Stops reconnecting and closes the connections.
    pub(super) fn close(&self) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let _ = pool.quit().await;
        });
    }
}

/// The value of `field` in an `INFO` reply.
pub(super) fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.trim()
            .strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
    })
}

/// The `run_id` line of `INFO server`.
pub(super) fn run_id(info: &str) -> Result<String> {
    info.lines()
        .find_map(|line| line.trim().strip_prefix("run_id:"))
        .map(str::to_owned)
        .ok_or_else(|| CacheError::Protocol("INFO server has no run_id".into()))
}
