//! How many tunnels one runner identity may hold open
//! (`runners.max_tunnels_per_identity`), across every worker: a leaked or
//! stolen token cannot open sockets without end. Taken once per tunnel
//! connect, never per frame.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub(crate) struct TunnelQuota {
    /// A reload may change it; tunnels already open stay.
    max: AtomicUsize,
    open: Mutex<HashMap<String, usize>>,
}

impl TunnelQuota {
    pub fn new(max: usize) -> Self {
        TunnelQuota {
            max: AtomicUsize::new(max),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A new limit (a reload), for tunnels that connect from now on.
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// A place for one more tunnel of `identity`, or `None` at the limit.
    pub fn take(self: &Arc<Self>, identity: &str) -> Option<TunnelPermit> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(identity.to_owned()).or_insert(0);
        if *count >= self.max.load(Ordering::Relaxed) {
            return None;
        }
        *count += 1;
        Some(TunnelPermit {
            quota: self.clone(),
            identity: identity.to_owned(),
        })
    }

    fn give_back(&self, identity: &str) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(identity) {
            *count -= 1;
            if *count == 0 {
                open.remove(identity);
            }
        }
    }
}

/// One tunnel's place; dropping it (the tunnel ended) gives it back.
pub(crate) struct TunnelPermit {
    quota: Arc<TunnelQuota>,
    identity: String,
}

impl Drop for TunnelPermit {
    fn drop(&mut self) {
        self.quota.give_back(&self.identity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_identity_has_its_own_places_and_gets_them_back() {
        let quota = Arc::new(TunnelQuota::new(2));
        let a1 = quota.take("a").unwrap();
        let _a2 = quota.take("a").unwrap();
        assert!(quota.take("a").is_none());
        assert!(quota.take("b").is_some(), "another identity is unaffected");
        drop(a1);
        assert!(quota.take("a").is_some());
    }

    #[test]
    fn a_new_limit_holds_for_the_next_tunnel() {
        let quota = Arc::new(TunnelQuota::new(1));
        let _a1 = quota.take("a").unwrap();
        quota.set_max(2);
        let _a2 = quota.take("a").unwrap();
        quota.set_max(1);
        assert!(quota.take("a").is_none());
    }
}
