//! The runner tunnels of one worker, found by runner key or pool.

use std::cell::RefCell;
use std::rc::Rc;

use slab::Slab;

use super::tunnel::Tunnel;

#[derive(Default)]
pub(crate) struct TunnelTable {
    tunnels: RefCell<Slab<Rc<Tunnel>>>,
}

impl TunnelTable {
    pub fn insert(&self, tunnel: &Rc<Tunnel>) {
        let key = self.tunnels.borrow_mut().insert(tunnel.clone());
        tunnel.slab_key.set(key);
    }

    /// Removes `tunnel`; false if it was not (or no longer) in the table.
    pub fn remove(&self, tunnel: &Rc<Tunnel>) -> bool {
        let mut tunnels = self.tunnels.borrow_mut();
        let key = tunnel.slab_key.get();
        if !tunnels.get(key).is_some_and(|t| Rc::ptr_eq(t, tunnel)) {
            return false;
        }
        tunnels.remove(key);
        true
    }

    /// The tunnel of runner `key` in namespace `ns`: runner keys are a
    /// namespace's own, so no tenant can take (or block) another's.
    pub fn by_runner_key(&self, ns: &str, key: &str) -> Option<Rc<Tunnel>> {
        self.find(|t| t.runner_key == key && t.namespace == ns)
    }

    /// Tunnels of runner `key`, whatever their namespace (operator drains).
    pub fn all_by_runner_key(&self, key: &str) -> Vec<Rc<Tunnel>> {
        self.filter(|t| t.runner_key == key)
    }

    /// Tunnels of pool `pool` in namespace `ns`.
    pub fn in_pool(&self, ns: &str, pool: &str) -> Vec<Rc<Tunnel>> {
        self.filter(|t| t.pool == pool && t.namespace == ns)
    }

    /// Tunnels draining whose runner has not been told it may exit.
    pub fn draining(&self) -> Vec<Rc<Tunnel>> {
        self.filter(|t| t.is_draining())
    }

    fn find(&self, pred: impl Fn(&Tunnel) -> bool) -> Option<Rc<Tunnel>> {
        let tunnels = self.tunnels.borrow();
        tunnels.iter().map(|(_, t)| t).find(|t| pred(t)).cloned()
    }

    /// The tunnels for which `pred` holds.
    pub fn filter(&self, pred: impl Fn(&Tunnel) -> bool) -> Vec<Rc<Tunnel>> {
        let tunnels = self.tunnels.borrow();
        tunnels
            .iter()
            .map(|(_, t)| t)
            .filter(|t| pred(t))
            .cloned()
            .collect()
    }
}
