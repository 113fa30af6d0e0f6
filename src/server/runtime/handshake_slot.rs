//! How many client connections a worker lets handshake at once
//! (`client.max_handshakes`): a slot from accept until the connection is
//! upgraded, refused or handed on. Past it, new ones get 503 at once, so
//! silent or stalled connections cannot pile up.

use std::rc::Rc;
use std::sync::atomic::Ordering;

use super::worker::Worker;

/// One of `client.max_handshakes` per worker, held from accept until the
/// connection is upgraded, refused or handed to another worker (`counted: false` for the runner and admin
/// listeners, which the limit does not cover).
pub(super) struct HandshakeSlot {
    worker: Rc<Worker>,
    counted: bool,
}

impl HandshakeSlot {
    pub(super) fn free(worker: &Rc<Worker>) -> HandshakeSlot {
        HandshakeSlot {
            worker: worker.clone(),
            counted: false,
        }
    }

    pub(super) fn take(worker: &Rc<Worker>) -> Option<HandshakeSlot> {
        let stats = &worker.stats;
        if stats.handshakes.load(Ordering::Relaxed)
            >= worker.env.config().client.max_handshakes as u64
        {
            stats.handshakes_refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        stats.handshakes.fetch_add(1, Ordering::Relaxed);
        Some(HandshakeSlot {
            worker: worker.clone(),
            counted: true,
        })
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        if self.counted {
            self.worker.stats.handshakes.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
