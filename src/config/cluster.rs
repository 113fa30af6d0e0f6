//! `[cluster]`: several edge nodes sharing one actor directory on etcd
//! (issue 16). Absent, the gateway is a single node and never touches etcd.

use std::time::Duration;

use serde::Deserialize;

use super::units::duration;

/// Bytes of a node id: it is a path segment of the directory's keys.
pub const MAX_NODE_ID_BYTES: usize = 64;
/// etcd endpoints one node may list.
pub const MAX_ETCD_ENDPOINTS: usize = 16;
/// The shortest cluster token: it authenticates node-to-node tunnels.
pub const MIN_CLUSTER_TOKEN_BYTES: usize = 16;
/// Lease TTLs a node may ask for: etcd counts in whole seconds; below 2 s a
/// keep-alive (sent at a third of the TTL) has no room for one slow round
/// trip, above 5 min a dead node's actors wait too long to move.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(2);
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name in the directory: 1–64 bytes of `A-Z a-z 0-9 . _ -`,
    /// not starting with a dot; unique in the cluster.
    pub node_id: String,
    /// Where other nodes reach this node's node-to-node tunnel: `host:port`.
    pub advertise: String,
    /// etcd's client URLs (`http://host:port` or `https://host:port`),
    /// tried in order. https verifies etcd against the system's roots, or
    /// only the CA file the `TETHER_ETCD_CA` environment variable names.
    pub etcd_endpoints: Vec<String>,
    /// etcd credentials (both or neither).
    #[serde(default)]
    pub etcd_user: Option<String>,
    #[serde(default)]
    pub etcd_password: Option<String>,
    /// The node lease's TTL: a node that stops renewing it loses its claims
    /// this long after.
    #[serde(default = "default_lease_ttl", deserialize_with = "duration")]
    pub lease_ttl: Duration,
    /// Authenticates node-to-node tunnels: at least 16 bytes, and none of
    /// the gateway's other tokens.
    pub token: String,
    /// Node-to-node tunnels over TLS.
    #[serde(default)]
    pub tls: bool,
}

fn default_lease_ttl() -> Duration {
    Duration::from_secs(10)
}

/// Whether `id` may name a node (or be any other single key segment the
/// directory writes verbatim).
pub fn is_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_NODE_ID_BYTES
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `host:port` with a non-empty host and a non-zero port.
fn is_host_port(s: &str) -> bool {
    if s.parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.port() != 0)
    {
        return true;
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
        && port.parse::<u16>().is_ok_and(|p| p != 0)
}

/// An etcd endpoint: `http://host:port` or `https://host:port`, nothing after.
pub fn is_etcd_endpoint(s: &str) -> bool {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"));
    rest.is_some_and(|r| !r.contains('/') && is_host_port(r))
}

