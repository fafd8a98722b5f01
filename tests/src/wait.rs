//! Waiting in tests without fixed sleeps: polling a condition until it holds or a limit
//! passes, and ending a storm of concurrent writers and readers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// How often a condition is looked at again.
const POLL: Duration = Duration::from_millis(20);

/// Runs `check` until it returns `Ok`, and returns what it returned; panics with the
/// last `Err` (what was seen instead) once `limit` has passed.
pub async fn wait_until<T>(
    limit: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(seen) => assert!(Instant::now() < deadline, "after {limit:?}: {seen}"),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Runs `check` until it returns `true` or `limit` has passed; whether it did.
pub async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Ends a storm: waits for every writer, then tells the readers to stop (`done`) and
/// waits for them too.
pub async fn end_storm(
    writers: Vec<JoinHandle<()>>,
    done: &AtomicBool,
    readers: Vec<JoinHandle<()>>,
) {
    for writer in writers {
        writer.await.expect("writer");
    }
    done.store(true, Ordering::SeqCst);
    for reader in readers {
        reader.await.expect("reader");
    }
}
