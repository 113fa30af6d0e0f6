//! Who a runner is: the identity whose token it presented (`runners.token`
//! is the "default" identity). A runner key belongs to the identity that
//! registered it, and an identity may be limited to some pools.

use crate::config::RunnersConfig;
use crate::http::RequestHead;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub name: String,
    /// Pools it may register in; empty: any.
    pub pools: Vec<String>,
}

impl Identity {
    /// The identity whose token the request carries, if any. Every token is
    /// compared (in constant time each), so timing does not tell which.
    pub fn of(config: &RunnersConfig, head: &RequestHead) -> Option<Identity> {
        let mut found = None;
        for id in &config.identities {
            if head.bearer_is(&id.token) {
                found = Some(Identity {
                    name: id.name.clone(),
                    pools: id.pools.clone(),
                });
            }
        }
        if head.bearer_is(&config.token) {
            found = Some(Identity {
                name: "default".into(),
                pools: Vec::new(),
            });
        }
        found
    }

    pub fn may_use(&self, pool: &str) -> bool {
        self.pools.is_empty() || self.pools.iter().any(|p| p == pool)
    }
}