impl ClusterConfig {
    /// Every problem with the section; `other_tokens` are the gateway's
    /// other secrets, which the cluster token must not repeat.
    pub fn problems(&self, other_tokens: &[&str]) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !is_node_id(&self.node_id) {
            out.push((
                "node_id",
                format!(
                    "cluster.node_id {:?} must be 1–{MAX_NODE_ID_BYTES} bytes of A-Z a-z 0-9 . _ - (not starting with a dot)",
                    self.node_id
                ),
            ));
        }
        if !is_host_port(&self.advertise) {
            out.push((
                "advertise",
                format!("cluster.advertise {:?} must be host:port", self.advertise),
            ));
        }
        if self.etcd_endpoints.is_empty() || self.etcd_endpoints.len() > MAX_ETCD_ENDPOINTS {
            out.push((
                "etcd_endpoints",
                format!("cluster.etcd_endpoints needs 1–{MAX_ETCD_ENDPOINTS} URLs"),
            ));
        }
        for e in &self.etcd_endpoints {
            if !is_etcd_endpoint(e) {
                out.push((
                    "etcd_endpoints",
                    format!("cluster.etcd_endpoints: {e:?} is not http://host:port or https://host:port"),
                ));
            }
        }
        match (&self.etcd_user, &self.etcd_password) {
            (Some(u), Some(_)) if u.is_empty() => {
                out.push(("etcd_user", "cluster.etcd_user must not be empty".into()))
            }
            (Some(_), None) | (None, Some(_)) => out.push((
                "etcd_user",
                "cluster.etcd_user and cluster.etcd_password go together".into(),
            )),
            _ => {}
        }
        if self.lease_ttl < MIN_LEASE_TTL
            || self.lease_ttl > MAX_LEASE_TTL
            || self.lease_ttl.subsec_nanos() != 0
        {
            out.push((
                "lease_ttl",
                "cluster.lease_ttl must be whole seconds from 2s to 300s".into(),
            ));
        }
        if self.tls {
            // Refused rather than ignored: an operator who asks for TLS
            // between nodes must not get plain TCP silently.
            out.push((
                "tls",
                "cluster.tls: node-to-node links over TLS are not supported yet (keep them on a private network)".into(),
            ));
        }
        if self.token.len() < MIN_CLUSTER_TOKEN_BYTES {
            out.push((
                "token",
                format!("cluster.token must be at least {MIN_CLUSTER_TOKEN_BYTES} bytes"),
            ));
        } else if other_tokens.contains(&self.token.as_str()) {
            out.push((
                "token",
                "cluster.token must differ from every other token of the gateway".into(),
            ));
        }
        out
    }

    /// The lease TTL in etcd's whole seconds.
    pub fn lease_ttl_secs(&self) -> i64 {
        self.lease_ttl.as_secs() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> ClusterConfig {
        ClusterConfig {
            node_id: "edge-1".into(),
            advertise: "10.0.0.1:7000".into(),
            etcd_endpoints: vec!["http://127.0.0.1:2379".into()],
            etcd_user: None,
            etcd_password: None,
            lease_ttl: Duration::from_secs(10),
            token: "a-cluster-token-of-some-length".into(),
            tls: false,
        }
    }

    #[test]
    fn a_sound_section_has_no_problems() {
        assert!(ok().problems(&["other"]).is_empty());
        let mut c = ok();
        c.advertise = "edge-1.example.com:7000".into();
        c.etcd_endpoints = vec!["https://etcd-a:2379".into(), "http://[::1]:2379".into()];
        c.etcd_user = Some("tether".into());
        c.etcd_password = Some("pw".into());
        assert_eq!(c.problems(&[]), vec![]);
    }

    #[test]
    fn each_bad_value_is_named() {
        type Change = Box<dyn Fn(&mut ClusterConfig)>;
        let cases: Vec<(&str, Change)> = vec![
            ("node_id", Box::new(|c| c.node_id = String::new())),
            ("node_id", Box::new(|c| c.node_id = "a/b".into())),
            ("node_id", Box::new(|c| c.node_id = ".hidden".into())),
            ("node_id", Box::new(|c| c.node_id = "x".repeat(65))),
            ("advertise", Box::new(|c| c.advertise = "10.0.0.1".into())),
            ("advertise", Box::new(|c| c.advertise = "host:0".into())),
            ("etcd_endpoints", Box::new(|c| c.etcd_endpoints.clear())),
            (
                "etcd_endpoints",
                Box::new(|c| c.etcd_endpoints = vec!["127.0.0.1:2379".into()]),
            ),
            (
                "etcd_endpoints",
                Box::new(|c| c.etcd_endpoints = vec!["http://h:2379/v3".into()]),
            ),
            ("etcd_user", Box::new(|c| c.etcd_user = Some("u".into()))),
            ("tls", Box::new(|c| c.tls = true)),
            (
                "lease_ttl",
                Box::new(|c| c.lease_ttl = Duration::from_secs(1)),
            ),
            (
                "lease_ttl",
                Box::new(|c| c.lease_ttl = Duration::from_millis(2500)),
            ),
            (
                "lease_ttl",
                Box::new(|c| c.lease_ttl = Duration::from_secs(301)),
            ),
            ("token", Box::new(|c| c.token = "short".into())),
            (
                "token",
                Box::new(|c| c.token = "other-token-0123456789".into()),
            ),
        ];
        for (key, change) in cases {
            let mut c = ok();
            change(&mut c);
            let problems = c.problems(&["other-token-0123456789"]);
            assert_eq!(problems.len(), 1, "{key}: {problems:?}");
            assert_eq!(problems[0].0, key, "{problems:?}");
        }
    }
}
