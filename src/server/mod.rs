//! The running gateway, in one-way layers (docs/ARCHITECTURE.md has the map).
//! Each module may use the ones listed after it, never one before it;
//! `tests/layers.rs` keeps that true.
//!
//! - `runtime`: worker threads and their run loop, accepting, routing a
//!   connection to the worker that must serve it, hand-offs, shutdown.
//! - `admin`: the operator API.
//! - `edge`: client connections: handshake, the client session, parking.
//! - `runners`: runner connections: handshake, hello, the tunnel session.
//! - `actors`: one worker's actors, their clients' links and their life.
//! - `tunnels`: one worker's runner tunnels.
//! - `conn`: what every connection shares: control, registry and timers,
//!   the WebSocket session loop, replies, IO, buffers.
//!
//! Below them, without IO: `ws`, `http`, `tunnel`, `config`.

pub(crate) mod actors;
pub(crate) mod admin;
pub(crate) mod conn;
pub(crate) mod edge;
pub(crate) mod peers;
pub(crate) mod runners;
pub(crate) mod runtime;
pub(crate) mod serverless;
pub(crate) mod tunnels;

pub use admin::{admin_route, AdminRoute};
pub use conn::stats::{GatewayStats, WorkerStats};
pub use runtime::upgrade::new::{Inheriting, TakingOver};
pub use runtime::upgrade::old::{NewBinary, UpgradeError, Upgraded, Upgrader};
pub use runtime::{driver, listener, notify, pidfile, signals};
pub use runtime::{Driver, Gateway, Reloader, Stopper};
pub use serverless::{check_functions, fetch_metadata, fetch_metadata_blocking};
