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

/// The breaker, one state per shard of the backend (a Redis Cluster hash slot; one shard
/// elsewhere): a failing master takes only its own slots off the cache.
#[derive(Debug)]
pub(crate) struct Breaker {
    started: Instant,
    cooldown: Duration,
    gate: AtomicBool,
    shards: Box<[Shard]>,
}

#[derive(Debug, Default)]
struct Shard {
    /// Milliseconds since `started` until which reads skip the cache.
    open_until: AtomicU64,
    /// Failures so far; reads wait (with the gate on) until a replay started after the
    /// last of them has finished.
    trips: AtomicU64,
    resynced_through: AtomicU64,
}

impl Shard {
    fn resync_needed(&self) -> bool {
        self.trips.load(Ordering::Acquire) > self.resynced_through.load(Ordering::Acquire)
    }
}

/// Each shard's failure count when a replay started (see [`Breaker::mark`]).
#[derive(Debug)]
pub(crate) struct Marks(Vec<u64>);

impl Breaker {
    pub(crate) fn new(cooldown: Duration, shards: usize) -> Self {
        Self {
            started: Instant::now(),
            cooldown,
            gate: AtomicBool::new(false),
            shards: (0..shards.max(1)).map(|_| Shard::default()).collect(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn shard(&self, shard: usize) -> &Shard {
        &self.shards[shard % self.shards.len()]
    }

    /// Whether reads of `shard` may use the cache now.
    pub(crate) fn allows_reads(&self, shard: usize) -> bool {
        self.shard_allows(self.shard(shard), self.now_ms(), self.gate_on())
    }

    /// Whether reads of every shard may use the cache now (one clock read for all).
    pub(crate) fn allows_all_reads(&self) -> bool {
        let (now, gate) = (self.now_ms(), self.gate_on());
        self.shards
            .iter()
            .all(|state| self.shard_allows(state, now, gate))
    }

    fn shard_allows(&self, state: &Shard, now_ms: u64, gate: bool) -> bool {
        now_ms >= state.open_until.load(Ordering::Acquire) && !(gate && state.resync_needed())
    }

    /// Records a backend failure on `shard`.
    pub(crate) fn trip(&self, shard: usize) {
        let state = self.shard(shard);
        let until = self.now_ms() + self.cooldown.as_millis() as u64;
        state.open_until.fetch_max(until, Ordering::AcqRel);
        state.trips.fetch_add(1, Ordering::AcqRel);
    }

    /// Distrusts every shard without a cool-down: with the gate on, reads wait for the
    /// next replay (after a reconnection, or before the first check of its identity).
    pub(crate) fn suspect(&self) {
        for state in &self.shards {
            state.trips.fetch_add(1, Ordering::AcqRel);
        }
    }

    pub(crate) fn set_gate(&self, on: bool) {
        // Failures before the gate was set are not owed to anyone.
        for state in &self.shards {
            state
                .resynced_through
                .fetch_max(state.trips.load(Ordering::Acquire), Ordering::AcqRel);
        }
        self.gate.store(on, Ordering::Release);
    }

    /// Whether some shard had an outage whose owed invalidations are not replayed yet.
    pub(crate) fn resync_needed(&self) -> bool {
        self.gate_on() && self.shards.iter().any(Shard::resync_needed)
    }

    /// Whether `shard` had an outage whose owed invalidations are not replayed yet.
    pub(crate) fn shard_needs_resync(&self, shard: usize) -> bool {
        self.gate_on() && self.shard(shard).resync_needed()
    }

    /// A mark to take before a replay starts.
    pub(crate) fn mark(&self) -> Marks {
        Marks(
            self.shards
                .iter()
                .map(|state| state.trips.load(Ordering::Acquire))
                .collect(),
        )
    }

    /// The replay that started at `marks` finished, and nothing it could not apply
    /// touches a shard for which `held` says true: failures of the other shards up to
    /// their mark are resolved. A failure after the mark keeps a shard's reads held
    /// until a later replay. With no failure since its mark, a shard's cool-down ends
    /// too: the replay has just shown the backend answering, so reads need not wait out
    /// a timer.
    pub(crate) fn resume(&self, marks: &Marks, held: impl Fn(usize) -> bool) {
        for (shard, (state, mark)) in self.shards.iter().zip(&marks.0).enumerate() {
            if held(shard) {
                continue;
            }
            state.resynced_through.fetch_max(*mark, Ordering::AcqRel);
            if state.trips.load(Ordering::Acquire) == *mark {
                state.open_until.store(0, Ordering::Release);
            }
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
        let breaker = Breaker::new(Duration::from_millis(30), 1);
        assert!(breaker.allows_reads(0));
        breaker.trip(0);
        assert!(!breaker.allows_reads(0));
        std::thread::sleep(Duration::from_millis(40));
        assert!(
            breaker.allows_reads(0),
            "without the gate, reads resume after the cool-down"
        );
    }

    #[test]
    fn with_the_gate_reads_wait_for_resume() {
        let breaker = Breaker::new(Duration::from_millis(1), 1);
        breaker.set_gate(true);
        breaker.trip(0);
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            !breaker.allows_reads(0),
            "the owed invalidations are not applied yet"
        );
        assert!(breaker.resync_needed());
        let mark = breaker.mark();
        breaker.trip(0); // a failure during the replay
        breaker.resume(&mark, |_| false);
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            !breaker.allows_reads(0),
            "a failure after the mark is still owed"
        );
        breaker.resume(&breaker.mark(), |_| false);
        assert!(breaker.allows_reads(0));
    }

    #[test]
    fn a_failing_shard_holds_only_its_own_reads() {
        let breaker = Breaker::new(Duration::from_secs(60), 3);
        breaker.set_gate(true);
        breaker.trip(1);
        assert!(breaker.allows_reads(0) && breaker.allows_reads(2));
        assert!(!breaker.allows_reads(1) && !breaker.allows_all_reads());
        breaker.trip(2);
        let mark = breaker.mark();
        // Shard 1 still owes an invalidation after the replay; shard 2 does not.
        breaker.resume(&mark, |shard| shard == 1);
        assert!(breaker.allows_reads(2), "shard 2 resumed, cool-down ended");
        assert!(!breaker.allows_reads(1), "shard 1 still owes");
        breaker.resume(&breaker.mark(), |_| false);
        assert!(breaker.allows_all_reads());
    }
}
