//! This worker's configuration: the one it runs on now, swapped whole when
//! a reload reaches the worker (`runtime/reload.rs`), between two events of
//! its loop. Everything on the worker reads it through here when it uses a
//! setting, so a reloaded limit holds from the next time it is read.
//!
//! Each worker holds its own `Rc<Config>` (a copy of what the reloader
//! published): taking it is a plain increment, never an atomic on a count
//! another core also touches, so reading a setting per message costs no
//! cross-core traffic.

use std::cell::RefCell;
use std::rc::Rc;

use crate::config::Config;

pub(crate) struct LiveConfig {
    current: RefCell<Rc<Config>>,
}

impl LiveConfig {
    pub fn new(config: Rc<Config>) -> Self {
        LiveConfig {
            current: RefCell::new(config),
        }
    }

    /// The configuration now. A task may keep it across an await: a
    /// reload meanwhile swaps in another, and this one lives until dropped
    /// (the borrow ends here, so a swap can never find it borrowed).
    pub fn get(&self) -> Rc<Config> {
        self.current.borrow().clone()
    }

    /// Puts `config` in force; returns the one it replaces.
    pub fn replace(&self, config: Rc<Config>) -> Rc<Config> {
        self.current.replace(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_taken_before_a_swap_keeps_the_old_configuration() {
        let live = LiveConfig::new(Rc::new(Config::default()));
        let before = live.get();
        let mut next = Config::default();
        next.client.max_connections = 7;
        let old = live.replace(Rc::new(next));
        assert!(Rc::ptr_eq(&old, &before));
        assert_eq!(before.client.max_connections, 1_000_000);
        assert_eq!(live.get().client.max_connections, 7);
    }
}
