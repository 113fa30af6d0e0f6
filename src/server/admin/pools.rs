//! Serverless pools on the admin API (issue 15):
//!
//! - `GET /serverless`: every pool (a namespace's access token sees its own).
//! - `GET /serverless/{pool}`, `/ns/{ns}/serverless/{pool}`: one pool.
//! - `PUT` there, a JSON body of the pool's keys as in `[[serverless]]`
//!   (`namespace` and `pool` come from the path): creates (201) or replaces
//!   (200) an API pool, once the function's `/metadata` answered right
//!   (else 422 with why). The pool is kept in `admin.state_file`.
//! - `DELETE` there: removes an API pool (200; 404 if there is none).
//!
//! A pool the configuration file sets cannot be changed here (409): the
//! file wins. Without `admin.state_file` nothing can be changed (503), nor
//! during an upgrade (503). A namespace's access token may not make a pool
//! whose function would get the gateway's own runner tokens (the default
//! namespace without `[[namespaces.runners]]`): 403. At most 64 API pools
//! per namespace and 1,000 runners per pool. Header values are never
//! shown: they are often a platform's secrets; the state file is readable
//! by the gateway's user only.
//!
//! A change writes a file, may call the function and waits until every
//! worker runs on the new configuration: it runs on a thread of its own
//! (`PoolChanges`, given by the runtime), one change at a time gateway-wide
//! (another meanwhile: 503), while this worker goes on serving.

use bytes::BytesMut;
use serde::Serialize;
use tracing::info;

use super::auth::Caller;
use super::body::read_body;
use super::handlers::Asker;
use super::route::PoolPath;
use super::AdminSide;
use crate::config::{Config, PoolSource, ServerlessPool};
use crate::http::{RequestHead, Status};
use crate::server::conn::reply::Refusal;
use crate::server::conn::stream::Stream;
use crate::server::conn::thread_slot::thread_slot;

/// The largest pool body the API reads.
pub const MAX_POOL_BODY_BYTES: usize = 64 * 1024;

/// Changes to the API's pools, made by the runtime off the worker.
pub(crate) trait PoolChanges: Send + Sync {
    /// Puts `pool` (checked against the configuration) in force and in
    /// the state file. Blocks.
    fn put(&self, pool: ServerlessPool) -> Result<PoolPut, PoolRefusal>;
    /// Removes the API's pool `ns`/`pool`. Blocks.
    fn delete(&self, ns: &str, pool: &str) -> Result<(), PoolRefusal>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PoolPut {
    Created,
    Replaced,
}

/// Why a change was not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PoolRefusal {
    /// `admin.state_file` is not set. 503
    NoStateFile,
    /// The configuration file sets this pool. 409
    SetInFile,
    /// No API pool by that name. 404
    NotFound,
    /// The function's `/metadata` is missing, unreachable or wrong, or
    /// the gateway keeps as many pools as it may. 422
    Refused(String),
    /// Another change is being made. 503
    Busy,
    /// The gateway is handing over to a new process of itself. 503
    Upgrading,
    /// A namespace's access token asked for a pool that would hand out
    /// the gateway's own runner tokens. 403
    NotYours,
    /// The state file could not be written, or the workers did not take
    /// the change in time. 500
    Failed(String),
}

impl PoolRefusal {
    fn answer(self) -> Refusal {
        let (status, reason) = match self {
            PoolRefusal::NoStateFile => (
                Status::SERVICE_UNAVAILABLE,
                "admin.state_file is not set: a pool made here would not survive a restart"
                    .to_owned(),
            ),
            PoolRefusal::SetInFile => (
                Status::CONFLICT,
                "the configuration file sets this pool, and the file wins: change it there"
                    .to_owned(),
            ),
            PoolRefusal::NotFound => (Status::NOT_FOUND, "no such pool".to_owned()),
            PoolRefusal::Refused(why) => (Status::UNPROCESSABLE, format!("pool refused: {why}")),
            PoolRefusal::Busy => (
                Status::SERVICE_UNAVAILABLE,
                "another pool change is being made: try again".to_owned(),
            ),
            PoolRefusal::Upgrading => (
                Status::SERVICE_UNAVAILABLE,
                "the gateway is upgrading: try again in a second".to_owned(),
            ),
            PoolRefusal::NotYours => (
                Status::FORBIDDEN,
                "only admin.token may make a pool whose function gets the gateway's own runner tokens (runners.token, [[runners.identities]]): give the namespace [[namespaces.runners]] of its own".to_owned(),
            ),
            PoolRefusal::Failed(why) => (Status::INTERNAL_ERROR, why),
        };
        Refusal::new(status, reason)
    }
}

