//! A private Redis Cluster: N masters on random ports, each a [`RedisServer`] in cluster
//! mode (its `nodes.conf` and snapshots in its own directory), joined with
//! `redis-cli --cluster create`. A master restarted after a `SAVE` comes back with the same
//! node id and slots and the snapshot's data: a restore from an old snapshot.

use std::io;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{RedisServer, resp_command};

/// How long the cluster may take to agree after a create or a restart.
const CONVERGE: Duration = Duration::from_secs(20);

/// The running cluster; dropping it stops every node.
#[derive(Debug)]
pub struct RedisCluster {
    /// The masters, in the order they were started.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// A cluster of `masters` masters with `replicas` replicas each for `test`, or `None`
    /// after a loud notice when `redis-server` or `redis-cli` is missing (a failure under
    /// `CI=true`). Starts it off the async runtime's threads.
    pub async fn start_or_skip(test: &str, masters: usize, replicas: usize) -> Option<Self> {
        if crate::find_on_path("redis-server").is_none()
            || crate::find_on_path("redis-cli").is_none()
        {
            assert!(
                !crate::in_ci(),
                "{test}: CI needs redis-server and redis-cli for the cluster test"
            );
            eprintln!("SKIPPED {test}: the cluster test needs redis-server and redis-cli on PATH");
            return None;
        }
        let started =
            tokio::task::spawn_blocking(move || Self::start_with_replicas(masters, replicas))
                .await
                .expect("the cluster's start task");
        Some(started.unwrap_or_else(|e| panic!("{test}: the cluster starts: {e}")))
    }

    /// Starts `masters` nodes and makes them one cluster (no replicas); waits until every
    /// node reports `cluster_state:ok`.
    pub fn start(masters: usize) -> io::Result<Self> {
        Self::start_with_replicas(masters, 0)
    }

