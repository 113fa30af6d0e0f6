//! Serverless pools (`[[serverless]]`): runner pools whose runners the
//! gateway starts itself, by calling a function's `GET {url}/start`, and
//! retires before the platform's lifespan kills them (issue 15).
//!
//! Pools come from the file and, per namespace, from the admin API (kept
//! in a state file); when both name the same namespace and pool, the file
//! wins. This module only describes and checks a pool: calling the
//! function is the gateway's (`server/serverless`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::namespace::is_namespace_name;
use super::units::{duration, positive_duration, positive_u32};
use super::DEFAULT_NAMESPACE;

/// Extra headers a pool may set on its `/start` and `/metadata` requests.
pub const MAX_POOL_HEADERS: usize = 32;
/// Their names and values together.
pub const MAX_POOL_HEADER_BYTES: usize = 8 * 1024;
/// The longest function URL.
pub const MAX_URL_BYTES: usize = 2048;
/// Serverless pools in one configuration (file and API together).
pub const MAX_SERVERLESS_POOLS: usize = 1024;
/// Pools one namespace may make through the admin API.
pub const MAX_API_POOLS_PER_NAMESPACE: usize = 64;
/// Runners one pool may start (each is an open request and its tunnels).
pub const MAX_RUNNERS_PER_POOL: u32 = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerlessPool {
    /// The namespace whose actors the pool runs.
    pub namespace: String,
    /// The pool's name, as `actors.pools` / a namespace's `pools` map names.
    pub pool: String,
    /// The function's base URL: `https://…` (TLS, system roots) or
    /// `http://…`; the gateway calls `{url}/metadata` and `{url}/start`.
    pub url: String,
    /// Sent with every request to the function (a platform's bypass
    /// token, say). Names starting with `x-tether-` are the gateway's.
    pub headers: BTreeMap<String, String>,
    /// Runners of the pool started and not yet retired, at most.
    #[serde(deserialize_with = "positive_u32")]
    pub max_runners: u32,
    /// How long the platform lets one `/start` request live.
    #[serde(deserialize_with = "positive_duration", serialize_with = "secs")]
    pub request_lifespan: Duration,
    /// The runner is drained this long before its lifespan ends, so its
    /// actors have moved before the platform kills it.
    #[serde(deserialize_with = "duration", serialize_with = "secs")]
    pub drain_grace: Duration,
    /// Actors placed on one started runner at most.
    #[serde(deserialize_with = "positive_u32")]
    pub slots_per_runner: u32,
    /// Runners kept started with no actor (0: the pool scales to zero).
    pub min_idle_runners: u32,
    /// A started runner must have registered within this, or the start
    /// failed.
    #[serde(deserialize_with = "positive_duration", serialize_with = "secs")]
    pub start_timeout: Duration,
    /// The runner listener's URL the function dials (`ws://…`/`wss://…`);
    /// empty: derived from `runners.listen` (wss when it has TLS).
    pub gateway_url: String,
    /// Which runner token the function is given: a `[[runners.identities]]`
    /// name (default namespace) or a namespace's `runners` entry name;
    /// empty: `runners.token` in the default namespace, the namespace's
    /// first runner entry allowed in the pool elsewhere.
    pub runner: String,
    /// Where the pool was set (not a key of the file or the API's JSON).
    #[serde(skip)]
    pub source: PoolSource,
}

/// Where a serverless pool was set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolSource {
    /// The configuration file (it wins over the API).
    #[default]
    File,
    /// The admin API (kept in `admin.state_file`).
    Api,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{}ms", d.as_millis()))
}

impl Default for ServerlessPool {
    fn default() -> Self {
        ServerlessPool {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            pool: String::new(),
            url: String::new(),
            headers: BTreeMap::new(),
            max_runners: 10,
            request_lifespan: Duration::from_secs(300),
            drain_grace: Duration::from_secs(30),
            slots_per_runner: 100,
            min_idle_runners: 0,
            start_timeout: Duration::from_secs(15),
            gateway_url: String::new(),
            runner: String::new(),
            source: PoolSource::File,
        }
    }
}

/// A function URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// The path prefix, without a trailing `/` (empty for the root).
    pub path: String,
}

