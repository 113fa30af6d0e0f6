//! How many actors a runner runs, across every worker. A runner keeps one
//! tunnel to each worker, and each worker places actors on it; its
//! capacity is the runner's, so the count is shared: one atomic per runner,
//! touched when an actor is placed or leaves (never per message).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

pub(crate) struct RunnerLoad {
    placed: AtomicU32,
    /// What its latest hello declared, capped by `runners.max_actors_per_runner`.
    capacity: AtomicU32,
    /// What its latest hello declared.
    declared: AtomicU32,
}

impl RunnerLoad {
    pub fn new(capacity: u32) -> Self {
        RunnerLoad {
            placed: AtomicU32::new(0),
            capacity: AtomicU32::new(capacity),
            declared: AtomicU32::new(capacity),
        }
    }

    fn set_capacity(&self, declared: u32, max: u32) {
        self.declared.store(declared, Ordering::Relaxed);
        self.capacity.store(declared.min(max), Ordering::Relaxed);
    }

    pub fn placed(&self) -> u32 {
        self.placed.load(Ordering::Relaxed)
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
/// workers. Locked only when a tunnel connects and on a reload.
pub(crate) struct RunnerLoads {
    inner: Mutex<Loads>,
}

struct Loads {
    /// `runners.max_actors_per_runner`: the gateway's cap over what runners declare.
    max: u32,
    by_key: HashMap<(String, String), Weak<RunnerLoad>>,
}

impl Default for RunnerLoads {
    /// No cap.
    fn default() -> Self {
        RunnerLoads::new(u32::MAX)
    }
}

impl RunnerLoads {
    pub fn new(max_per_runner: u32) -> Self {
        let loads = Loads {
            max: max_per_runner,
            by_key: HashMap::new(),
        };
        RunnerLoads {
            inner: Mutex::new(loads),
        }
    }

    /// The load of runner `key` of `identity`, shared with its other
    /// tunnels; `declared` is the capacity its latest hello said.
    pub fn for_runner(&self, identity: &str, key: &str, declared: u32) -> Arc<RunnerLoad> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.by_key.retain(|_, load| load.strong_count() > 0);
        let id = (identity.to_owned(), key.to_owned());
        if let Some(load) = inner.by_key.get(&id).and_then(Weak::upgrade) {
            load.set_capacity(declared, inner.max);
            return load;
        }
        let load = Arc::new(RunnerLoad::new(declared));
        load.set_capacity(declared, inner.max);
        inner.by_key.insert(id, Arc::downgrade(&load));
        load
    }

    /// A new cap (a reload), for every connected runner at once: actors
    /// already placed past a lowered cap stay, and no new one goes there
    /// until the count is below it.
    pub fn set_max(&self, max: u32) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.max = max;
        for load in inner.by_key.values().filter_map(Weak::upgrade) {
            load.set_capacity(load.declared.load(Ordering::Relaxed), max);
        }
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
    fn the_cap_holds_over_what_runners_declare_and_a_reload_moves_it() {
        let loads = RunnerLoads::new(1);
        let a = loads.for_runner("id", "r", 5);
        assert!(a.try_reserve() && !a.try_reserve(), "capped at 1");
        loads.set_max(3);
        assert!(a.try_reserve() && a.try_reserve() && !a.try_reserve());
        loads.set_max(1);
        assert_eq!(a.placed(), 3, "placed actors stay");
        a.release();
        a.release();
        assert!(!a.has_room(), "none until below the new cap");
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
