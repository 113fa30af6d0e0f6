//! Serverless pools, the gateway's side (issue 15): runners the gateway
//! starts itself by calling a function's `GET {url}/start`, and retires
//! before the platform's lifespan kills them.
//!
//! - `core`: one pool's decisions (starts for the demand, retirements,
//!   backoff), sans-IO, time a parameter.
//! - `pools`: every pool's core behind one mutex shared by all workers,
//!   and each started runner's `Lifetime` (registered? retiring?).
//! - `start`: the `/start` call, a task on the calling worker's runtime.
//! - `client`, `transport`: the function client (HTTP/1.1 over TCP or
//!   rustls on monoio; the sans-IO part is `http::client`).
//! - `metadata`: `GET {url}/metadata` when a configuration is put in force.
//!
//! The actors layer (above) reports demand and tunnels, and drains the
//! tunnels of retiring runners (`actors/serverless.rs`).

mod client;
mod core;
mod metadata;
mod pools;
mod start;
mod transport;

use std::sync::Arc;

pub use metadata::{check_functions, fetch_metadata, fetch_metadata_blocking};
pub(crate) use pools::{Lifetime, PoolKey, PoolView, Pools, StartJob};

pub(crate) use self::core::FAILURE_CAUSES;

/// Makes `job`'s start as a task on this thread's runtime.
pub(crate) fn spawn_start(pools: &Arc<Pools>, job: StartJob) {
    monoio::spawn(start::run(pools.clone(), job));
}
