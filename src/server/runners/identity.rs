//! Who a runner is: the identity whose token it presented (`runners.token`
//! is the "default" identity, `[[runners.identities]]` others of the
//! default namespace, `[[namespaces.runners]]` those of a namespace). A
//! runner key belongs to the identity that registered it, and an identity
//! may be limited to some pools and runner keys.

use crate::config::{Config, DEFAULT_NAMESPACE};
use crate::http::RequestHead;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// Unique gateway-wide: `ns/name` for a namespace's runner tokens.
    pub name: String,
    /// The namespace its runners serve.
    pub namespace: String,
    /// Pools it may register in; empty: any.
    pub pools: Vec<String>,
    /// Runner keys it registers start with this.
    pub key_prefix: String,
}

impl Identity {
    /// The identity whose token the request carries, if any. Every token is
    /// compared (in constant time each), so timing does not tell which.
    pub fn of(config: &Config, head: &RequestHead) -> Option<Identity> {
        let mut found = None;
        for ns in &config.namespaces {
            for r in &ns.runners {
                if head.bearer_is(&r.token) {
                    found = Some(Identity {
                        name: format!("{}/{}", ns.name, r.name),
                        namespace: ns.name.clone(),
                        pools: r.pools.clone(),
                        key_prefix: r.key_prefix.clone(),
                    });
                }
            }
        }
        for id in &config.runners.identities {
            if head.bearer_is(&id.token) {
                found = Some(Identity::of_default(&id.name, &id.pools));
            }
        }
        if head.bearer_is(&config.runners.token) {
            found = Some(Identity::of_default("default", &[]));
        }
        found
    }

    fn of_default(name: &str, pools: &[String]) -> Identity {
        Identity {
            name: name.to_owned(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            pools: pools.to_vec(),
            key_prefix: String::new(),
        }
    }

    pub fn may_use(&self, pool: &str) -> bool {
        self.pools.is_empty() || self.pools.iter().any(|p| p == pool)
    }

    pub fn may_register(&self, runner_key: &str) -> bool {
        runner_key.starts_with(&self.key_prefix)
    }
}
