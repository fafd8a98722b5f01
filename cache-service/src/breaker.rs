//! Circuit breaker of the read path.
//!
//! After a backend error, reads skip the cache for a cool-down and go to the loader
//! instead of waiting on a sick backend for every request. With the resync gate on
//! reads stay off the cache after the cool-down too, until the owner of the owed
//! invalidations (the [`Coherence`](crate::Coherence) relay) has applied them and resumes
//! reads: a backend that missed invalidations during an outage never serves what they
//! would have removed. The breaker's vocabulary is private to the crate: only the relay
//! drives it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct Breaker {
    started: Instant,
    cooldown: Duration,
    /// Milliseconds since `started` until which reads skip the cache.
    open_until: AtomicU64,
    gate: AtomicBool,
    /// Failures so far; reads wait (with the gate on) until a replay started after the
    /// last of them has finished.
    trips: AtomicU64,
    resynced_through: AtomicU64,
}

impl Breaker {
    pub(crate) fn new(cooldown: Duration) -> Self {
        Self {
            started: Instant::now(),
            cooldown,
            open_until: AtomicU64::new(0),
            gate: AtomicBool::new(false),
            trips: AtomicU64::new(0),
            resynced_through: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Whether reads may use the cache now.
    pub(crate) fn allows_reads(&self) -> bool {
        self.now_ms() >= self.open_until.load(Ordering::Acquire) && !self.resync_needed()
    }

    /// Records a backend failure.
    pub(crate) fn trip(&self) {
        let until = self.now_ms() + self.cooldown.as_millis() as u64;
        self.open_until.fetch_max(until, Ordering::AcqRel);
        self.trips.fetch_add(1, Ordering::AcqRel);
    }

    /// Distrusts the backend without a cool-down: with the gate on, reads wait for the
    /// next replay (after a reconnection, or before the first check of its identity).
    pub(crate) fn suspect(&self) {
        self.trips.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn set_gate(&self, on: bool) {
        // Failures before the gate was set are not owed to anyone.
        self.resynced_through
            .fetch_max(self.trips.load(Ordering::Acquire), Ordering::AcqRel);
        self.gate.store(on, Ordering::Release);
    }

    pub(crate) fn resync_needed(&self) -> bool {
        self.gate.load(Ordering::Acquire)
            && self.trips.load(Ordering::Acquire) > self.resynced_through.load(Ordering::Acquire)
    }

    /// A mark to take before a replay starts.
    pub(crate) fn mark(&self) -> u64 {
        self.trips.load(Ordering::Acquire)
    }

    /// The replay that started at `mark` finished: failures up to `mark` are resolved.
    /// A failure after `mark` keeps reads held until a later replay.
    /// With no failure since `mark`, the cool-down ends too: the replay has just shown
    /// the backend answering, so reads need not wait out a timer.
    pub(crate) fn resume(&self, mark: u64) {
        self.resynced_through.fetch_max(mark, Ordering::AcqRel);
        if self.trips.load(Ordering::Acquire) == mark {
            self.open_until.store(0, Ordering::Release);
        }
    }

    pub(crate) fn gate_on(&self) -> bool {
        self.gate.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trip_closes_reads_for_the_cooldown() {
        let breaker = Breaker::new(Duration::from_millis(30));
        assert!(breaker.allows_reads());
        breaker.trip();
        assert!(!breaker.allows_reads());
        std::thread::sleep(Duration::from_millis(40));
        assert!(
            breaker.allows_reads(),
            "without the gate, reads resume after the cool-down"
        );
    }

    #[test]
    fn with_the_gate_reads_wait_for_resume() {
        let breaker = Breaker::new(Duration::from_millis(1));
        breaker.set_gate(true);
        breaker.trip();
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            !breaker.allows_reads(),
            "the owed invalidations are not applied yet"
        );
        assert!(breaker.resync_needed());
        let mark = breaker.mark();
        breaker.trip(); // a failure during the replay
        breaker.resume(mark);
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            !breaker.allows_reads(),
            "a failure after the mark is still owed"
        );
        breaker.resume(breaker.mark());
        assert!(breaker.allows_reads());
    }
}
