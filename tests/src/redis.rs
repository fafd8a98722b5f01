//! Private `redis-server` processes, and a Redis for a test: the shared one named by
//! [`TEST_REDIS_URL`], or a private server, or a loud skip.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fred::prelude::{Builder, ClientLike, Config, ReconnectPolicy};

use crate::{TEST_REDIS_URL, find_on_path, skip};

/// How long a private Redis may take to answer after it was started.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How many ports [`RedisServer::start`] tries before giving up.
const PORT_ATTEMPTS: usize = 5;

/// A private `redis-server` child process on a free port of 127.0.0.1, without
/// persistence (`--save "" --appendonly no`), in its own temporary directory.
///
/// Dropping it kills the process and removes the directory. [`stop`](Self::stop) and
/// [`restart`](Self::restart) simulate an outage and a recovery on the same port (the
/// restarted server starts empty, like a Redis that lost its memory);
/// [`freeze`](Self::freeze) and [`thaw`](Self::thaw) simulate a server that accepts
/// connections but does not answer.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    frozen: bool,
    /// Extra `redis-server` arguments, kept across restarts (cluster mode, say).
    args: Vec<String>,
}

impl RedisServer {
    /// Starts a server and waits until it answers `PING` and proves (through
    /// `INFO server`) that it is the process just started. Tries a few ports if one is
    /// taken. Blocks the calling thread for the few milliseconds a start takes.
    pub fn start() -> io::Result<Self> {
        Self::start_with(&[])
    }

    /// [`start`](Self::start) with extra `redis-server` arguments, which restarts keep.
    pub fn start_with(args: &[&str]) -> io::Result<Self> {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let dir = std::env::temp_dir().join(format!(
            "it-redis-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir)?;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            match spawn_verified(port, &dir, &args) {
                Ok(child) => {
                    return Ok(Self {
                        child: Some(child),
                        port,
                        dir,
                        frozen: false,
                        args,
                    });
                }
                Err(error) => last_error = Some(error),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last_error.unwrap_or_else(|| io::Error::other("no attempt was made")))
    }

    /// Starts a server on `port`, for a client that was given the address before the
    /// server existed (see [`unused_port`]).
    pub fn start_on(port: u16) -> io::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "it-redis-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir)?;
        let child = spawn_verified(port, &dir, &[])?;
        Ok(Self {
            child: Some(child),
            port,
            dir,
            frozen: false,
            args: Vec::new(),
        })
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port, which stays the same across [`restart`](Self::restart)s.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("redis-{}.log", self.port))
    }

    /// Sends one command over a fresh connection; the reply as text (simple, integer or
    /// bulk replies only).
    pub fn command(&self, args: &[&str]) -> io::Result<String> {
        resp_command(self.port, args)
    }

    /// The process id of the running server, `None` while stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the server process is running (it may be frozen).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (SIGKILL, like a crash) and waits for it to exit. Its data is
    /// lost. Does nothing if it is already stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.frozen = false;
    }

    /// Stops the server if it runs, then starts a new, empty one on the same port and
    /// waits until it answers (and is verified to be ours).
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        // The old process has exited, but give the port a few tries in case the kernel
        // is slow to release it.
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            match spawn_verified(self.port, &self.dir, &self.args) {
                Ok(child) => {
                    self.child = Some(child);
                    return Ok(());
                }
                Err(error) if Instant::now() >= deadline => return Err(error),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Suspends the server process (SIGSTOP): connections stay open but nothing is
    /// answered, which only a command timeout escapes. Undone by [`thaw`](Self::thaw),
    /// `stop` or drop.
    pub fn freeze(&mut self) -> io::Result<()> {
        self.signal("STOP")?;
        self.frozen = true;
        Ok(())
    }

    /// Resumes a [`freeze`](Self::freeze)d server (SIGCONT).
    pub fn thaw(&mut self) -> io::Result<()> {
        self.signal("CONT")?;
        self.frozen = false;
        Ok(())
    }

    fn signal(&self, signal: &str) -> io::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| io::Error::other("redis-server is not running"))?;
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("kill -{signal} {pid}: {status}")))
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL works on a stopped process too.
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port nothing listens on now (the OS picked it and it was released).
pub fn unused_port() -> io::Result<u16> {
    free_port()
}