impl FunctionUrl {
    pub fn parse(url: &str) -> Result<FunctionUrl, String> {
        if url.len() > MAX_URL_BYTES {
            return Err(format!("url is longer than {MAX_URL_BYTES} bytes"));
        }
        if url.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err("url holds a space or a control character".into());
        }
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("url `{url}` must start with https:// or http://"));
        };
        if rest.contains(['?', '#']) {
            return Err("url must not have a query or fragment".into());
        }
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.contains('@') {
            return Err("url must not carry credentials (use headers)".into());
        }
        let (host, port) = split_host_port(authority, if tls { 443 } else { 80 })?;
        Ok(FunctionUrl {
            tls,
            host,
            port,
            path: path.trim_end_matches('/').to_owned(),
        })
    }

    /// `host` or `host:port` as a `Host` header says it.
    pub fn authority(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            p if p == default => host,
            p => format!("{host}:{p}"),
        }
    }
}

fn split_host_port(authority: &str, default_port: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("url has an unclosed [")?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("url has no host".into());
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("url port `{p}` is not a port"))?,
    };
    Ok((host.to_owned(), port))
}

impl ServerlessPool {
    /// What is wrong with the pool on its own (each message names the pool).
    pub fn check(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let mut err = |m: String| errors.push(format!("serverless pool {}: {m}", self.label()));
        if !is_namespace_name(&self.namespace) {
            err(format!(
                "namespace `{}` is not a namespace name",
                self.namespace
            ));
        }
        if !is_namespace_name(&self.pool) {
            err("pool must be 1-64 letters, digits, `-` or `_`".into());
        }
        if let Err(e) = FunctionUrl::parse(&self.url) {
            err(e);
        }
        if let Err(e) = check_headers(&self.headers) {
            err(e);
        }
        if self.drain_grace >= self.request_lifespan {
            err("drain_grace must be shorter than request_lifespan".into());
        }
        if self.max_runners > MAX_RUNNERS_PER_POOL {
            err(format!(
                "max_runners must be at most {MAX_RUNNERS_PER_POOL}"
            ));
        }
        if self.min_idle_runners > self.max_runners {
            err("min_idle_runners must not exceed max_runners".into());
        }
        let gw = &self.gateway_url;
        if !(gw.is_empty() || gw.starts_with("ws://") || gw.starts_with("wss://")) {
            err("gateway_url must start with ws:// or wss://".into());
        }
        errors
    }

    /// `namespace/pool`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.namespace, self.pool)
    }
}

fn check_headers(headers: &BTreeMap<String, String>) -> Result<(), String> {
    if headers.len() > MAX_POOL_HEADERS {
        return Err(format!("more than {MAX_POOL_HEADERS} headers"));
    }
    let bytes: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_POOL_HEADER_BYTES {
        return Err(format!("headers larger than {MAX_POOL_HEADER_BYTES} bytes"));
    }
    for (name, value) in headers {
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(token) {
            return Err(format!("header name `{name}` is not a token"));
        }
        if name.to_ascii_lowercase().starts_with("x-tether-")
            || ["host", "content-length", "transfer-encoding", "connection"]
                .contains(&name.to_ascii_lowercase().as_str())
        {
            return Err(format!("header `{name}` is set by the gateway"));
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(format!("header `{name}` has a CR, LF or NUL in its value"));
        }
    }
    Ok(())
}

/// Pools of the file and of the API together: the file's win where both
/// name the same namespace and pool. Each keeps its source.
pub fn merge_pools(file: &[ServerlessPool], api: &[ServerlessPool]) -> Vec<ServerlessPool> {
    let mut all: Vec<ServerlessPool> = file
        .iter()
        .filter(|p| p.source == PoolSource::File)
        .cloned()
        .collect();
    let shadowed = |p: &ServerlessPool| {
        all.iter()
            .any(|f| f.namespace == p.namespace && f.pool == p.pool)
    };
    let from_api: Vec<ServerlessPool> = api
        .iter()
        .filter(|p| !shadowed(p))
        .map(|p| ServerlessPool {
            source: PoolSource::Api,
            ..p.clone()
        })
        .collect();
    all.extend(from_api);
    all
}

/// Errors of a list of pools: each pool's own, and a pool named twice.
pub fn check_pools(pools: &[ServerlessPool]) -> Vec<String> {
    let mut errors: Vec<String> = pools.iter().flat_map(ServerlessPool::check).collect();
    for (i, p) in pools.iter().enumerate() {
        if pools[..i]
            .iter()
            .any(|q| q.namespace == p.namespace && q.pool == p.pool)
        {
            errors.push(format!("serverless pool {} is configured twice", p.label()));
        }
    }
    if pools.len() > MAX_SERVERLESS_POOLS {
        errors.push(format!("more than {MAX_SERVERLESS_POOLS} serverless pools"));
    }
    errors
}

