//! One `/start` call, as a task on the runtime of the worker whose demand
//! made it: the request (with the pool's headers and the gateway's
//! `x-tether-*` ones), its answer within the start deadline, the runner's
//! registration within the same deadline, then the response body — SSE
//! keepalives — read and dropped until the function ends it (after the
//! gateway drained its runner, the runner library says `event: end` and
//! exits) or the request dies. A request that outlives its lifespan by
//! `OVERSTAY` is cut: the platform would have killed it by then.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info};

use super::client::{call, headers_of, CallError};
use super::pools::{Outcome, Pools, StartJob};
use super::transport::within;

/// A `/start` request's body, in all, at most: keepalives for a long
/// lifespan are a few kilobytes; more is a function misbehaving, and its
/// request is cut (its runner then dies and its actors fail over).
const MAX_START_BODY: u64 = 1 << 20;
/// How long past its lifespan a request is kept before it is cut.
const OVERSTAY: Duration = Duration::from_secs(10);

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
    let read = within(end, async {
        while response.next_piece().await?.is_some() {}
        Ok::<(), CallError>(())
    })
    .await;
    match read {
        Some(Ok(())) => debug!(runner = %job.order.key, "the function ended /start"),
        Some(Err(e)) => debug!(runner = %job.order.key, error = %e, "the /start request died"),
        None => debug!(runner = %job.order.key, "the /start request outlived its lifespan: cut"),
    }
    Outcome::Ended
}

fn failed(e: CallError) -> Outcome {
    Outcome::Failed(e.cause(), format!("GET /start: {e}"))
}
