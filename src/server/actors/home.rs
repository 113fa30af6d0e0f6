//! Which worker is an actor's home: all its clients and its place on a
//! runner live there, so their traffic never crosses cores.

use std::hash::{Hash, Hasher};

use crate::http::route::ActorPath;

pub(crate) fn home_worker(actor: &ActorPath, workers: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let (ns, name, key) = (&actor.ns, &actor.name, &actor.key);
    ns.hash(&mut h);
    name.hash(&mut h);
    key.hash(&mut h);
    (h.finish() % workers as u64) as usize
}
