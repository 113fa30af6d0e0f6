//! The connections a worker owns, and the worker's one timer.
//!
//! Connections keep no timer of their own (a monoio `Sleep` per socket costs
//! hundreds of bytes while idle). Each publishes its next deadline in its
//! `ConnControl`; the worker's sweep wakes those whose deadline passed. The
//! registry is also how the worker reaches every connection (shutdown).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Instant;

use super::control::ConnControl;
use super::rc_slab::RcSlab;
use super::wakeups::Wakeups;
use crate::ws::CloseCode;

pub(crate) struct Registry {
    conns: RefCell<RcSlab<ConnControl>>,
    wakeups: Rc<Wakeups>,
    /// Shutdown, waiting for the last connection to end.
    empty_waiter: Cell<Option<Waker>>,
}

/// Removes the connection from the registry when its task ends, however it ends.
pub(crate) struct Registration {
    registry: Rc<Registry>,
    key: usize,
    pub control: Rc<ConnControl>,
}

/// A registration reduced to its key while its connection has no task
/// (parked): the registry holds the control meanwhile, so a parked
/// connection keeps 4 bytes instead of 24. Dropping it leaves the
/// connection registered (it is always woken back, see `Registry::wake`).
pub(crate) struct Dormant(u32);

/// The key of a registration made dormant (no slab entry has it).
const DORMANT: usize = usize::MAX;

impl Registration {
    pub fn into_dormant(mut self) -> Dormant {
        Dormant(std::mem::replace(&mut self.key, DORMANT) as u32)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.key == DORMANT {
            return;
        }
        let mut conns = self.registry.conns.borrow_mut();
        conns.remove(self.key);
        if conns.is_empty() {
            if let Some(w) = self.registry.empty_waiter.take() {
                w.wake();
            }
        }
    }
}

impl Registry {
    pub fn new(wakeups: Rc<Wakeups>) -> Self {
        Registry {
            conns: RefCell::new(RcSlab::default()),
            wakeups,
            empty_waiter: Cell::new(None),
        }
    }

    pub fn register(self: &Rc<Self>, now: Instant) -> Registration {
        let control = Rc::new(ConnControl::new(now, self.wakeups.clone()));
        // Below u32::MAX, as a dormant registration keeps it.
        let key = self.conns.borrow_mut().insert(control.clone());
        Registration {
            registry: self.clone(),
            key,
            control,
        }
    }

    /// The registration a dormant one stands for.
    pub fn wake(self: &Rc<Self>, dormant: Dormant) -> Registration {
        let key = dormant.0 as usize;
        Registration {
            registry: self.clone(),
            key,
            control: self.conns.borrow().get(key).expect("registered").clone(),
        }
    }

    pub fn len(&self) -> usize {
        self.conns.borrow().len()
    }

    /// Resolves when no connection is left (at once if none is).
    pub async fn until_empty(&self) {
        poll_fn(|cx| {
            if self.conns.borrow().is_empty() {
                return Poll::Ready(());
            }
            self.empty_waiter.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }

    pub fn close_all(&self, code: CloseCode, reason: &str) {
        for c in self.conns.borrow().iter() {
            c.request_close(code, reason);
        }
    }

    /// Wakes every connection to look at its situation again (a parked
    /// one resumes).
    pub fn poke_all(&self) {
        for c in self.conns.borrow().iter() {
            c.poke();
        }
    }

    /// Wakes every connection whose deadline is at or before `now`, and
    /// tells the sweep when the next one is due.
    pub fn sweep(&self, now: Instant) {
        let mut next = None::<Instant>;
        for c in self.conns.borrow().iter() {
            let d = c.deadline();
            if d <= now {
                if !c.timer_fired() {
                    c.fire_timer();
                }
            } else if next.is_none_or(|n| d < n) {
                next = Some(d);
            }
        }
        self.wakeups.set_next_due(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sweep_fires_only_due_connections() {
        let registry = Rc::new(Registry::new(Rc::default()));
        let t0 = Instant::now();
        let a = registry.register(t0);
        let b = registry.register(t0);
        a.control.set_deadline(t0 + Duration::from_secs(1));
        b.control.set_deadline(t0 + Duration::from_secs(5));
        registry.sweep(t0 + Duration::from_secs(2));
        assert!(a.control.timer_fired());
        assert!(!b.control.timer_fired());
        drop(a);
        assert_eq!(registry.len(), 1);
    }

    #[test]
    fn a_dormant_registration_stays_registered() {
        let registry = Rc::new(Registry::new(Rc::default()));
        let a = registry.register(Instant::now());
        let control = a.control.clone();
        let dormant = a.into_dormant();
        assert_eq!(registry.len(), 1);
        let a = registry.wake(dormant);
        assert!(Rc::ptr_eq(&a.control, &control));
        drop(a);
        assert_eq!(registry.len(), 0);
    }
}
