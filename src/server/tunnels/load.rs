//! How many actors a runner runs, across every worker. A runner keeps one
//! tunnel to each worker, and each worker places actors on it; its
//! capacity is the runner's, so the count is shared: one atomic per runner,
//! touched when an actor is placed or leaves (never per message).
//!
//! The same table, kept by runner, tells `/metrics` how many runners each
//! pool has (runners, not tunnels: a runner counts once however many
//! workers it reached).

use std::collections::{BTreeMap, HashMap};
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

/// A runner's namespace and pool.
pub(crate) type PoolKey = (String, String);

/// A connected runner: its load (alive while one of its tunnels is) and
/// the pool its latest hello named.
struct Entry {
    load: Weak<RunnerLoad>,
    pool: PoolKey,
}

/// Every connected runner's load, by identity and runner key (so a runner
/// of another identity naming the same key cannot touch it), shared by all
/// workers. Locked only when a tunnel connects, on a reload and by `/metrics`.
pub(crate) struct RunnerLoads {
    inner: Mutex<Loads>,
}

struct Loads {
    /// `runners.max_actors_per_runner`: the gateway's cap over what runners declare.
    max: u32,
    by_key: HashMap<(String, String), Entry>,
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
    /// tunnels; `pool` and `declared` (its capacity) are what its latest
    /// hello said.
    pub fn for_runner(
        &self,
        identity: &str,
        key: &str,
        pool: PoolKey,
        declared: u32,
    ) -> Arc<RunnerLoad> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let max = cap_of(&pool, inner.max);
        inner.by_key.retain(|_, e| e.load.strong_count() > 0);
        let id = (identity.to_owned(), key.to_owned());
        if let Some(entry) = inner.by_key.get_mut(&id) {
            if let Some(load) = entry.load.upgrade() {
                load.set_capacity(declared, max);
                entry.pool = pool;
                return load;
            }
        }
        let load = Arc::new(RunnerLoad::new(declared));
        load.set_capacity(declared, max);
        let entry = Entry {
            load: Arc::downgrade(&load),
            pool,
        };
        inner.by_key.insert(id, entry);
        load
    }

    /// How many runners have a tunnel up, by namespace and pool.
    pub fn runners_by_pool(&self) -> BTreeMap<PoolKey, u64> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut pools = BTreeMap::new();
        for entry in inner.by_key.values().filter(|e| e.load.strong_count() > 0) {
            *pools.entry(entry.pool.clone()).or_default() += 1;
        }
        pools
    }

    /// A new cap (a reload), for every connected runner at once: actors
    /// already placed past a lowered cap stay, and no new one goes there
    /// until the count is below it.
    pub fn set_max(&self, max: u32) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.max = max;
        for entry in inner.by_key.values() {
            if let Some(load) = entry.load.upgrade() {
                let max = cap_of(&entry.pool, max);
                load.set_capacity(load.declared.load(Ordering::Relaxed), max);
            }
        }
    }
}

/// `runners.max_actors_per_runner` caps a runner; another node's tunnel
/// (`peer.rs`) is not one: it carries every actor that node owns.
fn cap_of(pool: &PoolKey, max: u32) -> u32 {
    match pool.0 == super::peer::PEER_NAMESPACE {
        true => u32::MAX,
        false => max,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str) -> PoolKey {
        ("default".into(), name.into())
    }

    #[test]
    fn a_runners_tunnels_share_one_count_up_to_its_capacity() {
        let loads = RunnerLoads::default();
        let a = loads.for_runner("id", "r", pool("p"), 2);
        let b = loads.for_runner("id", "r", pool("p"), 2);
        assert!(a.try_reserve() && b.try_reserve());
        assert!(!a.try_reserve() && !b.try_reserve(), "the runner is full");
        b.release();
        assert!(a.try_reserve());
        assert_eq!(loads.for_runner("id", "other", pool("p"), 5).placed(), 0);
        assert_eq!(
            loads.for_runner("impostor", "r", pool("p"), 0).placed(),
            0,
            "another identity's own"
        );
        a.release();
        assert!(a.has_room(), "and the runner's capacity untouched");
    }

    #[test]
    fn the_cap_holds_over_what_runners_declare_and_a_reload_moves_it() {
        let loads = RunnerLoads::new(1);
        let a = loads.for_runner("id", "r", pool("p"), 5);
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
        let load = loads.for_runner("id", "r", pool("p"), 2);
        assert!(load.try_reserve());
        drop(load);
        assert_eq!(loads.for_runner("id", "r", pool("p"), 2).placed(), 0);
    }

    #[test]
    fn runners_are_counted_once_per_pool_while_a_tunnel_is_up() {
        let loads = RunnerLoads::default();
        // Runner r1 has two tunnels (two workers), r2 one; r3 is gone.
        let r1 = [0, 1].map(|_| loads.for_runner("id", "r1", pool("a"), 1));
        let r2 = loads.for_runner("id", "r2", pool("b"), 1);
        drop(loads.for_runner("id", "r3", pool("a"), 1));
        let counts: Vec<_> = loads.runners_by_pool().into_iter().collect();
        assert_eq!(counts, [(pool("a"), 1), (pool("b"), 1)]);
        drop((r1, r2));
        assert!(loads.runners_by_pool().is_empty());
    }
}
