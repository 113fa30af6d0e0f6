//! Tether's load-testing harness: real WebSocket clients on monoio, thread
//! per core, sequence-checked messages, chaos (kill -9, drain, hibernation),
//! and a report in words, JSON and SVG. See loadtest/README.md.

pub mod check;
pub mod client;
pub mod flood;
pub mod metrics;
pub mod net;
pub mod payload;
pub mod plan;
pub mod plot;
pub mod procstat;
pub mod report;
pub mod run;
pub mod runners;
pub mod scenario;
pub mod stats;
pub mod transport;
pub mod wsclient;
