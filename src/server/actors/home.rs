//! Which worker is an actor's home: all its clients and its place on a
//! runner live there, so their traffic never crosses cores.

use std::hash::{Hash, Hasher};

pub(crate) fn home_worker(name: &str, key: &[String], workers: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    key.hash(&mut h);
    (h.finish() % workers as u64) as usize
}
