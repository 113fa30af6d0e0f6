//! Who a runner is: the identity whose token it presented (`runners.token`
//! is the "default" identity, `[[runners.identities]]` others of the
//! default namespace, `[[namespaces.runners]]` those of a namespace). A
//! runner key belongs to the identity that registered it, and an identity
//! may be limited to some pools and runner keys.

use crate::config::{Config, DEFAULT_NAMESPACE};
use crate::http::RequestHead;

/// The identity of other nodes (no configured identity may be called so:
/// names are those of `[[runners.identities]]`, which cannot hold a colon).
const NODE_IDENTITY: &str = "cluster:node";

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

    /// Another node of the cluster, if the request carries the cluster's
    /// token (only on `/cluster/connect`: no runner token opens a node
    /// tunnel, and the cluster token opens nothing else).
    pub fn of_node(config: &Config, head: &RequestHead) -> Option<Identity> {
        let cluster = config.cluster.as_ref()?;
        head.bearer_is(&cluster.token).then(Identity::node)
    }

    fn node() -> Identity {
        use crate::server::tunnels::{PEER_KEY_PREFIX, PEER_NAMESPACE, PEER_POOL};
        Identity {
            name: NODE_IDENTITY.to_owned(),
            namespace: PEER_NAMESPACE.to_owned(),
            pools: vec![PEER_POOL.to_owned()],
            key_prefix: PEER_KEY_PREFIX.to_owned(),
        }
    }

    /// Whether this is another node of the cluster.
    pub fn is_node(&self) -> bool {
        self.name == NODE_IDENTITY
    }

    /// The identity called `name` under `new`, if it still has the token it
    /// had under `old` (a runner admitted under `old` presented that one).
    /// `None`: the token was taken away or changed.
    pub fn renewed(old: &Config, new: &Config, name: &str) -> Option<Identity> {
        let (was, _) = Identity::named(old, name)?;
        let (token, identity) = Identity::named(new, name)?;
        (was == token).then_some(identity)
    }

    /// The identity called `name` (as [`Identity::name`]) and its token.
    fn named<'a>(config: &'a Config, name: &str) -> Option<(&'a str, Identity)> {
        if name == NODE_IDENTITY {
            return Some((&config.cluster.as_ref()?.token, Identity::node()));
        }
        if name == "default" {
            return Some((&config.runners.token, Identity::of_default(name, &[])));
        }
        if let Some(id) = config.runners.identities.iter().find(|i| i.name == name) {
            return Some((&id.token, Identity::of_default(&id.name, &id.pools)));
        }
        let (ns_name, runner_name) = name.split_once('/')?;
        let ns = config.namespaces.iter().find(|n| n.name == ns_name)?;
        let r = ns.runners.iter().find(|r| r.name == runner_name)?;
        let identity = Identity {
            name: name.to_owned(),
            namespace: ns.name.clone(),
            pools: r.pools.clone(),
            key_prefix: r.key_prefix.clone(),
        };
        Some((&r.token, identity))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text).unwrap()
    }

    const ACME: &str = "[[namespaces]]\nname = \"acme\"\nopen = true\n[[namespaces.runners]]\nname = \"hosts\"\ntoken = \"acme-runner-token-0001\"\n";

    #[test]
    fn an_identity_is_renewed_only_while_its_token_stays() {
        let old = config(&format!(
            "[runners]\ntoken = \"default-token-0001\"\n{ACME}"
        ));
        let same = old.clone();
        assert!(Identity::renewed(&old, &same, "default").is_some());
        let acme = Identity::renewed(&old, &same, "acme/hosts").unwrap();
        assert_eq!(acme.namespace, "acme");
        let rotated = config(&format!(
            "[runners]\ntoken = \"default-token-0002\"\n{ACME}"
        ));
        assert!(Identity::renewed(&old, &rotated, "default").is_none());
        assert!(Identity::renewed(&old, &rotated, "acme/hosts").is_some());
        let removed = config("[runners]\ntoken = \"default-token-0001\"\n");
        assert!(Identity::renewed(&old, &removed, "acme/hosts").is_none());
        assert!(Identity::renewed(&old, &removed, "nobody").is_none());
    }

    #[test]
    fn a_renewed_identity_carries_its_new_pools() {
        let id = "[[runners.identities]]\nname = \"a\"\ntoken = \"token-of-a-0001\"\n";
        let old = config(id);
        let narrowed = config(&format!("{id}pools = [\"gpu\"]\n"));
        let renewed = Identity::renewed(&old, &narrowed, "a").unwrap();
        assert!(renewed.may_use("gpu") && !renewed.may_use("default"));
    }
}