/// `GET /serverless`.
pub(super) fn list(side: &AdminSide, namespace: Option<&str>) -> Refusal {
    let config = side.env.config();
    let pools: Vec<PoolView> = config
        .serverless
        .iter()
        .filter(|p| namespace.is_none_or(|ns| p.namespace == ns))
        .map(PoolView::of)
        .collect();
    #[derive(Serialize)]
    struct Pools<'a> {
        serverless: Vec<PoolView<'a>>,
    }
    Refusal::json(Status::OK, &Pools { serverless: pools })
}

/// `GET`, `PUT` or `DELETE` on one pool.
pub(super) async fn answer(
    side: &AdminSide,
    stream: &mut Stream,
    buf: &mut BytesMut,
    head: &RequestHead,
    path: &PoolPath,
    by: &Asker<'_>,
) -> Option<Refusal> {
    match head.method.as_str() {
        "PUT" => put(side, stream, buf, head, path, by).await,
        "DELETE" => Some(delete(side, path, by).await),
        _ => Some(show(side, path)),
    }
}

fn show(side: &AdminSide, path: &PoolPath) -> Refusal {
    let config = side.env.config();
    match config.serverless_pool(&path.ns, &path.pool) {
        Some(pool) => Refusal::json(Status::OK, &PoolView::of(pool)),
        None => PoolRefusal::NotFound.answer(),
    }
}

async fn put(
    side: &AdminSide,
    stream: &mut Stream,
    buf: &mut BytesMut,
    head: &RequestHead,
    path: &PoolPath,
    by: &Asker<'_>,
) -> Option<Refusal> {
    let limit = (MAX_POOL_BODY_BYTES, "64 KiB");
    let body = match read_body(side, stream, buf, head, limit).await {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let config = side.env.config();
    let pool = match checked_pool(&config, path, &body) {
        Ok(pool) => pool,
        Err(why) => return Some(Refusal::new(Status::BAD_REQUEST, why)),
    };
    if *by.caller != Caller::Admin && config.uses_gateway_runner_tokens(&pool) {
        return Some(PoolRefusal::NotYours.answer());
    }
    drop(config);
    let label = pool.label();
    let url = pool.url.clone();
    let changes = side.pool_changes.clone();
    let outcome = off_the_worker(side, move || changes.put(pool)).await;
    Some(match outcome {
        Ok(put) => {
            info!(by = %by.caller, peer = %by.peer, pool = %label, %url, ?put, "admin: serverless pool set");
            let status = match put {
                PoolPut::Created => Status::CREATED,
                PoolPut::Replaced => Status::OK,
            };
            match side.env.config().serverless_pool(&path.ns, &path.pool) {
                Some(now) => Refusal::json(status, &PoolView::of(now)),
                None => Refusal::new(status, "set"),
            }
        }
        Err(refusal) => refusal.answer(),
    })
}

async fn delete(side: &AdminSide, path: &PoolPath, by: &Asker<'_>) -> Refusal {
    let changes = side.pool_changes.clone();
    let (ns, pool) = (path.ns.clone(), path.pool.clone());
    match off_the_worker(side, move || changes.delete(&ns, &pool)).await {
        Ok(()) => {
            info!(by = %by.caller, peer = %by.peer, namespace = %path.ns, pool = %path.pool, "admin: serverless pool removed");
            #[derive(Serialize)]
            struct Deleted<'a> {
                deleted: &'a str,
            }
            Refusal::json(
                Status::OK,
                &Deleted {
                    deleted: &path.pool,
                },
            )
        }
        Err(refusal) => refusal.answer(),
    }
}