/// A port that was free a moment ago (the OS picks it; a race with another process is
/// caught by `spawn_verified`).
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts `redis-server` on `port` and waits until the server answering there is this
/// child. Kills the child on any failure.
fn spawn_verified(port: u16, dir: &Path, args: &[String]) -> io::Result<Child> {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string()])
        .args(args)
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args(["--logfile", &format!("redis-{port}.log")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    match wait_until_ours(&mut child, port, dir) {
        Ok(()) => Ok(child),
        Err(error) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(error)
        }
    }
}

fn wait_until_ours(child: &mut Child, port: u16, dir: &Path) -> io::Result<()> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            let log =
                std::fs::read_to_string(dir.join(format!("redis-{port}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            return Err(io::Error::other(format!(
                "redis-server on port {port} exited with {status}: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )));
        }
        if let Ok(reply) = resp_command(port, &["PING"])
            && reply == "PONG"
        {
            let info = resp_command(port, &["INFO", "server"])?;
            let pid = info
                .lines()
                .find_map(|line| line.strip_prefix("process_id:"))
                .and_then(|pid| pid.trim().parse::<u32>().ok());
            return if pid == Some(child.id()) {
                Ok(())
            } else {
                Err(io::Error::other(format!(
                    "port {port} is answered by another Redis (process {pid:?}, not {})",
                    child.id()
                )))
            };
        }
        if Instant::now() >= deadline {
            return Err(io::Error::other(format!(
                "redis-server on port {port} did not answer within {STARTUP_TIMEOUT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends one command over a fresh connection and returns a simple, integer or bulk
/// reply as text. Just enough RESP to check a server before any client library is
/// involved.
pub(crate) fn resp_command(port: u16, args: &[&str]) -> io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at_checked(1).unwrap_or(("", ""));
    match kind {
        "+" | ":" => Ok(rest.to_owned()),
        "-" => Err(io::Error::other(format!("redis error: {rest}"))),
        "$" => {
            let len: usize = rest
                .parse()
                .map_err(|_| io::Error::other(format!("bad bulk length {rest:?}")))?;
            let mut body = vec![0; len + 2];
            reader.read_exact(&mut body)?;
            body.truncate(len);
            String::from_utf8(body).map_err(io::Error::other)
        }
        _ => Err(io::Error::other(format!("unexpected reply {line:?}"))),
    }
}

/// A Redis for `test_name`: `(url, guard)`. Keep the guard alive as long as the URL is
/// used.
///
/// - `TEST_REDIS_URL` set: that server, shared with others, so the caller must keep to
///   its own [`unique_prefix`](crate::unique_prefix); the guard is `None`.
/// - otherwise, `redis-server` on `PATH`: a private [`RedisServer`], returned as the
///   guard.
/// - otherwise: `None` after a loud "SKIPPED" notice, or a panic when `CI=true`.
///
/// Panics if a Redis should be available but cannot be started or reached.
pub async fn redis_url_or_skip(test_name: &str) -> Option<(String, Option<RedisServer>)> {
    if let Ok(url) = std::env::var(TEST_REDIS_URL) {
        if let Err(error) = redis_client(&url).await {
            panic!("{TEST_REDIS_URL}={url} does not answer: {error}");
        }
        return Some((url, None));
    }
    if find_on_path("redis-server").is_none() {
        return skip(
            test_name,
            "no Redis: set TEST_REDIS_URL or put redis-server on PATH",
        );
    }
    let server = redis_server_or_skip(test_name).await?;
    Some((server.url(), Some(server)))
}

/// A private [`RedisServer`] for `test_name`, whatever `TEST_REDIS_URL` says (tests that
/// stop or freeze their Redis need one of their own). `None` after a loud "SKIPPED"
/// notice when `redis-server` is not on `PATH` (a panic when `CI=true`).
///
/// Panics if `redis-server` exists but cannot be started.
pub async fn redis_server_or_skip(test_name: &str) -> Option<RedisServer> {
    if find_on_path("redis-server").is_none() {
        return skip(
            test_name,
            "no redis-server on PATH (this test stops its Redis, so TEST_REDIS_URL cannot stand in)",
        );
    }
    let started = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .expect("the start of redis-server panicked");
    match started {
        Ok(server) => Some(server),
        Err(error) => panic!("{test_name}: cannot start a private redis-server: {error}"),
    }
}

/// A connected `fred` client for looking at (or tampering with) what a test stored.
/// Reconnects, and fails commands after one second instead of hanging.
pub async fn redis_client(url: &str) -> Result<fred::prelude::Client, fred::error::Error> {
    let client = Builder::from_config(Config::from_url(url)?)
        .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(1))
        .with_connection_config(|c| c.connection_timeout = Duration::from_secs(1))
        .set_policy(ReconnectPolicy::new_constant(0, 50))
        .build()?;
    client.init().await?;
    Ok(client)
}

/// A [`CacheService`](cache_service::CacheService) over the Redis at `url` with its keys
/// under `prefix` and default settings otherwise; panics if Redis does not answer.
pub async fn redis_cache(url: &str, prefix: impl Into<String>) -> cache_service::CacheService {
    cache_service::CacheService::connect_redis(
        &cache_service::RedisConfig::new(url),
        cache_service::CacheConfig::with_prefix(prefix),
    )
    .await
    .expect("Redis connects")
}

/// Deletes every key that starts with `prefix` and returns how many there were: the
/// cleanup of a test that ran on a shared Redis (`TEST_REDIS_URL`). Uses `SCAN`, which is
/// fine in a test and is exactly what the cache itself must never do.
pub async fn delete_keys_with_prefix(
    client: &fred::prelude::Client,
    prefix: &str,
) -> Result<usize, fred::error::Error> {
    use fred::prelude::KeysInterface;
    use futures::TryStreamExt;

    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('*');
    let keys: Vec<fred::types::Key> = client
        .scan_buffered(pattern, Some(1_000), None)
        .try_collect()
        .await?;
    for chunk in keys.chunks(500) {
        let _: i64 = client.del(chunk.to_vec()).await?;
    }
    Ok(keys.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A private server for a self-test, or `None` after a loud skip.
    fn self_test_server() -> Option<RedisServer> {
        if find_on_path("redis-server").is_none() {
            return skip("harness self-test", "redis-server is not on PATH");
        }
        Some(RedisServer::start().expect("redis-server starts"))
    }

    #[test]
    fn a_private_redis_answers_on_its_port_and_comes_back_on_the_same_port() {
        let Some(mut server) = self_test_server() else {
            return;
        };
        let port = server.port();
        let first_pid = server.pid().expect("running");
        assert_eq!(resp_command(port, &["PING"]).expect("answers"), "PONG");
        assert_eq!(
            resp_command(port, &["SET", "k", "v"]).expect("SET works"),
            "OK"
        );

        server.stop();
        assert!(
            resp_command(port, &["PING"]).is_err(),
            "a stopped server is gone"
        );

        server.restart().expect("restarts");
        assert_eq!(server.port(), port, "a restart keeps the port");
        assert_ne!(server.pid(), Some(first_pid), "a restart is a new process");
        assert_eq!(
            resp_command(port, &["EXISTS", "k"]).expect("answers"),
            "0",
            "a restarted server starts empty"
        );

        let dir = server.dir.clone();
        drop(server);
        assert!(resp_command(port, &["PING"]).is_err(), "dropping kills it");
        assert!(!dir.exists(), "dropping removes its directory");
    }

    #[test]
    fn a_frozen_redis_accepts_connections_but_does_not_answer_until_thawed() {
        let Some(mut server) = self_test_server() else {
            return;
        };
        server.freeze().expect("freezes");
        let mut stream = TcpStream::connect(("127.0.0.1", server.port())).expect("connects");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout set");
        stream.write_all(b"*1\r\n$4\r\nPING\r\n").expect("writes");
        let mut buf = [0u8; 16];
        assert!(
            stream.read(&mut buf).is_err(),
            "a frozen server does not answer"
        );
        server.thaw().expect("thaws");
        let mut reply = String::new();
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout set");
        BufReader::new(stream)
            .read_line(&mut reply)
            .expect("a thawed server answers");
        assert_eq!(reply, "+PONG\r\n");
    }

    #[tokio::test]
    async fn deleting_by_prefix_leaves_other_keys_alone() {
        use fred::prelude::KeysInterface;
        let Some(server) = redis_server_or_skip("harness self-test").await else {
            return;
        };
        let client = redis_client(&server.url()).await.expect("connects");
        for key in ["mine:1", "mine:{2}", "mine_too:3", "theirs:1"] {
            let _: () = client.set(key, "v", None, None, false).await.expect("SET");
        }

        let deleted = delete_keys_with_prefix(&client, "mine")
            .await
            .expect("deletes");

        assert_eq!(deleted, 3);
        let left: i64 = client
            .exists(vec!["mine:1", "mine:{2}", "mine_too:3", "theirs:1"])
            .await
            .expect("EXISTS");
        assert_eq!(left, 1, "only theirs:1 is left");
    }
}
