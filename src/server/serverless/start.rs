//! One `/start` call, as a task on the runtime of the worker whose demand
//! made it: the request (with the pool's headers and the gateway's
//! `x-tether-*` ones), its answer within the start deadline, the runner's
//! registration within the same deadline, then the response body — SSE
//! keepalives — read and dropped until the function ends it (after the
//! gateway drained its runner, the runner library says `event: end` and
//! exits) or the request dies. A request that outlives its lifespan by
//! `OVERSTAY` is cut: the platform would have killed it by then; so is a
//! retiring runner's once every tunnel of it has been gone for `ORPHANED`
//! (a function that ignores the drain).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info};

use super::client::{call, headers_of, CallError};
use super::pools::{Lifetime, Outcome, Pools, StartJob};
use super::transport::within;

/// A `/start` request's body, in all, at most: keepalives for a long
/// lifespan are a few kilobytes; more is a function misbehaving, and its
/// request is cut (its runner then dies and its actors fail over).
const MAX_START_BODY: u64 = 1 << 20;
/// How long past its lifespan a request is kept before it is cut.
const OVERSTAY: Duration = Duration::from_secs(10);
/// How long a retiring runner's request is kept once every tunnel of it
/// is gone (the runner library ends it at once; a function ignoring the
/// drain would hold it until its lifespan).
const ORPHANED: Duration = Duration::from_secs(2);
/// How often a retiring runner's tunnels are looked at.
const ORPHAN_CHECK: Duration = Duration::from_millis(250);

/// Makes the start and reports how it went.
pub(crate) async fn run(pools: Arc<Pools>, job: StartJob) {
    let began = Instant::now();
    let outcome = start(&job, began).await;
    if let Outcome::Ended = outcome {
        info!(runner = %job.order.key, lived_ms = began.elapsed().as_millis() as u64, "serverless runner's request ended");
    }
    pools.finished(&job.lifetime, outcome, Instant::now());
}

async fn start(job: &StartJob, began: Instant) -> Outcome {
    let deadline = job.order.deadline;
    let headers = headers_of(&job.pool, &job.headers);
    debug!(runner = %job.order.key, url = %job.pool.url, "GET /start");
    let mut response = match call(&job.url, "/start", &headers, MAX_START_BODY, deadline).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let status = response.head.status;
    if !(200..300).contains(&status) {
        return Outcome::Failed(0, format!("GET {}/start answered {status}", job.pool.url));
    }
    if within(deadline, job.lifetime.registered()).await.is_none() {
        let why = format!(
            "the runner did not register within start_timeout ({:?})",
            job.pool.start_timeout
        );
        return Outcome::Failed(2, why);
    }
    let end = began + job.pool.request_lifespan + OVERSTAY;
    let body = async {
        while response.next_piece().await?.is_some() {}
        Ok::<(), CallError>(())
    };
    let orphaned = orphaned(&job.lifetime);
    let read = within(end, async {
        monoio::select! {
            read = body => Some(read),
            _ = orphaned => None,
        }
    })
    .await;
    match read {
        Some(Some(Ok(()))) => debug!(runner = %job.order.key, "the function ended /start"),
        Some(Some(Err(e))) => {
            debug!(runner = %job.order.key, error = %e, "the /start request died")
        }
        Some(None) => {
            info!(runner = %job.order.key, "retired runner's tunnels are gone and its function holds /start: cut")
        }
        None => debug!(runner = %job.order.key, "the /start request outlived its lifespan: cut"),
    }
    Outcome::Ended
}

/// Resolves once the runner is retiring and has had no tunnel for
/// `ORPHANED`: its request serves nothing any more.
async fn orphaned(lifetime: &Lifetime) {
    let mut since: Option<Instant> = None;
    loop {
        monoio::time::sleep(ORPHAN_CHECK).await;
        if !(lifetime.is_retiring() && lifetime.placed().is_none()) {
            since = None;
            continue;
        }
        let now = Instant::now();
        if now.saturating_duration_since(*since.get_or_insert(now)) >= ORPHANED {
            return;
        }
    }
}

fn failed(e: CallError) -> Outcome {
    Outcome::Failed(e.cause(), format!("GET /start: {e}"))
}