/// The runner credentials a pool's function is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRunner {
    pub token: String,
    /// The runner keys the gateway assigns start with this.
    pub key_prefix: String,
}

impl super::Config {
    /// Whether `pool`'s function gets one of the gateway's own runner
    /// tokens (`runners.token`, `[[runners.identities]]`): the default
    /// namespace without runner tokens of its own. Only `admin.token` may
    /// make such a pool through the API.
    pub fn uses_gateway_runner_tokens(&self, pool: &ServerlessPool) -> bool {
        let explicit = self.namespaces.iter().find(|n| n.name == pool.namespace);
        pool.namespace == DEFAULT_NAMESPACE && explicit.is_none_or(|n| n.runners.is_empty())
    }

    /// Which token the function of `pool` registers its runner with: the
    /// one `runner` names, or the default (see [`ServerlessPool::runner`]).
    pub fn pool_runner(&self, pool: &ServerlessPool) -> Result<PoolRunner, String> {
        let allows = |pools: &[String]| pools.is_empty() || pools.contains(&pool.pool);
        let unprefixed = |token: &str| PoolRunner {
            token: token.to_owned(),
            key_prefix: String::new(),
        };
        let explicit = self.namespaces.iter().find(|n| n.name == pool.namespace);
        if self.uses_gateway_runner_tokens(pool) {
            if pool.runner.is_empty() || pool.runner == "default" {
                return Ok(unprefixed(&self.runners.token));
            }
            let id = self
                .runners
                .identities
                .iter()
                .find(|i| i.name == pool.runner);
            return match id {
                Some(i) if allows(&i.pools) => Ok(unprefixed(&i.token)),
                Some(_) => Err(format!(
                    "runner identity {} may not register in pool {}",
                    pool.runner, pool.pool
                )),
                None => Err(format!("no runner identity named {}", pool.runner)),
            };
        }
        let ns = explicit.ok_or_else(|| format!("no namespace named {}", pool.namespace))?;
        let entry = ns
            .runners
            .iter()
            .find(|r| (pool.runner.is_empty() || r.name == pool.runner) && allows(&r.pools));
        match entry {
            Some(r) => Ok(PoolRunner {
                token: r.token.clone(),
                key_prefix: r.key_prefix.clone(),
            }),
            None => Err(format!(
                "namespace {} has no runner token {}allowed in pool {}",
                ns.name,
                if pool.runner.is_empty() {
                    String::new()
                } else {
                    format!("named {} ", pool.runner)
                },
                pool.pool
            )),
        }
    }

    /// This configuration with the API's pools `api` added where the file
    /// does not name the same pool (see [`merge_pools`]). An API pool that
    /// no longer fits the file (its namespace or runner token is gone) is
    /// left out, with why.
    pub fn with_api_pools(mut self, api: &[ServerlessPool]) -> (Self, Vec<String>) {
        let mut left_out = Vec::new();
        let fitting: Vec<ServerlessPool> = api
            .iter()
            .filter(|p| match self.pool_runner(p) {
                Ok(_) => true,
                Err(e) => {
                    left_out.push(format!("serverless pool {} (admin API): {e}", p.label()));
                    false
                }
            })
            .cloned()
            .collect();
        self.serverless = merge_pools(&self.serverless, &fitting);
        (self, left_out)
    }

