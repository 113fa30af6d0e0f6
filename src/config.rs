//! Configuration: TOML with every option defaulted, unknown keys refused, and
//! errors reported with their line and column.

use std::path::Path;

use serde::Deserialize;

mod cluster;
pub mod diff;
mod error;
mod ipnet;
mod namespace;
mod pool_state;
pub mod reload;
mod sections;
mod serverless;
mod units;
pub use cluster::{
    is_node_id, ClusterConfig, MAX_LEASE_TTL, MAX_NODE_ID_BYTES, MIN_CLUSTER_TOKEN_BYTES,
    MIN_LEASE_TTL,
};
pub use error::ConfigError;
use error::{line_and_column, located};
pub use ipnet::IpNet;
pub use namespace::{
    is_namespace_name, NamespaceConfig, NamespaceRunner, DEFAULT_NAMESPACE, MAX_NAMESPACE_BYTES,
};
pub use pool_state::{read_pool_state, write_pool_state};
pub use sections::*;
pub use serverless::{
    check_pools, merge_pools, FunctionUrl, PoolRunner, PoolSource, ServerlessPool,
    MAX_API_POOLS_PER_NAMESPACE, MAX_RUNNERS_PER_POOL, MAX_SERVERLESS_POOLS,
};
pub use units::{parse_duration, parse_size};

/// The documented example configuration, `config/tether.toml`. A test keeps
/// it equal to the defaults (`config/sections.rs`), so the file is the
/// documentation.
pub const EXAMPLE_TOML: &str = include_str!("../config/tether.toml");

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub client: ClientConfig,
    pub runners: RunnersConfig,
    pub actors: ActorsConfig,
    pub admin: AdminConfig,
    /// Tenants: `[[namespaces]]`. Without one named "default", the default
    /// namespace is implicit and open (loopback only).
    pub namespaces: Vec<NamespaceConfig>,
    /// Runner pools the gateway starts on serverless functions
    /// (`[[serverless]]`); the admin API adds more per namespace.
    pub serverless: Vec<ServerlessPool>,
    /// Several nodes sharing one actor directory on etcd (`[cluster]`,
    /// issue 16). None: a single node that never touches etcd.
    pub cluster: Option<ClusterConfig>,
}

/// The most worker threads: ids of connections and actors carry the worker
/// index in their top 8 bits (`server::actors::ids`).
pub const MAX_WORKERS: usize = 256;

/// `client.max_message_bytes` must stay below this: a held message's length
/// is kept in 32 bits, and a gigabyte is already far past any sane message.
pub const MAX_MESSAGE_LIMIT: usize = 1 << 30;

/// The runner token of the embedded defaults: fine on loopback, refused by
/// `check-config` (and at start-up) on any other address.
pub const DEV_RUNNER_TOKEN: &str = "tether-dev-token";