/// The body as a pool of the path's namespace and name, checked as the
/// configuration file's pools are. The error lists every problem.
fn checked_pool(config: &Config, path: &PoolPath, body: &[u8]) -> Result<ServerlessPool, String> {
    let mut pool: ServerlessPool =
        serde_json::from_slice(body).map_err(|e| format!("not a serverless pool: {e}"))?;
    let given = |v: &str, default: &str| !v.is_empty() && v != default;
    if given(&pool.namespace, crate::config::DEFAULT_NAMESPACE) && pool.namespace != path.ns {
        return Err("the body names another namespace than the path".into());
    }
    if given(&pool.pool, "") && pool.pool != path.pool {
        return Err("the body names another pool than the path".into());
    }
    pool.namespace = path.ns.clone();
    pool.pool = path.pool.clone();
    pool.source = PoolSource::Api;
    let mut errors = pool.check();
    if let Err(e) = config.pool_runner(&pool) {
        errors.push(format!("serverless pool {}: {e}", pool.label()));
    }
    match errors.is_empty() {
        true => Ok(pool),
        false => Err(errors.join("; ")),
    }
}

/// Runs `change` on a thread of its own and waits for it without blocking
/// this worker (the `PoolChanges` make one change at a time, gateway-wide:
/// another meanwhile is 503). None during an upgrade: the new process has
/// read the state file already and would never see the change.
async fn off_the_worker<T: Send + 'static>(
    side: &AdminSide,
    change: impl FnOnce() -> Result<T, PoolRefusal> + Send + 'static,
) -> Result<T, PoolRefusal> {
    if side.actors.upgrading() {
        return Err(PoolRefusal::Upgrading);
    }
    let (slot, filler) = thread_slot();
    let thread = std::thread::Builder::new()
        .name("tether-pools".into())
        .spawn(move || filler.fill(change()));
    if let Err(e) = thread {
        return Err(PoolRefusal::Failed(format!("cannot start a thread: {e}")));
    }
    let failed = || Err(PoolRefusal::Failed("the change stopped half-way".into()));
    slot.wait().await.unwrap_or_else(failed)
}

/// What the API shows of a pool: everything but header values.
#[derive(Serialize)]
struct PoolView<'a> {
    namespace: &'a str,
    pool: &'a str,
    url: &'a str,
    header_names: Vec<&'a str>,
    max_runners: u32,
    request_lifespan_ms: u128,
    drain_grace_ms: u128,
    slots_per_runner: u32,
    min_idle_runners: u32,
    start_timeout_ms: u128,
    gateway_url: &'a str,
    runner: &'a str,
    source: PoolSource,
}

impl<'a> PoolView<'a> {
    fn of(p: &'a ServerlessPool) -> Self {
        PoolView {
            namespace: &p.namespace,
            pool: &p.pool,
            url: &p.url,
            header_names: p.headers.keys().map(String::as_str).collect(),
            max_runners: p.max_runners,
            request_lifespan_ms: p.request_lifespan.as_millis(),
            drain_grace_ms: p.drain_grace.as_millis(),
            slots_per_runner: p.slots_per_runner,
            min_idle_runners: p.min_idle_runners,
            start_timeout_ms: p.start_timeout.as_millis(),
            gateway_url: &p.gateway_url,
            runner: &p.runner,
            source: p.source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(pool: &str) -> PoolPath {
        PoolPath {
            ns: "default".into(),
            pool: pool.into(),
        }
    }

    #[test]
    fn a_body_becomes_the_paths_pool_or_says_everything_wrong() {
        let config = Config::default();
        let body = br#"{"url":"http://127.0.0.1:9","max_runners":3,"request_lifespan":"60s","drain_grace":"5s"}"#;
        let pool = checked_pool(&config, &path("fns"), body).unwrap();
        assert_eq!((pool.pool.as_str(), pool.max_runners), ("fns", 3));
        assert_eq!(pool.source, PoolSource::Api);
        let err = checked_pool(&config, &path("fns"), br#"{"url":"http://h","pool":"x"}"#);
        assert!(err.unwrap_err().contains("another pool"));
        let err = checked_pool(
            &config,
            &path("fns"),
            br#"{"url":"ftp://h","min_idle_runners":99}"#,
        )
        .unwrap_err();
        assert!(
            err.contains("http://") && err.contains("min_idle_runners"),
            "{err}"
        );
        let err = checked_pool(&config, &path("fns"), br#"{"url":"http://h","bogus":1}"#);
        assert!(err.unwrap_err().contains("unknown field"));
    }
}
