//! The tracking task: (re)subscribes the tracking connection, applies pushes, and runs
//! the barrier rounds readers wait for.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fred::interfaces::TrackingInterface;
use fred::prelude::*;
use tokio::sync::broadcast;

use super::Shared;

/// The tracking task: (re)subscribes, applies pushes, runs barrier rounds.
pub(super) async fn track(shared: Arc<Shared>, client: Client, prefix: String) {
    // However this task ends (its runtime shutting down, a panic), no reader is left
    // waiting for a round that will not come, and L1 is not used again.
    let _dark_on_exit = DarkOnDrop(shared.clone());
    // Outside the tracked prefix: writing it sends no push.
    let marker = format!("{prefix}near-cache-marker");
    let mut pushes = client.invalidation_rx();
    let mut reconnects = client.reconnect_rx();
    drop(client.connect());
    let timeout = shared.command_timeout.max(Duration::from_millis(100));
    loop {
        shared.go_dark();
        let subscribed = tokio::time::timeout(timeout * 4, async {
            client.wait_for_connect().await?;
            client
                .start_tracking(prefix.as_str(), true, false, false, false)
                .await
        })
        .await;
        if !matches!(subscribed, Ok(Ok(()))) {
            tracing::debug!("near cache: tracking is not on yet; reads ask Redis");
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        // Events of the connection that was just made are not a loss.
        while reconnects.try_recv().is_ok() {}
        if !round(&shared, &client, &marker, &mut pushes, &reconnects, timeout).await {
            continue;
        }
        shared.ready.store(true, Ordering::Release);
        tracing::debug!("near cache: tracking on");
        // One timer for the whole loop: a sleep made anew on every turn would never
        // fire while rounds and pushes keep the loop busy.
        let mut report = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                biased;
                event = reconnects.recv() => match event {
                    Err(broadcast::error::RecvError::Closed) => {
                        shared.go_dark();
                        return;
                    }
                    // A new connection: pushes may have been lost in between.
                    _ => break,
                },
                () = shared.barrier.wake.notified() => {
                    if !round(&shared, &client, &marker, &mut pushes, &reconnects, timeout).await {
                        break;
                    }
                }
                pushed = pushes.recv(), if shared.apply_pushes_at_once.load(Ordering::Acquire) => {
                    if matches!(pushed, Err(broadcast::error::RecvError::Closed)) {
                        shared.go_dark();
                        return;
                    }
                    shared.apply(pushed);
                }
                _ = report.tick() => {
                    metrics::gauge!("cache_l1_entries").set(shared.l1.entry_count() as f64);
                }
            }
        }
        tracing::info!("near cache: tracking connection lost; reads ask Redis until it is back");
    }
}

struct DarkOnDrop(Arc<Shared>);

impl Drop for DarkOnDrop {
    fn drop(&mut self) {
        self.0.go_dark();
    }
}

/// One barrier round: a command on the tracking connection, then every push received
/// before its reply is applied.
///
/// The command asks whether `marker` exists rather than a plain `PING`: a `FLUSHALL`
/// tells tracking clients with a null push, which the client library does not pass on;
/// the marker's absence tells the same. Then L1 is flushed and the marker set again.
async fn round(
    shared: &Shared,
    client: &Client,
    marker: &str,
    pushes: &mut broadcast::Receiver<fred::types::client::Invalidation>,
    reconnects: &broadcast::Receiver<fred::types::config::Server>,
    timeout: Duration,
) -> bool {
    let barrier = &shared.barrier;
    let round = barrier.next_round.fetch_add(1, Ordering::SeqCst);
    let readers = barrier.waiting.swap(0, Ordering::Relaxed);
    let sent = shared.clock();
    let reply = tokio::time::timeout(timeout, client.exists::<i64, _>(marker)).await;
    // A reply over a new connection says nothing: tracking is not on there yet, and
    // pushes were lost in between (fred announces a connection before using it).
    let fail = || {
        shared.go_dark();
        barrier.fail(round);
        false
    };
    let exists = match reply {
        Ok(Ok(exists)) if reconnects.is_empty() => exists,
        _ => return fail(),
    };
    if exists == 0 {
        shared.flush();
        let set = tokio::time::timeout(
            timeout,
            client.set::<(), _, _>(marker, 1, None, None, false),
        )
        .await;
        if !matches!(set, Ok(Ok(()))) {
            return fail();
        }
    }
    loop {
        match pushes.try_recv() {
            Ok(invalidation) => shared.apply(Ok(invalidation)),
            Err(broadcast::error::TryRecvError::Empty) => break,
            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                shared.apply(Err(broadcast::error::RecvError::Lagged(n)));
            }
            Err(broadcast::error::TryRecvError::Closed) => return fail(),
        }
    }
    metrics::histogram!("cache_l1_barrier_reads").record(readers as f64);
    barrier.pass(round, sent);
    true
}
