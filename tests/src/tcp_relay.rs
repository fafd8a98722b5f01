//! A TCP forwarder that a test can freeze or cut, to partition one client from Redis.
//!
//! [`RedisServer::freeze`](crate::RedisServer::freeze) and
//! [`stop`](crate::RedisServer::stop) act on the server, so every client sees the outage.
//! A real server cannot, on demand, go silent for one client only while it keeps
//! answering the others, nor drop that client's connections: point one process at a
//! [`TcpRelay`] in front of the server and the others at the server itself.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Open,
    Frozen,
    Cut,
}

/// The relay's state: connections opened before the last [`TcpRelay::cut`] (an older
/// `epoch`) are closed even if a `thaw` followed before they noticed.
#[derive(Debug, Clone, Copy)]
struct State {
    mode: Mode,
    epoch: u64,
}

/// A TCP forwarder on `127.0.0.1:{random port}` to `upstream` that a test can freeze.
/// Dropping it closes the listener and every connection.
#[derive(Debug)]
pub struct TcpRelay {
    port: u16,
    state: watch::Sender<State>,
    accept: JoinHandle<()>,
}

impl TcpRelay {
    /// Listens on a free port of 127.0.0.1; each accepted connection is forwarded to a new
    /// connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (state, receiver) = watch::channel(State {
            mode: Mode::Open,
            epoch: 0,
        });
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream, receiver.clone()));
            }
        });
        Ok(Self {
            port,
            state,
            accept,
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops forwarding in both directions on every connection, and forwards nothing on
    /// new ones (which are accepted): a network partition, the peer hangs, no reset.
    pub fn freeze(&self) {
        self.state.send_modify(|s| s.mode = Mode::Frozen);
    }

    /// Forwards again; bytes held while frozen are delivered.
    pub fn thaw(&self) {
        self.state.send_modify(|s| s.mode = Mode::Open);
    }

    /// Resets every open connection and resets new ones until [`thaw`](Self::thaw).
    pub fn cut(&self) {
        self.state.send_modify(|s| {
            s.mode = Mode::Cut;
            s.epoch += 1;
        });
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        // Dropping `state` (the sender) ends every connection task.
        self.accept.abort();
    }
}

fn aborted() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "relay cut or dropped")
}

/// Waits while frozen; `Err` once this connection is cut (or the relay dropped).
async fn wait_open(state: &mut watch::Receiver<State>, epoch: u64) -> io::Result<()> {
    match state
        .wait_for(|s| s.mode != Mode::Frozen || s.epoch != epoch)
        .await
    {
        Ok(s) if s.mode == Mode::Open && s.epoch == epoch => Ok(()),
        _ => Err(aborted()),
    }
}

/// Runs `op` once open; `None` if the state changed first (`op` did nothing: call again).
async fn when_open<T>(
    state: &mut watch::Receiver<State>,
    epoch: u64,
    op: impl Future<Output = io::Result<T>>,
) -> io::Result<Option<T>> {
    wait_open(state, epoch).await?;
    tokio::select! {
        biased;
        changed = state.changed() => changed.map(|()| None).map_err(|_| aborted()),
        done = op => done.map(Some),
    }
}

async fn relay(mut client: TcpStream, upstream: SocketAddr, mut state: watch::Receiver<State>) {
    let epoch = state.borrow().epoch;
    let mut upstream = match wait_open(&mut state, epoch).await {
        Ok(()) => TcpStream::connect(upstream).await.ok(),
        Err(_) => None,
    };
    if let Some(upstream) = upstream.as_mut() {
        let (client_read, client_write) = client.split();
        let (upstream_read, upstream_write) = upstream.split();
        let _ = tokio::try_join!(
            pump(client_read, upstream_write, state.clone(), epoch),
            pump(upstream_read, client_write, state, epoch),
        );
    }
    // A reset rather than a clean close: the peer sees an error, as on a dropped link.
    let _ = client.set_zero_linger();
    if let Some(upstream) = upstream {
        let _ = upstream.set_zero_linger();
    }
}

/// Copies one direction, holding bytes while frozen. `Ok` on a clean end of stream.
async fn pump(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    mut state: watch::Receiver<State>,
    epoch: u64,
) -> io::Result<()> {
    let mut buf = vec![0; 16 * 1024];
    loop {
        // `read` and `write` are cancel-safe: a change of state interrupts them losslessly.
        let Some(n) = when_open(&mut state, epoch, from.read(&mut buf)).await? else {
            continue;
        };
        if n == 0 {
            return to.shutdown().await;
        }
        let mut sent = 0;
        while sent < n {
            let written = when_open(&mut state, epoch, to.write(&buf[sent..n])).await?;
            sent += written.unwrap_or(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const WAIT: Duration = Duration::from_millis(200);

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = socket.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn connect(relay: &TcpRelay) -> TcpStream {
        let address = ("127.0.0.1", relay.port());
        TcpStream::connect(address).await.expect("connect")
    }

    async fn read4(client: &mut TcpStream) -> io::Result<[u8; 4]> {
        let mut buf = [0; 4];
        client.read_exact(&mut buf).await.map(|_| buf)
    }

    /// Asserts that nothing arrives within [`WAIT`].
    async fn assert_silent(client: &mut TcpStream) {
        assert!(tokio::time::timeout(WAIT, read4(client)).await.is_err());
    }

    /// Asserts that the connection ends (end of stream or reset) without data.
    async fn assert_ends(client: &mut TcpStream) {
        let read = tokio::time::timeout(Duration::from_secs(5), read4(client));
        assert!(read.await.expect("the connection must end").is_err());
    }

    #[tokio::test]
    async fn freeze_holds_bytes_thaw_delivers_them_cut_closes() {
        let relay = TcpRelay::start(echo_server().await).await.expect("start");
        assert_eq!(relay.url(), format!("redis://127.0.0.1:{}", relay.port()));
        let mut client = connect(&relay).await;
        client.write_all(b"ping").await.expect("write");
        assert_eq!(&read4(&mut client).await.expect("echo"), b"ping");

        relay.freeze();
        client.write_all(b"held").await.expect("write while frozen");
        assert_silent(&mut client).await;
        // A connection opened while frozen is accepted but forwards nothing.
        let mut late = connect(&relay).await;
        late.write_all(b"late").await.expect("write");
        assert_silent(&mut late).await;

        relay.thaw();
        assert_eq!(&read4(&mut client).await.expect("held bytes"), b"held");
        assert_eq!(&read4(&mut late).await.expect("held bytes"), b"late");

        relay.cut();
        assert_ends(&mut client).await;
        // While cut, new connections are reset at once.
        let mut refused = connect(&relay).await;
        let _ = refused.write_all(b"nope").await;
        assert_ends(&mut refused).await;

        relay.thaw();
        let mut again = connect(&relay).await;
        again.write_all(b"back").await.expect("write");
        assert_eq!(&read4(&mut again).await.expect("echo after thaw"), b"back");
    }
}
