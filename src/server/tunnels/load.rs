//! How many actors a runner runs, across every worker. A runner keeps one
//! tunnel to each worker, and each worker places actors on it; its
//! capacity is the runner's, so the count is shared: one atomic per runner,
//! touched when an actor is placed or leaves (never per message).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

pub(crate) struct RunnerLoad {
    placed: AtomicU32,
    capacity: AtomicU32,
}

impl RunnerLoad {
    pub fn new(capacity: u32) -> Self {
        RunnerLoad {
            placed: AtomicU32::new(0),
            capacity: AtomicU32::new(capacity),
        }
    }

    pub fn placed(&self) -> u32 {
        self.placed.load(Ordering::Relaxed)
    }

    pub fn capacity(&self) -> u32 {
        self.capacity.load(Ordering::Relaxed)
    }

    pub fn has_room(&self) -> bool {
        self.placed() < self.capacity.load(Ordering::Relaxed)
    }

    /// Takes one slot if the runner has room (two workers cannot both take
    /// the last one).
    pub(super) fn try_reserve(&self) -> bool {
        let cap = self.capacity.load(Ordering::Relaxed);
        self.placed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p < cap).then_some(p + 1)
            })
            .is_ok()
    }

    pub(super) fn release(&self) {
        let _ = self
            .placed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| p.checked_sub(1));
    }
}

/// Every connected runner's load, by identity and runner key (so a runner
/// of another identity naming the same key cannot touch it), shared by all
/// workers. Locked only when a tunnel connects.
#[derive(Default)]
pub(crate) struct RunnerLoads {
    by_key: Mutex<HashMap<(String, String), Weak<RunnerLoad>>>,
}

impl RunnerLoads {
    /// The load of runner `key` of `identity`, shared with its other
    /// tunnels; `capacity` is what its latest hello said.
    pub fn for_runner(&self, identity: &str, key: &str, capacity: u32) -> Arc<RunnerLoad> {
        let mut by_key = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        by_key.retain(|_, load| load.strong_count() > 0);
        let id = (identity.to_owned(), key.to_owned());
        if let Some(load) = by_key.get(&id).and_then(Weak::upgrade) {
            load.capacity.store(capacity, Ordering::Relaxed);
            return load;
        }
        let load = Arc::new(RunnerLoad::new(capacity));
        by_key.insert(id, Arc::downgrade(&load));
        load
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runners_tunnels_share_one_count_up_to_its_capacity() {
        let loads = RunnerLoads::default();
        let a = loads.for_runner("id", "r", 2);
        let b = loads.for_runner("id", "r", 2);
        assert!(a.try_reserve() && b.try_reserve());
        assert!(!a.try_reserve() && !b.try_reserve(), "the runner is full");
        b.release();
        assert!(a.try_reserve());
        assert_eq!(loads.for_runner("id", "other", 5).placed(), 0);
        assert_eq!(
            loads.for_runner("impostor", "r", 0).placed(),
            0,
            "another identity's own"
        );
        a.release();
        assert!(a.has_room(), "and the runner's capacity untouched");
    }

    #[test]
    fn a_runner_gone_leaves_nothing_behind() {
        let loads = RunnerLoads::default();
        let load = loads.for_runner("id", "r", 2);
        assert!(load.try_reserve());
        drop(load);
        assert_eq!(loads.for_runner("id", "r", 2).placed(), 0);
    }
}
