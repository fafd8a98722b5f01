//! The real `api-server` executable as a child process: finding it, a command that
//! inherits none of the caller's settings, and a started server's address.
//!
//! `CARGO_BIN_EXE_api-server` only exists inside the `api-server` crate, so the binary
//! is looked up next to the test executable (`target/debug/api-server`, built by
//! `cargo build` or `cargo test --workspace`). Without it a test skips loudly (and
//! panics in CI).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::skip;

/// How long the server may take to start or to stop.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The `api-server` executable cargo built beside the running test (`<target
/// dir>/<profile>/api-server`, wherever `CARGO_TARGET_DIR` puts it: the test runs as
/// `<target dir>/<profile>/deps/<name>-<hash>`), if it exists.
pub fn api_server_binary() -> Option<PathBuf> {
    let name = format!("api-server{}", std::env::consts::EXE_SUFFIX);
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join(name);
    path.is_file().then_some(path)
}

/// The `api-server` executable for `test_name`, with a notice if it is older than its
/// sources; `None` after a loud "SKIPPED" notice when it was not built (a panic in CI).
pub fn api_server_or_skip(test_name: &str) -> Option<PathBuf> {
    let Some(path) = api_server_binary() else {
        return skip(
            test_name,
            "no api-server binary beside the tests; run `cargo build -p api-server` first",
        );
    };
    warn_if_stale(test_name, &path);
    Some(path)
}

/// Prints a notice when the binary is older than the sources it is built from.
fn warn_if_stale(test_name: &str, binary: &Path) {
    fn newest(dir: &Path) -> Option<SystemTime> {
        std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .filter_map(|entry| {
                let meta = entry.metadata().ok()?;
                if meta.is_dir() {
                    newest(&entry.path())
                } else {
                    meta.modified().ok()
                }
            })
            .max()
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let sources = ["api-server/src", "product-service/src", "cache-service/src"]
        .iter()
        .filter_map(|dir| newest(&root.join(dir)))
        .max();
    let built = std::fs::metadata(binary).and_then(|m| m.modified()).ok();
    if let (Some(sources), Some(built)) = (sources, built)
        && sources > built
    {
        eprintln!(
            "NOTE {test_name}: {} is older than the sources; run `cargo build -p api-server`",
            binary.display()
        );
    }
}

/// A command for the binary with none of its settings inherited: every variable the
/// binary reads is removed (the list comes from its command-line definition, so it
/// cannot drift), logs are plain text at `info`, and the child dies with its handle.
pub fn api_server_command(binary: &Path) -> Command {
    let mut command = Command::new(binary);
    for name in api_server::config::setting_variables() {
        command.env_remove(name);
    }
    command
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// The lines of `stream`, read by a task until it ends. The task reads on after the
/// receiver is dropped: a full pipe would block the child, and a closed one would fail
/// its writes.
pub fn forward_lines(
    stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            // A send fails only once nobody listens: the line is dropped.
            let _ = tx.send(line);
        }
    });
    rx
}

/// A server started by [`start_server`].
#[derive(Debug)]
pub struct StartedServer {
    /// The process (killed when dropped).
    pub child: Child,
    /// `http://host:port`, from its "serving" log line.
    pub address: String,
    /// Its stderr lines up to and including the "serving" line.
    pub log: Vec<String>,
    /// Its stderr lines after that.
    pub stderr: mpsc::UnboundedReceiver<String>,
    /// Its stdout lines, if the command piped stdout.
    pub stdout: Option<mpsc::UnboundedReceiver<String>>,
}

/// Spawns `command` (an [`api_server_command`] that serves, with `BIND` at port 0, say)
/// with stderr piped, and waits up to [`PATIENCE`] for its "serving" line. Panics with
/// the log if the server does not get there.
pub async fn start_server(mut command: Command) -> StartedServer {
    let mut child = command
        .stderr(Stdio::piped())
        .spawn()
        .expect("api-server starts");
    let stdout = child.stdout.take().map(forward_lines);
    let mut stderr = forward_lines(child.stderr.take().expect("stderr is piped"));
    let mut log = Vec::new();
    let address = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = stderr.recv().await {
            log.push(line.clone());
            if line.contains("serving")
                && let Some(start) = line.find("http://")
            {
                let rest = &line[start..];
                return Some(rest[..rest.find("/docs").unwrap_or(rest.len())].to_owned());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_else(|| panic!("no \"serving\" line; the log was:\n{}", log.join("\n")));
    StartedServer {
        child,
        address,
        log,
        stderr,
        stdout,
    }
}

/// Creates a product on the server at `base` (`http://host:port`) with `token`; returns
/// the created product's JSON. Panics if the request or its JSON fails.
pub async fn create_product(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    body: &serde_json::Value,
) -> serde_json::Value {
    http.post(format!("{base}/api/products"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("POST")
        .json()
        .await
        .expect("JSON")
}

/// Sends `signal` (`TERM`, `KILL`, …) to `child` with the `kill` command.
pub async fn send_signal(child: &Child, signal: &str) {
    let pid = child.id().expect("still running");
    let sent = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .await
        .expect("kill runs");
    assert!(sent.success(), "kill -{signal} {pid}");
}
