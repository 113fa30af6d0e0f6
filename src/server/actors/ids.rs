//! Ids of actor incarnations and client connections, unique across the
//! gateway: the worker index in the top 8 bits, a counter below.

use std::cell::Cell;

use crate::config::MAX_WORKERS;

const WORKER_BITS: u32 = 8;
const _: () = assert!(MAX_WORKERS == 1 << WORKER_BITS);

pub(super) struct Ids {
    worker: u64,
    next: Cell<u64>,
}

impl Ids {
    pub fn new(worker_id: usize) -> Self {
        assert!(
            worker_id < MAX_WORKERS,
            "config checks cap the worker count"
        );
        Ids {
            worker: (worker_id as u64) << (64 - WORKER_BITS),
            next: Cell::new(1),
        }
    }

    pub fn fresh(&self) -> u64 {
        let n = self.next.get();
        self.next.set(n + 1);
        self.worker | n
    }

    /// Keeps `id` (a connection's id from the process before an upgrade)
    /// if it is one of this worker's, so that later fresh ids never repeat
    /// it; an id of another worker's is replaced by a fresh one.
    pub fn adopt(&self, id: u64) -> u64 {
        let mask = (1u64 << (64 - WORKER_BITS)) - 1;
        if id & !mask != self.worker || id & mask == 0 || id & mask == mask {
            return self.fresh();
        }
        self.next.set(self.next.get().max((id & mask) + 1));
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_never_share_an_id() {
        let (first, last) = (Ids::new(0), Ids::new(MAX_WORKERS - 1));
        assert_eq!(first.fresh(), 1);
        assert_eq!(first.fresh(), 2);
        assert_eq!(last.fresh(), (255 << 56) | 1);
    }

    #[test]
    fn adopted_ids_are_never_handed_out_again() {
        let ids = Ids::new(1);
        let mine = (1 << 56) | 40;
        assert_eq!(ids.adopt(mine), mine);
        assert_eq!(ids.fresh(), (1 << 56) | 41);
        // Another worker's id, or one below the counter, is not a clash.
        let other = (2 << 56) | 7;
        assert_eq!(ids.adopt(other), (1 << 56) | 42);
        assert_eq!(ids.adopt((1 << 56) | 3), (1 << 56) | 3);
        assert_eq!(ids.fresh(), (1 << 56) | 43);
    }
}
