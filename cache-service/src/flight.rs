//! Single-flight: concurrent misses of one key in this process share one load.
//!
//! The first reader of a key becomes the leader and loads; later readers follow and wait
//! for its outcome. The leader shares the entry only when its fill was stored: the lease
//! was taken after the flight began, and a stored fill proves that no invalidation of the
//! key came between the lease and the fill, so no follower can have joined after an
//! invalidation that the value predates. Otherwise it shares nothing and followers read
//! again.
//! [`Flights::retire`] forgets a key's flight when this process invalidates the key, so
//! readers that start after the invalidation never join a load that began before it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::watch;

/// What a leader hands its followers: the stored entry, or `None` ("read again").
pub(crate) type Shared = Option<Bytes>;

/// Per key: the flight's id and the channel its outcome is sent on.
type FlightMap = HashMap<String, (u64, watch::Sender<Option<Shared>>)>;

#[derive(Debug, Default)]
pub(crate) struct Flights {
    in_flight: Mutex<FlightMap>,
    next_id: AtomicU64,
}

pub(crate) enum Role<'a> {
    Leader(Leader<'a>),
    Follower(watch::Receiver<Option<Shared>>),
}

/// Held by the reader that loads. Dropping it without [`Leader::finish`] (the loader
/// panicked or the request was cancelled) releases the followers, who read again.
pub(crate) struct Leader<'a> {
    flights: &'a Flights,
    key: String,
    id: u64,
    tx: watch::Sender<Option<Shared>>,
}

impl Flights {
    fn lock(&self) -> std::sync::MutexGuard<'_, FlightMap> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn join(&self, key: &str) -> Role<'_> {
        let mut map = self.lock();
        if let Some((_, tx)) = map.get(key) {
            return Role::Follower(tx.subscribe());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, _) = watch::channel(None);
        map.insert(key.to_owned(), (id, tx.clone()));
        Role::Leader(Leader {
            flights: self,
            key: key.to_owned(),
            id,
            tx,
        })
    }

    pub(crate) fn retire(&self, key: &str) {
        self.lock().remove(key);
    }

    fn remove_if_current(&self, key: &str, id: u64) {
        let mut map = self.lock();
        if map.get(key).is_some_and(|(current, _)| *current == id) {
            map.remove(key);
        }
    }
}

impl Leader<'_> {
    pub(crate) fn finish(self, shared: Shared) {
        self.tx.send_replace(Some(shared));
        // Drop removes the map entry.
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        self.flights.remove_if_current(&self.key, self.id);
    }
}

/// Waits for the leader; `None` when it shared nothing or went away.
pub(crate) async fn follow(mut rx: watch::Receiver<Option<Shared>>) -> Shared {
    loop {
        if let Some(shared) = rx.borrow_and_update().clone() {
            return shared;
        }
        if rx.changed().await.is_err() {
            return rx.borrow().clone().flatten();
        }
    }
}
