//! A new configuration reaching every worker (SIGHUP): the reloader
//! publishes it in each worker's slot and wakes that worker; the worker
//! takes it between two events of its loop, puts its own copy in force
//! (`conn::LiveConfig`), applies what it owns, and says it is done. No
//! lock or shared count is on the per-message path: the slot's mutex is
//! taken once per reload per worker.
//!
//! Counts shared by every worker (client places, address rates, tunnels
//! per identity) get their new limits from the reloader itself, once,
//! before the workers are told (`Reloader::apply`).

use std::future::poll_fn;
use std::rc::Rc;
use std::sync::{mpsc, Arc, Mutex};
use std::task::Poll;
use std::time::Instant;

use atomic_waker::AtomicWaker;

use super::worker::Worker;
use crate::config::Config;
use crate::server::conn::env::SessionLimits;
use crate::server::runners::revoke_tunnels;

/// A configuration for one worker, and where it says it has applied it.
pub(crate) struct Published {
    pub config: Arc<Config>,
    pub done: mpsc::Sender<usize>,
}

struct Slot {
    next: Mutex<Option<Published>>,
    waker: AtomicWaker,
}

pub(crate) struct ReloadSignal {
    slots: Vec<Slot>,
}

impl ReloadSignal {
    pub fn new(workers: usize) -> Self {
        let slot = || Slot {
            next: Mutex::new(None),
            waker: AtomicWaker::new(),
        };
        ReloadSignal {
            slots: (0..workers).map(|_| slot()).collect(),
        }
    }

    pub fn workers(&self) -> usize {
        self.slots.len()
    }

    /// Gives `config` to every worker; each sends its id on the returned
    /// channel once it runs on it. A worker that has not taken the
    /// previous one yet gets only this one.
    pub fn publish(&self, config: &Arc<Config>) -> mpsc::Receiver<usize> {
        let (done, applied) = mpsc::channel();
        for slot in &self.slots {
            let published = Published {
                config: config.clone(),
                done: done.clone(),
            };
            *slot.next.lock().unwrap_or_else(|e| e.into_inner()) = Some(published);
            slot.waker.wake();
        }
        applied
    }

    /// The next configuration published for worker `me` (only its one
    /// reload task may wait here).
    pub async fn next(&self, me: usize) -> Published {
        let slot = &self.slots[me];
        let take = || slot.next.lock().unwrap_or_else(|e| e.into_inner()).take();
        poll_fn(|cx| {
            if let Some(p) = take() {
                return Poll::Ready(p);
            }
            slot.waker.register(cx.waker());
            match take() {
                Some(p) => Poll::Ready(p),
                None => Poll::Pending,
            }
        })
        .await
    }
}

/// A worker's reload task: applies each configuration published for it.
pub(super) async fn follow_reloads(worker: Rc<Worker>) {
    loop {
        let published = monoio::select! {
            _ = worker.finished.wait() => return,
            p = worker.reloads.next(worker.id) => p,
        };
        worker.apply(&published.config);
        let _ = published.done.send(worker.id);
    }
}

impl Worker {
    /// Puts `config` in force on this worker. What reads a setting when
    /// it uses it sees the new value from now on; session limits are set
    /// here; tunnels whose token was revoked are closed; the sweep is woken
    /// to take up a changed tick.
    fn apply(&self, config: &Config) {
        let new = Rc::new(config.clone());
        let old = self.env.live.replace(new.clone());
        self.edge.limits.set(SessionLimits::client(&new));
        self.runners.limits.set(SessionLimits::tunnel(&new));
        revoke_tunnels(&self.runners, &old, &new);
        self.env.wakeups.note_deadline(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_gets_the_latest_configuration_once() {
        let signal = ReloadSignal::new(2);
        let mut first = Config::default();
        first.client.max_connections = 1;
        let mut second = Config::default();
        second.client.max_connections = 2;
        let _ = signal.publish(&Arc::new(first));
        let applied = signal.publish(&Arc::new(second));
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        for worker in 0..2 {
            let p = rt.block_on(signal.next(worker));
            assert_eq!(p.config.client.max_connections, 2, "the latest only");
            p.done.send(worker).unwrap();
        }
        assert_eq!(applied.try_iter().collect::<Vec<_>>(), [0, 1]);
        let slot = signal.slots[0].next.lock().unwrap();
        assert!(slot.is_none(), "taken once");
    }
}
