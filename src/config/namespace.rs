//! Namespaces: tenants of one gateway. Each has its own actors, runners and
//! tokens, and nothing of one can see or reach another's.
//!
//! The namespace `default` is what `/actors/...` names. When the file does
//! not configure it, it is implicit: open to any client, its runners those
//! of `runners.token` and `[[runners.identities]]`, its pools
//! `actors.pools`. An implicit default namespace is allowed only while
//! `client.listen` is a loopback address (the quick start); an edge node
//! says what it wants with `[[namespaces]] name = "default"`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The namespace `/actors/...` (without `/ns/{name}`) belongs to.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Longest namespace name, in bytes (letters, digits, `-`, `_`).
pub const MAX_NAMESPACE_BYTES: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    pub name: String,
    /// Any client may connect without a token.
    #[serde(default)]
    pub open: bool,
    /// Tokens a client may present to connect to any actor of the namespace
    /// (fit for an app's public code: they grant nothing else).
    #[serde(default)]
    pub publishable_tokens: Vec<String>,
    /// Secrets that sign connect tokens (`tt1.…`) granting one actor or key
    /// prefix until an expiry. Several: sign with the newest, verify with all.
    #[serde(default)]
    pub connect_token_secrets: Vec<String>,
    /// Tokens for this namespace's part of the admin API (its actors'
    /// status, publish, migrate). `admin.token` reaches every namespace.
    #[serde(default)]
    pub access_tokens: Vec<String>,
    /// Actor name → runner pool within this namespace ("default" otherwise).
    #[serde(default)]
    pub pools: BTreeMap<String, String>,
    /// Who may register runners here.
    #[serde(default)]
    pub runners: Vec<NamespaceRunner>,
}

/// A runner token of a namespace: which pools, and optionally which runner
/// keys, its holder may register.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceRunner {
    pub name: String,
    pub token: String,
    /// Pools it may register in; empty: any.
    #[serde(default)]
    pub pools: Vec<String>,
    /// Runner keys it registers must start with this.
    #[serde(default)]
    pub key_prefix: String,
}

impl NamespaceConfig {
    /// The implicit default namespace: open, no tokens of its own.
    pub fn implicit_default() -> Self {
        NamespaceConfig {
            name: DEFAULT_NAMESPACE.to_owned(),
            open: true,
            publishable_tokens: Vec::new(),
            connect_token_secrets: Vec::new(),
            access_tokens: Vec::new(),
            pools: BTreeMap::new(),
            runners: Vec::new(),
        }
    }

    /// Whether a client can ever get in.
    pub fn admits_clients(&self) -> bool {
        self.open || !self.publishable_tokens.is_empty() || !self.connect_token_secrets.is_empty()
    }

    /// Every secret this namespace holds, to check they are distinct.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        let p = self.publishable_tokens.iter();
        let c = self.connect_token_secrets.iter();
        let a = self.access_tokens.iter();
        let r = self.runners.iter().map(|r| &r.token);
        p.chain(c).chain(a).chain(r).map(String::as_str)
    }
}

/// Whether `name` may name a namespace (as an actor name may name an actor).
pub fn is_namespace_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAMESPACE_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Problems with the namespaces as a whole: names valid and distinct, every
/// token distinct from every other (a token must say unambiguously whose it
/// is), none empty, each namespace reachable by some client.
pub fn check_namespaces(namespaces: &[NamespaceConfig], other_tokens: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen_tokens: Vec<&str> = other_tokens.to_vec();
    for (i, ns) in namespaces.iter().enumerate() {
        if !is_namespace_name(&ns.name) {
            problems.push(format!(
                "namespaces: name {:?} must be 1-{MAX_NAMESPACE_BYTES} letters, digits, '-' or '_'",
                ns.name
            ));
        }
        if namespaces[..i].iter().any(|o| o.name == ns.name) {
            problems.push(format!("namespaces: {} is configured twice", ns.name));
        }
        let runners = &ns.runners;
        if runners
            .iter()
            .enumerate()
            .any(|(j, r)| r.name.is_empty() || runners[..j].iter().any(|o| o.name == r.name))
        {
            problems.push(format!(
                "namespaces: {} has a runner token with an empty or repeated name",
                ns.name
            ));
        }
        if !ns.admits_clients() {
            problems.push(format!(
                "namespaces: {} admits no client: set open = true, publishable_tokens or connect_token_secrets",
                ns.name
            ));
        }
        for token in ns.secrets() {
            if token.len() < 16 {
                problems.push(format!(
                    "namespaces: {} has a token or secret shorter than 16 bytes",
                    ns.name
                ));
            } else if seen_tokens.contains(&token) {
                problems.push(format!(
                    "namespaces: {} repeats a token or secret used elsewhere",
                    ns.name
                ));
            }
            seen_tokens.push(token);
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(name: &str) -> NamespaceConfig {
        NamespaceConfig {
            name: name.into(),
            publishable_tokens: vec![format!("pk-{name}-0123456789abcdef")],
            ..NamespaceConfig::implicit_default()
        }
    }

    #[test]
    fn distinct_valid_namespaces_pass() {
        assert!(check_namespaces(&[ns("a"), ns("b")], &["other-token"]).is_empty());
    }

    #[test]
    fn names_tokens_and_reachability_are_checked() {
        let mut closed = ns("closed");
        closed.publishable_tokens.clear();
        closed.open = false;
        let mut short = ns("short");
        short.access_tokens = vec!["tiny".into()];
        let mut shared = ns("shared");
        shared.access_tokens = vec!["pk-a-0123456789abcdef".into()];
        let problems = check_namespaces(
            &[ns("a"), ns("a"), ns("bad/name"), closed, short, shared],
            &[],
        );
        let text = problems.join("\n");
        for expected in [
            "a is configured twice",
            "\"bad/name\"",
            "closed admits no client",
            "short has a token or secret shorter",
            "shared repeats a token",
        ] {
            assert!(text.contains(expected), "{expected} not in:\n{text}");
        }
    }
}