    /// [`start`](Self::start) with `replicas` replicas per master.
    pub fn start_with_replicas(masters: usize, replicas: usize) -> io::Result<Self> {
        let nodes = (0..masters * (1 + replicas))
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    // The other masters keep serving while one is down (and has no
                    // replica to take over): the set-up that prefers availability.
                    "--cluster-require-full-coverage",
                    "no",
                ])
            })
            .collect::<io::Result<Vec<_>>>()?;
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string()])
            .arg("--cluster-yes")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            return Err(io::Error::other(format!(
                "redis-cli --cluster create: {status}"
            )));
        }
        let cluster = Self { nodes };
        cluster.wait_until_ok()?;
        let deadline = Instant::now() + CONVERGE;
        // Attached and in sync: a replica that never synced cannot take over.
        let synced = |cluster: &Self| -> io::Result<usize> {
            Ok(cluster
                .view()?
                .iter()
                .filter(|node| node.master_id != "-")
                .filter_map(|node| cluster.index_of(node.port))
                .filter(|replica| {
                    cluster.nodes[*replica]
                        .command(&["INFO", "replication"])
                        .is_ok_and(|info| info.contains("master_link_status:up"))
                })
                .count())
        };
        while synced(&cluster)? < masters * replicas {
            if Instant::now() >= deadline {
                return Err(io::Error::other("the replicas did not attach"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(cluster)
    }

    /// `redis-cluster://` with every node, as fred reads it.
    pub fn url(&self) -> String {
        let mut nodes = self.nodes.iter().map(|node| node.port());
        let first = nodes.next().unwrap_or_default();
        let rest: Vec<String> = nodes.map(|port| format!("node=127.0.0.1:{port}")).collect();
        format!("redis-cluster://127.0.0.1:{first}?{}", rest.join("&"))
    }

    /// The index of the master that holds `key`'s slot.
    pub fn master_of(&self, key: &str) -> io::Result<usize> {
        let port = self.any_running_port();
        let slot: u16 = resp_command(port, &["CLUSTER", "KEYSLOT", key])?
            .trim()
            .parse()
            .map_err(|_| io::Error::other("CLUSTER KEYSLOT: not a number"))?;
        self.view()?
            .iter()
            .filter(|node| node.is_master && node.holds(slot))
            .find_map(|node| self.index_of(node.port))
            .ok_or_else(|| io::Error::other(format!("no master holds slot {slot}")))
    }

    /// The index of a replica of the master at index `master`.
    pub fn replica_of(&self, master: usize) -> io::Result<usize> {
        let view = self.view()?;
        let port = self.nodes[master].port();
        let id = view
            .iter()
            .find(|node| node.port == port)
            .map(|node| node.id.clone())
            .ok_or_else(|| io::Error::other(format!("node {master} is not in the cluster")))?;
        view.iter()
            .filter(|node| node.master_id == id)
            .find_map(|node| self.index_of(node.port))
            .ok_or_else(|| io::Error::other(format!("master {master} has no replica")))
    }

    /// Waits until every running node sees the node at index `node` as a master holding
    /// slots (a replica after its master died: once its promotion has spread) and the
    /// cluster agrees again.
    pub fn wait_until_master(&self, node: usize) -> io::Result<()> {
        let deadline = Instant::now() + CONVERGE;
        let port = self.nodes[node].port();
        // Every running node sees it as a master holding slots (the promotion has spread).
        let promoted = || {
            self.nodes.iter().filter(|n| n.is_running()).all(|seer| {
                resp_command(seer.port(), &["CLUSTER", "NODES"]).is_ok_and(|nodes| {
                    nodes
                        .lines()
                        .filter_map(NodeLine::parse)
                        .any(|line| line.port == port && line.is_master && !line.slots.is_empty())
                })
            })
        };
        while !promoted() {
            if Instant::now() >= deadline {
                let server = &self.nodes[node];
                let log = std::fs::read_to_string(server.log_path()).unwrap_or_default();
                let tail: Vec<&str> = log
                    .lines()
                    .rev()
                    .filter(|line| !line.contains("SYNC") && !line.contains("MASTER"))
                    .take(8)
                    .collect();
                return Err(io::Error::other(format!(
                    "node {node} was not promoted; its log ends: {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.wait_until_ok()
    }

    fn index_of(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|n| n.port() == port)
    }

    fn any_running_port(&self) -> u16 {
        self.nodes
            .iter()
            .find(|node| node.is_running())
            .map_or(0, RedisServer::port)
    }

    /// `CLUSTER NODES` as one running node sees it.
    fn view(&self) -> io::Result<Vec<NodeLine>> {
        let nodes = resp_command(self.any_running_port(), &["CLUSTER", "NODES"])?;
        Ok(nodes.lines().filter_map(NodeLine::parse).collect())
    }

    /// Waits until every running node reports `cluster_state:ok` (after a master died:
    /// once its replica has taken over).
    pub fn wait_until_ok(&self) -> io::Result<()> {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let ok = self
                .nodes
                .iter()
                .filter(|node| node.is_running())
                .all(|node| {
                    resp_command(node.port(), &["CLUSTER", "INFO"])
                        .is_ok_and(|info| info.contains("cluster_state:ok"))
                });
            if ok {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::other("the cluster did not converge"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A master, one replica and one sentinel watching them as `mymaster`: the set-up a
/// `redis-sentinel://` URL names.
#[derive(Debug)]
pub struct RedisSentinel {
    /// The master at start.
    pub master: RedisServer,
    /// Its replica at start.
    pub replica: RedisServer,
    sentinel: std::process::Child,
    sentinel_port: u16,
    _dir: tempfile::TempDir,
}

impl RedisSentinel {
    /// The service name the sentinel monitors.
    pub const SERVICE: &'static str = "mymaster";

    /// Starts the three and waits until the replica is in sync and the sentinel answers.
    pub fn start() -> io::Result<Self> {
        let master = RedisServer::start()?;
        let master_port = master.port().to_string();
        let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &master_port])?;
        let dir = tempfile::tempdir()?;
        let sentinel_port = crate::unused_port()?;
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor {service} 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds {service} 1000\n\
                 sentinel failover-timeout {service} 3000\n",
                dir.path().display(),
                service = Self::SERVICE,
            ),
        )?;
        let sentinel = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let set_up = Self {
            master,
            replica,
            sentinel,
            sentinel_port,
            _dir: dir,
        };
        set_up.wait(|s| {
            resp_command(s.sentinel_port, &["PING"]).is_ok_and(|r| r == "PONG")
                && resp_command(s.replica.port(), &["INFO", "replication"])
                    .is_ok_and(|info| info.contains("master_link_status:up"))
        })?;
        Ok(set_up)
    }

    /// `redis-sentinel://` naming the sentinel and the service.
    pub fn url(&self) -> String {
        format!(
            "redis-sentinel://127.0.0.1:{}?sentinelServiceName={}",
            self.sentinel_port,
            Self::SERVICE
        )
    }

    /// Asks the sentinel to fail over, and waits until the replica is the master and
    /// the old master its replica.
    pub fn failover(&self) -> io::Result<()> {
        resp_command(self.sentinel_port, &["SENTINEL", "FAILOVER", Self::SERVICE])?;
        self.wait(|s| {
            resp_command(s.replica.port(), &["INFO", "replication"])
                .is_ok_and(|info| info.contains("role:master"))
                && resp_command(s.master.port(), &["INFO", "replication"])
                    .is_ok_and(|info| info.contains("role:slave"))
        })
    }

    fn wait(&self, done: impl Fn(&Self) -> bool) -> io::Result<()> {
        let deadline = Instant::now() + CONVERGE;
        while !done(self) {
            if Instant::now() >= deadline {
                return Err(io::Error::other("the sentinel set-up did not converge"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        let _ = self.sentinel.kill();
        let _ = self.sentinel.wait();
    }
}

/// One line of `CLUSTER NODES`: `id host:port@bus flags master-id ... slot-ranges`.
struct NodeLine {
    id: String,
    port: u16,
    is_master: bool,
    /// The id of the master this node replicates; `-` for a master.
    master_id: String,
    slots: Vec<(u16, u16)>,
}

impl NodeLine {
    fn parse(line: &str) -> Option<Self> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            return None;
        }
        let slots = fields[8..]
            .iter()
            .filter_map(|range| {
                let mut bounds = range.split('-').filter_map(|b| b.parse::<u16>().ok());
                match (bounds.next(), bounds.next()) {
                    (Some(low), Some(high)) => Some((low, high)),
                    (Some(only), None) => Some((only, only)),
                    _ => None,
                }
            })
            .collect();
        Some(Self {
            id: fields[0].to_owned(),
            port: fields[1].split(['@', ':']).nth(1)?.parse().ok()?,
            is_master: fields[2].contains("master") && !fields[2].contains("fail"),
            master_id: fields[3].to_owned(),
            slots,
        })
    }

    fn holds(&self, slot: u16) -> bool {
        self.slots
            .iter()
            .any(|(low, high)| (*low..=*high).contains(&slot))
    }
}
