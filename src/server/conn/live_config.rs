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
}
