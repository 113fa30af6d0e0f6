//! Which worker is an actor's home: all its clients and its place on a
//! runner live there, so their traffic never crosses cores.
//!
//! The hash is FNV-1a over the namespace, name and key, each part ended by
//! a byte no UTF-8 text holds: fixed by this code, not by the toolchain
//! (std's `DefaultHasher` may change between Rust releases), because an
//! upgrade's new binary must find every actor on the worker the old one
//! kept it on (docs/ARCHITECTURE.md, "Upgrade").

use crate::http::route::ActorPath;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// Ends each part, so that ("ab", "c") and ("a", "bc") differ.
const END: u8 = 0xff;

pub(crate) fn home_worker(actor: &ActorPath, workers: usize) -> usize {
    let parts = [actor.ns.as_str(), actor.name.as_str()]
        .into_iter()
        .chain(actor.key.iter().map(String::as_str));
    let mut h = FNV_OFFSET;
    for part in parts {
        for &b in part.as_bytes().iter().chain(&[END]) {
            h = (h ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        }
    }
    (h % workers.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(ns: &str, name: &str, key: &[&str]) -> ActorPath {
        ActorPath {
            ns: ns.into(),
            name: name.into(),
            key: key.iter().map(|k| k.to_string()).collect(),
            query: None,
        }
    }

    /// Pinned: a change here re-homes every actor between two builds, and
    /// an upgrade between them would lose its connections' ids.
    #[test]
    fn homes_do_not_change_between_builds() {
        let homes: Vec<usize> = ["a", "b", "lobby", "room/1"]
            .iter()
            .map(|k| home_worker(&path("default", "chat", &[k]), 7))
            .collect();
        assert_eq!(homes, [3, 5, 6, 5]);
    }

    #[test]
    fn parts_do_not_run_into_each_other() {
        let a = path("default", "chat", &["ab", "c"]);
        let b = path("default", "chat", &["a", "bc"]);
        let spread: Vec<bool> = (2..64)
            .map(|w| home_worker(&a, w) != home_worker(&b, w))
            .collect();
        assert!(spread.iter().any(|d| *d));
    }
}
