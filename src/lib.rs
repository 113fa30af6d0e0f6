//! Tether: an edge gateway that terminates client WebSockets and (in later
//! slices) multiplexes them over tunnels that runners dial out to.
//!
//! Protocol logic is sans-IO (`http`, `ws`); `server` owns threads and sockets.

pub mod allocator;
pub mod cluster;
pub mod config;
pub mod handover;
pub mod http;
pub mod logging;
pub mod runner;
pub mod server;
pub mod tls;
pub mod tunnel;
pub mod ws;

pub use config::Config;
pub use server::Gateway;
