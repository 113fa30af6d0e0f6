//! A slot taken on a runner for one actor (see `load`), handed from
//! placement to the actor that starts there.

use std::rc::Rc;

use super::tunnel::Tunnel;

/// A slot taken on a runner for one actor: given to the actor that starts
/// there, or given back if dropped unused.
pub(crate) struct Reserved {
    tunnel: Option<Rc<Tunnel>>,
}

impl Reserved {
    /// Takes a slot on `tunnel`'s runner, if it has room.
    pub fn on(tunnel: &Rc<Tunnel>) -> Option<Reserved> {
        tunnel.load().try_reserve().then(|| Reserved {
            tunnel: Some(tunnel.clone()),
        })
    }

    #[cfg(test)]
    pub fn tunnel(&self) -> Option<&Rc<Tunnel>> {
        self.tunnel.as_ref()
    }

    /// The slot now belongs to whoever holds the tunnel; it is given back
    /// with [`release`].
    pub fn keep(mut self) -> Option<Rc<Tunnel>> {
        self.tunnel.take()
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if let Some(t) = self.tunnel.take() {
            release(&t);
        }
    }
}

/// Gives back the slot an actor held on `tunnel`'s runner.
pub(crate) fn release(tunnel: &Tunnel) {
    tunnel.load().release();
}