impl Config {
    /// Parses a complete or partial file: sections and keys left out keep
    /// their defaults. Returns every error found.
    pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = match e.span() {
                Some(span) => line_and_column(text, span.start),
                None => (None, None),
            };
            vec![ConfigError {
                line,
                column,
                message: e.message().trim().to_owned(),
            }]
        })?;
        let errors = config.cross_checks(text);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }

    pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![ConfigError {
                line: None,
                column: None,
                message: format!("cannot read {}: {e}", path.display()),
            }]
        })?;
        Config::parse(&text)
    }

    /// Rules that involve more than one key.
    fn cross_checks(&self, text: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let listeners = [
            ("client", self.client.listen),
            ("runners", self.runners.listen),
            ("admin", self.admin.listen),
        ];
        for (i, (a, addr_a)) in listeners.iter().enumerate() {
            for (b, addr_b) in &listeners[i + 1..] {
                if addr_a == addr_b {
                    errors.push(located(
                        text,
                        b,
                        "listen",
                        &format!("{b}.listen must differ from {a}.listen"),
                    ));
                }
            }
        }
        if self.runners.token.is_empty() {
            errors.push(located(
                text,
                "runners",
                "token",
                "runners.token must not be empty",
            ));
        } else if self.runners.token == DEV_RUNNER_TOKEN && !self.runners.listen.ip().is_loopback()
        {
            errors.push(located(
                text,
                "runners",
                "token",
                "runners.listen is not a loopback address but runners.token is the development token: set a secret token",
            ));
        }
        if self.runners.max_message_bytes < self.client.max_message_bytes + 64 {
            errors.push(located(
                text,
                "runners",
                "max_message_bytes",
                "runners.max_message_bytes must exceed client.max_message_bytes (a client message travels in one tunnel message)",
            ));
        }
        errors.extend(self.identity_checks(text));
        errors.extend(self.namespace_checks(text));
        for message in self.serverless_errors() {
            errors.push(located(text, "[serverless]", "pool", &message));
        }
        errors.extend(self.cluster_checks(text));
        if self.server.workers > MAX_WORKERS {
            errors.push(located(
                text,
                "server",
                "workers",
                &format!(
                    "server.workers is {}, more than the {MAX_WORKERS} workers connection and actor ids can tell apart",
                    self.server.workers
                ),
            ));
        }
        if self.client.max_message_bytes >= MAX_MESSAGE_LIMIT {
            errors.push(located(
                text,
                "client",
                "max_message_bytes",
                "client.max_message_bytes must be below 1 GiB",
            ));
        }
        if self.client.read_buffer_bytes < 512 {
            errors.push(located(
                text,
                "client",
                "read_buffer_bytes",
                "client.read_buffer_bytes must be at least 512",
            ));
        }
        errors
    }

    /// Identities have distinct names and distinct, non-empty tokens (none
    /// the default identity's).
    fn identity_checks(&self, text: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let ids = &self.runners.identities;
        for (i, id) in ids.iter().enumerate() {
            let problem = if id.name.is_empty() || id.name == "default" || id.name.contains('/') {
                Some(format!(
                    "runners.identities: name {:?} is empty, reserved or contains /",
                    id.name
                ))
            } else if id.token.is_empty() || id.token == self.runners.token {
                Some(format!(
                    "runners.identities: {} needs a token of its own",
                    id.name
                ))
            } else if ids[..i]
                .iter()
                .any(|o| o.name == id.name || o.token == id.token)
            {
                Some(format!(
                    "runners.identities: {} repeats a name or token",
                    id.name
                ))
            } else {
                None
            };
            errors.extend(problem.map(|m| located(text, "runners", "identities", &m)));
        }
        errors
    }

    /// `[cluster]`, when present; its token repeats no other secret.
    fn cluster_checks(&self, text: &str) -> Vec<ConfigError> {
        let Some(cluster) = &self.cluster else {
            return Vec::new();
        };
        let mut other: Vec<&str> = vec![self.runners.token.as_str()];
        other.extend(self.runners.identities.iter().map(|i| i.token.as_str()));
        if !self.admin.token.is_empty() {
            other.push(&self.admin.token);
        }
        for ns in &self.namespaces {
            other.extend(ns.secrets());
        }
        let mut problems = cluster.problems(&other);
        // Other nodes dial this node's runner listener in plain TCP.
        if !self.runners.tls.is_empty() {
            let why = "node-to-node links are plain TCP for now: with [cluster], the runner listener (where other nodes link) cannot use runners.tls";
            problems.push(("tls", why.into()));
        }
        problems
            .into_iter()
            .map(|(key, m)| located(text, "cluster", key, &m))
            .collect()
    }

    fn namespace_checks(&self, text: &str) -> Vec<ConfigError> {
        let mut other: Vec<&str> = vec![self.runners.token.as_str()];
        other.extend(self.runners.identities.iter().map(|i| i.token.as_str()));
        if !self.admin.token.is_empty() {
            other.push(&self.admin.token);
        }
        let mut errors: Vec<ConfigError> = namespace::check_namespaces(&self.namespaces, &other)
            .iter()
            .map(|m| located(text, "namespaces", "name", m))
            .collect();
        let explicit_default = self.namespaces.iter().any(|n| n.name == DEFAULT_NAMESPACE);
        if !explicit_default && !self.client.listen.ip().is_loopback() {
            errors.push(located(
                text,
                "client",
                "listen",
                "client.listen is not a loopback address but the default namespace is implicit (open to anyone): add [[namespaces]] name = \"default\" with publishable_tokens or connect_token_secrets, or open = true to serve anyone",
            ));
        }
        errors
    }

    /// The namespace `name`, if it exists (the default one always does).
    pub fn namespace(&self, name: &str) -> Option<&NamespaceConfig> {
        static IMPLICIT_DEFAULT: std::sync::LazyLock<NamespaceConfig> =
            std::sync::LazyLock::new(NamespaceConfig::implicit_default);
        match self.namespaces.iter().find(|n| n.name == name) {
            Some(ns) => Some(ns),
            None if name == DEFAULT_NAMESPACE => Some(&IMPLICIT_DEFAULT),
            None => None,
        }
    }

    /// The runner pool of actor `name` in namespace `ns`.
    pub fn pool_of<'a>(&'a self, ns: &str, name: &str) -> &'a str {
        let pools = match self.namespaces.iter().find(|n| n.name == ns) {
            Some(n) if ns != DEFAULT_NAMESPACE || !n.pools.is_empty() => &n.pools,
            _ => &self.actors.pools,
        };
        pools.get(name).map_or("default", String::as_str)
    }

    /// The serverless pool `pool` of namespace `ns`, if it is one.
    pub fn serverless_pool(&self, ns: &str, pool: &str) -> Option<&ServerlessPool> {
        self.serverless
            .iter()
            .find(|p| p.namespace == ns && p.pool == pool)
    }

    /// The number of worker threads to run: `workers`, or one per CPU (at
    /// most [`MAX_WORKERS`]) when it is 0.
    pub fn worker_count(&self) -> usize {
        match self.server.workers {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_WORKERS),
            n => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn example_file_states_the_defaults() {
        assert_eq!(Config::parse(EXAMPLE_TOML).unwrap(), Config::default());
    }

    #[test]
    fn empty_and_partial_files_use_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        let c = Config::parse("[client]\nping_interval = \"5s\"\n").unwrap();
        assert_eq!(c.client.ping_interval, Duration::from_secs(5));
        assert_eq!(c.client.ping_timeout, Duration::from_secs(20));
    }

    #[test]
    fn unknown_keys_are_errors_with_positions() {
        let errs = Config::parse("[client]\nlisten = \"127.0.0.1:1\"\npingg_interval = \"5s\"\n")
            .unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, Some(3));
        assert_eq!(errs[0].column, Some(1));
        assert!(
            errs[0].message.contains("pingg_interval"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn bad_values_are_located() {
        let errs = Config::parse("[client]\nping_timeout = \"5 parsecs\"\n").unwrap_err();
        assert_eq!(errs[0].line, Some(2));
        assert!(errs[0].message.contains("unit"), "{}", errs[0].message);
        let errs = Config::parse("[server]\nio_driver = \"kqueue\"\n").unwrap_err();
        assert_eq!(errs[0].line, Some(2));
        let errs = Config::parse("[admin]\nlisten = \"127.0.0.1:8080\"\n").unwrap_err();
        assert_eq!((errs[0].line, errs[0].column), (Some(2), Some(1)));
    }

    #[test]
    fn more_workers_than_ids_can_carry_are_refused() {
        let errs = Config::parse("[server]\nworkers = 257\n").unwrap_err();
        assert_eq!(errs[0].line, Some(2));
        assert!(errs[0].message.contains("256"), "{}", errs[0].message);
        assert!(Config::parse("[server]\nworkers = 256\n").is_ok());
        assert!(Config::default().worker_count() <= MAX_WORKERS);
    }

    #[test]
    fn message_sizes_that_would_not_fit_are_refused() {
        let text =
            "[client]\nmax_message_bytes = \"4GiB\"\n[runners]\nmax_message_bytes = \"5GiB\"\n";
        let errs = Config::parse(text).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].message.contains("below 1 GiB"),
            "{}",
            errs[0].message
        );
        assert_eq!(errs[0].line, Some(2));
    }

    #[test]
    fn runner_identities_need_their_own_names_and_tokens() {
        let ok = "[[runners.identities]]\nname = \"a\"\ntoken = \"ta\"\n[[runners.identities]]\nname = \"b\"\ntoken = \"tb\"\npools = [\"x\"]\n";
        let c = Config::parse(ok).unwrap();
        assert_eq!(c.runners.identities[1].pools, ["x"]);
        for bad in [
            "[[runners.identities]]\nname = \"a\"\ntoken = \"\"\n",
            "[[runners.identities]]\nname = \"default\"\ntoken = \"t\"\n",
            "[[runners.identities]]\nname = \"a\"\ntoken = \"tether-dev-token\"\n",
            "[[runners.identities]]\nname = \"a\"\ntoken = \"t\"\n[[runners.identities]]\nname = \"b\"\ntoken = \"t\"\n",
        ] {
            assert!(Config::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cluster_is_absent_by_default_and_checked_when_present() {
        assert_eq!(Config::default().cluster, None);
        let text = "[cluster]\nnode_id = \"edge-1\"\nadvertise = \"10.0.0.1:7100\"\netcd_endpoints = [\"http://127.0.0.1:2379\"]\ntoken = \"0123456789abcdef\"\n";
        let c = Config::parse(text).unwrap().cluster.unwrap();
        assert_eq!(c.lease_ttl, Duration::from_secs(10));
        assert!(!c.tls);
        let errs = Config::parse(&text.replace("edge-1", "edge/1")).unwrap_err();
        assert_eq!(errs[0].line, Some(2), "{errs:?}");
        let errs = Config::parse(&format!("{text}lease_ttl = \"1s\"\n")).unwrap_err();
        assert_eq!(errs[0].line, Some(6), "{errs:?}");
        // The cluster token repeats no other secret.
        let errs =
            Config::parse(&format!("[admin]\ntoken = \"0123456789abcdef\"\n{text}")).unwrap_err();
        assert!(errs[0].message.contains("differ"), "{errs:?}");
        // Missing required keys are refused.
        assert!(Config::parse("[cluster]\nnode_id = \"a\"\n").is_err());
    }

    #[test]
    fn units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5").is_err());
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("1ZiB").is_err());
    }
}
