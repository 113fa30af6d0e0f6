//! A pool's function asked what it is (`GET {url}/metadata`), when a
//! configuration is put in force: at start-up, on a reload, and by the
//! admin API for a pool it creates. A function that is missing,
//! unreachable or speaks another protocol refuses the configuration.

use std::time::{Duration, Instant};

use tracing::warn;

use super::client::call;
use crate::config::{Config, FunctionUrl, ServerlessPool};
use crate::http::serverless::{check_metadata, FunctionMetadata, MAX_METADATA_BYTES};

/// The longest a `/metadata` call may take (or the pool's start_timeout
/// if shorter).
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// What `pool`'s function answers on `/metadata`, checked; the error says
/// what is wrong (missing, unreachable, timeout, wrong protocol/version).
/// Runs on a monoio runtime (a worker's, or [`check_functions`]'s own).
pub async fn fetch_metadata(pool: &ServerlessPool) -> Result<FunctionMetadata, String> {
    let url = FunctionUrl::parse(&pool.url)?;
    let deadline = Instant::now() + pool.start_timeout.min(METADATA_TIMEOUT);
    let headers = super::client::headers_of(pool, &[]);
    let max = MAX_METADATA_BYTES as u64;
    let mut response = call(&url, "/metadata", &headers, max, deadline)
        .await
        .map_err(|e| format!("GET {}/metadata: {e}", pool.url))?;
    match response.head.status {
        200 => {}
        404 => {
            return Err(format!(
            "GET {}/metadata: 404: missing (is the url the base the runner handler is mounted at?)",
            pool.url
        ))
        }
        s => return Err(format!("GET {}/metadata answered {s}", pool.url)),
    }
    let body = super::transport::within(deadline, response.body())
        .await
        .ok_or_else(|| format!("GET {}/metadata: timeout reading the answer", pool.url))?
        .map_err(|e| format!("GET {}/metadata: {e}", pool.url))?;
    check_metadata(&body).map_err(|e| format!("{}/metadata: {e}", pool.url))
}

/// `fetch_metadata` from a thread with no runtime (start-up, the signal
/// thread on reload): on a temporary runtime of its own.
pub fn fetch_metadata_blocking(pool: &ServerlessPool) -> Result<FunctionMetadata, String> {
    check_pools_blocking(std::slice::from_ref(pool))
        .pop()
        .unwrap_or_else(|| Err("no answer".into()))
}

/// Every pool's function, asked at once on a temporary runtime.
fn check_pools_blocking(pools: &[ServerlessPool]) -> Vec<Result<FunctionMetadata, String>> {
    let runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build();
    let mut runtime = match runtime {
        Ok(r) => r,
        Err(e) => return vec![Err(format!("cannot build a runtime: {e}")); pools.len()],
    };
    runtime.block_on(async {
        let calls: Vec<_> = pools
            .iter()
            .cloned()
            .map(|p| monoio::spawn(async move { fetch_metadata(&p).await }))
            .collect();
        let mut answers = Vec::with_capacity(calls.len());
        for call in calls {
            answers.push(call.await);
        }
        answers
    })
}

/// Asks every serverless pool's function for its metadata: the first
/// failing pool refuses the configuration, named with why. Actor names the
/// configuration maps to a pool that its function does not offer are
/// logged as warnings (the function may be deployed after the gateway;
/// such an actor fails with `unknown_actor` until it is).
pub fn check_functions(config: &Config) -> Result<(), String> {
    if config.serverless.is_empty() {
        return Ok(());
    }
    let answers = check_pools_blocking(&config.serverless);
    let mut errors = Vec::new();
    for (pool, answer) in config.serverless.iter().zip(answers) {
        match answer {
            Err(e) => errors.push(format!("serverless pool {}: {e}", pool.label())),
            Ok(meta) => {
                for name in mapped_names(config, pool) {
                    if !meta.actor_names.contains(&name) {
                        warn!(pool = %pool.label(), actor = %name, offered = ?meta.actor_names, "the function of a serverless pool does not offer an actor mapped to it");
                    }
                }
            }
        }
    }
    match errors.is_empty() {
        true => Ok(()),
        false => Err(errors.join("; ")),
    }
}

/// Actor names the configuration maps to `pool` in its namespace.
fn mapped_names(config: &Config, pool: &ServerlessPool) -> Vec<String> {
    let ns = config.namespaces.iter().find(|n| n.name == pool.namespace);
    let map = match ns {
        Some(n) if pool.namespace != crate::config::DEFAULT_NAMESPACE || !n.pools.is_empty() => {
            &n.pools
        }
        _ => &config.actors.pools,
    };
    map.iter()
        .filter(|(_, p)| **p == pool.pool)
        .map(|(name, _)| name.clone())
        .collect()
}
