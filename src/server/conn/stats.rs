//! Counters a worker publishes for tests, benchmarks and `/metrics`.
//!
//! Each worker writes only its own (relaxed atomics, never on a lock);
//! readers sum them over workers. Counters touched per message live here
//! too, so the struct is aligned to a cache-line pair: two workers'
//! counters never share a line, and counting a message never contends
//! with another core.

use std::sync::atomic::AtomicU64;

use super::histogram::Histogram;
use super::tally::{slot_of, Tally};

/// Stands for every code a table does not list (its last entry).
pub const OTHER: u16 = 0;

/// Statuses a client's request on the client listener is answered with,
/// one series each (101: upgraded). A runner may refuse a connection with
/// any 4xx/5xx: unlisted ones are counted as `OTHER`.
pub const HANDSHAKE_STATUSES: [u16; 18] = [
    101, 200, 400, 401, 403, 404, 405, 408, 409, 413, 426, 429, 431, 500, 502, 503, 504, OTHER,
];

/// Statuses of HTTP requests forwarded to actors (PROTOCOL §7b), the
/// actor's own and the gateway's, one series each; unlisted: `OTHER`.
pub const HTTP_STATUSES: [u16; 24] = [
    200, 201, 204, 206, 301, 302, 304, 400, 401, 403, 404, 405, 408, 409, 413, 429, 431, 500, 501,
    502, 503, 504, 505, OTHER,
];

/// Close codes of client WebSockets, one series each; an actor's own codes
/// (4000–4999) and anything else unlisted are counted as `OTHER`.
pub const CLOSE_CODES: [u16; 14] = [
    1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013, OTHER,
];

/// How many states an actor can be in (`actors::ActorState`).
pub const ACTOR_STATES: usize = 6;

#[derive(Debug, Default)]
#[repr(align(128))]
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
    /// Messages from clients to their actors, and their payload bytes
    /// (counted once as they arrive, held or not; replays are not counted).
    pub messages_in: AtomicU64,
    pub bytes_in: AtomicU64,
    /// Messages queued for clients (from their actors, or published by an
    /// operator: once per connection), and their payload bytes.
    pub messages_out: AtomicU64,
    pub bytes_out: AtomicU64,
    /// `Broadcast` frames from runners for a live actor (one per frame,
    /// whatever its recipients; each recipient's copy is in `messages_out`):
    /// shows that a runner's fan-out took the one-frame path.
    pub broadcasts: AtomicU64,
    /// Requests on the client listener answered, by [`HANDSHAKE_STATUSES`] slot.
    pub handshake_results: Tally<{ HANDSHAKE_STATUSES.len() }>,
    /// HTTP requests to actors answered (response head written, or the
    /// gateway's own answer), by [`HTTP_STATUSES`] slot.
    pub http_results: Tally<{ HTTP_STATUSES.len() }>,
    /// HTTP body bytes forwarded: request bodies to actors, response
    /// bodies to clients (as written).
    pub http_bytes_in: AtomicU64,
    pub http_bytes_out: AtomicU64,
    /// HTTP requests sent again to an actor's next runner after a move.
    pub http_replays: AtomicU64,
    /// Client WebSockets closed, by [`CLOSE_CODES`] slot: the code of the
    /// first close frame (whoever sent it), 1006 if the connection ended
    /// without one.
    pub closes: Tally<{ CLOSE_CODES.len() }>,
    /// This worker's actors now, by state; each actor keeps its own count.
    pub actors: Tally<ACTOR_STATES>,
    /// Client WebSockets linked to this worker's actors now (active and
    /// hibernated): the worker's share of the clients.
    pub client_links: AtomicU64,
    /// From a wake's trigger (a message, a close or a new client for an
    /// asleep actor) to the actor running again.
    pub wake_latency: Histogram,
    /// From an actor being asked to stop on its runner for a move (drain,
    /// operator) to it running on the next one: how long its clients' messages
    /// were held.
    pub migration_pause: Histogram,
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

    /// A request on the client listener was answered with `status`.
    pub(crate) fn count_handshake(&self, status: u16) {
        self.handshake_results
            .add(slot_of(&HANDSHAKE_STATUSES, status));
    }

    /// An HTTP request to an actor was answered with `status`.
    pub(crate) fn count_http(&self, status: u16) {
        self.http_results.add(slot_of(&HTTP_STATUSES, status));
    }

    /// A client WebSocket closed with `code`.
    pub(crate) fn count_close(&self, code: u16) {
        self.closes.add(slot_of(&CLOSE_CODES, code));
    }
}

/// Counters of the process rather than of a worker: what the main thread
/// does (reloads, upgrades). Written there, read by `/metrics`.
#[derive(Debug, Default)]
pub struct GatewayStats {
    /// SIGHUP reloads of a valid file (what can change live was applied).
    pub reloads_applied: AtomicU64,
    /// SIGHUP reloads of a file that did not read or parse: nothing changed.
    pub reloads_invalid: AtomicU64,
    /// Upgrades of the running gateway to a new binary.
    pub upgrades: AtomicU64,
}
