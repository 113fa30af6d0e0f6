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
}
