//! A small blocking client of etcd's v3 JSON gateway: HTTP/1.1 (plain, or
//! TLS through rustls) with JSON bodies, keys and values in base64, int64s
//! as strings. The gRPC client crates need `protoc` to build; this needs
//! nothing beyond the Rust toolchain and the gateway's own HTTP/1.1
//! response reader.
//!
//! `request` builds bodies and `reply` parses answers, both without IO;
//! `conn` moves bytes over one `TcpStream`; `client` adds endpoint
//! failover, authentication and typed calls; `watch` reads a watch stream.

pub mod client;
pub mod conn;
pub mod reply;
pub mod request;
pub mod watch;

pub use client::{Client, Counters};
pub use reply::{Error, Kv, Lease, Range, TxnReply, WatchMessage};