    /// Errors of the serverless pools: each pool's own, twins, and pools
    /// whose namespace or runner token does not exist.
    pub(super) fn serverless_errors(&self) -> Vec<String> {
        let mut errors = check_pools(&self.serverless);
        for p in &self.serverless {
            if let Err(e) = self.pool_runner(p) {
                errors.push(format!("serverless pool {}: {e}", p.label()));
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(url: &str) -> ServerlessPool {
        ServerlessPool {
            pool: "fn".into(),
            url: url.into(),
            ..Default::default()
        }
    }

    #[test]
    fn urls_are_taken_apart() {
        let u = FunctionUrl::parse("https://fn.example.com/api/tether/").unwrap();
        assert_eq!((u.tls, u.port, u.path.as_str()), (true, 443, "/api/tether"));
        assert_eq!(u.authority(), "fn.example.com");
        let u = FunctionUrl::parse("http://127.0.0.1:9000").unwrap();
        assert_eq!((u.tls, u.port, u.path.as_str()), (false, 9000, ""));
        assert_eq!(u.authority(), "127.0.0.1:9000");
        let u = FunctionUrl::parse("http://[::1]:80/x").unwrap();
        assert_eq!((u.host.as_str(), u.authority()), ("::1", "[::1]".into()));
        for bad in [
            "ftp://x",
            "http://",
            "http://:80",
            "http://h:0",
            "http://h:99999",
            "http://u:p@h",
            "http://h/a?b",
            "http://h/a b",
            "http://[::1",
        ] {
            assert!(FunctionUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_pool_is_checked_whole() {
        assert!(pool("http://127.0.0.1:9000").check().is_empty());
        let mut p = pool("http://h");
        p.drain_grace = p.request_lifespan;
        p.min_idle_runners = 11;
        p.headers.insert("x-tether-token".into(), "t".into());
        p.pool = "a/b".into();
        let errors = p.check();
        assert_eq!(errors.len(), 4, "{errors:?}");
        let mut p = pool("http://h");
        p.headers.insert("x-bypass".into(), "a\r\nb".into());
        assert!(p.check()[0].contains("CR"), "{:?}", p.check());
    }

    #[test]
    fn the_file_wins_over_the_api_and_twins_are_refused() {
        let file = [pool("http://file")];
        let api = [pool("http://api"), {
            let mut p = pool("http://api2");
            p.pool = "other".into();
            p
        }];
        let all = merge_pools(&file, &api);
        assert_eq!(all.len(), 2);
        assert_eq!(
            (all[0].url.as_str(), all[0].source),
            ("http://file", PoolSource::File)
        );
        assert_eq!(
            (all[1].pool.as_str(), all[1].source),
            ("other", PoolSource::Api)
        );
        assert_eq!(
            merge_pools(&all, &api),
            all,
            "merging again changes nothing"
        );
        let twice = [pool("http://a"), pool("http://b")];
        assert!(check_pools(&twice)[0].contains("twice"));
    }

    #[test]
    fn the_function_gets_the_token_the_pool_names() {
        let text = "[[runners.identities]]\nname = \"fns\"\ntoken = \"t-fns\"\npools = [\"fn\"]\n\n[[serverless]]\npool = \"fn\"\nurl = \"http://127.0.0.1:9\"\nrunner = \"fns\"\n";
        let config = super::super::Config::parse(text).unwrap();
        let runner = config.pool_runner(&config.serverless[0]).unwrap();
        assert_eq!(runner.token, "t-fns");
        let config = super::super::Config::parse(&text.replace("runner = \"fns\"", "")).unwrap();
        let runner = config.pool_runner(&config.serverless[0]).unwrap();
        assert_eq!(runner.token, super::super::DEV_RUNNER_TOKEN);
        let errors =
            super::super::Config::parse(&text.replace("runner = \"fns\"", "runner = \"nobody\""))
                .unwrap_err();
        assert!(
            errors[0]
                .message
                .contains("no runner identity named nobody"),
            "{errors:?}"
        );
        let errors = super::super::Config::parse(&text.replace("namespace", "x").replace(
            "pool = \"fn\"\nurl",
            "namespace = \"acme\"\npool = \"fn\"\nurl",
        ))
        .unwrap_err();
        assert!(
            errors[0].message.contains("no namespace named acme"),
            "{errors:?}"
        );
    }

    #[test]
    fn api_pools_join_unless_the_file_names_them_or_they_no_longer_fit() {
        let text = "[[serverless]]\npool = \"fn\"\nurl = \"http://file\"\n";
        let config = super::super::Config::parse(text).unwrap();
        let mut gone = pool("http://api3");
        gone.pool = "gone".into();
        gone.namespace = "acme".into();
        let api = [pool("http://api"), gone];
        let (merged, left_out) = config.with_api_pools(&api);
        assert_eq!(merged.serverless.len(), 1);
        assert_eq!(merged.serverless[0].url, "http://file");
        assert!(
            left_out[0].contains("no namespace named acme"),
            "{left_out:?}"
        );
    }

    #[test]
    fn a_pool_survives_a_round_trip_through_json() {
        let mut p = pool("https://fn.example.com");
        p.drain_grace = Duration::from_millis(1500);
        p.headers.insert("x-bypass".into(), "s".into());
        let json = serde_json::to_string(&p).unwrap();
        let back: ServerlessPool = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
    }
}
