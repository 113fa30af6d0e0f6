//! Counters a worker publishes for tests, benchmarks and `/metrics`.
//!
//! Each worker writes only its own (relaxed atomics, never on a lock);
//! readers sum them over workers.

use std::sync::atomic::AtomicU64;

#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Connections accepted on this worker's client listener.
    pub accepted: AtomicU64,
    /// The OS thread id the worker runs on (gettid).
    pub thread_id: AtomicU64,
    /// Hibernated connections parked now (no task, no buffer, no timer).
    pub parked: AtomicU64,
    /// Actors moved off a runner on purpose (drain, operator).
    pub migrations: AtomicU64,
    /// Actors restarted elsewhere because their runner failed them.
    pub failovers: AtomicU64,
    /// Restarts of actors that were crash-looping at the time.
    pub crash_loop_restarts: AtomicU64,
    /// Clients closed with 1008 because they did not read what was sent.
    pub send_queue_overflows: AtomicU64,
    /// Client connections not yet upgraded (head or actor pending), now.
    pub handshakes: AtomicU64,
    /// Connections refused with 503 because `client.max_handshakes` were in progress.
    pub handshakes_refused: AtomicU64,
    /// Connections refused with 429: their address created too many actors.
    pub creations_refused: AtomicU64,
    /// Client connections refused on arrival, by [`Refused`](super::admission::Refused).
    pub refused_max_connections: AtomicU64,
    pub refused_per_address: AtomicU64,
    pub refused_rate: AtomicU64,
    /// Connections refused because their actor had `max_connections_per_actor`.
    pub refused_actor_full: AtomicU64,
    /// Tunnels refused: their identity had `max_tunnels_per_identity` open.
    pub tunnels_refused: AtomicU64,
    /// TLS connections whose handshake (or a record) failed before their
    /// request head: not TLS, no common version or cipher, a bad record.
    pub tls_failures: AtomicU64,
    /// New actors refused 503 `no_capacity`: every runner of the pool is
    /// full (its declared capacity or `runners.max_actors_per_runner`).
    pub no_capacity: AtomicU64,
    /// Runner tunnels connected to this worker now.
    pub tunnels: AtomicU64,
    /// Turns of the worker's loop, counted by a slow heartbeat task: the
    /// systemd watchdog is fed only while every worker's count moves.
    pub heartbeats: AtomicU64,
    /// Connections from a trusted balancer without a valid PROXY header.
    pub proxy_headers_refused: AtomicU64,
}

impl WorkerStats {
    /// The counter of connections refused for `why`.
    pub(crate) fn refused(&self, why: super::admission::Refused) -> &AtomicU64 {
        use super::admission::Refused;
        match why {
            Refused::Total => &self.refused_max_connections,
            Refused::PerAddress => &self.refused_per_address,
            Refused::Rate => &self.refused_rate,
        }
    }
}
