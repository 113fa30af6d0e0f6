//! `/metrics`: every worker's counters, summed, in Prometheus text format.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::http::Status;
use crate::server::conn::reply::Refusal;
use crate::server::conn::stats::WorkerStats;

pub(super) fn answer(stats: &[Arc<WorkerStats>], open_connections: usize) -> Refusal {
    let headers = &[("Content-Type", "text/plain; version=0.0.4")];
    let mut text = render(stats);
    text.push_str(&render_refusals(stats));
    let name = "tether_client_connections";
    text.push_str(&format!(
        "# HELP {name} Client connections open now (handshaking, active and hibernated).\n# TYPE {name} gauge\n{name} {open_connections}\n"
    ));
    Refusal {
        status: Status::OK,
        headers,
        reason: text,
    }
}

/// A worker counter, read by a series.
type Counter = fn(&WorkerStats) -> &AtomicU64;

/// Connections refused by a limit, one series per limit (`reason`).
const REFUSALS: &[(&str, Counter)] = &[
    ("max_connections", |s| &s.refused_max_connections),
    ("max_connections_per_address", |s| &s.refused_per_address),
    ("new_per_second_per_address", |s| &s.refused_rate),
    ("max_connections_per_actor", |s| &s.refused_actor_full),
    ("max_handshakes", |s| &s.handshakes_refused),
    ("new_actors_per_address", |s| &s.creations_refused),
    ("max_tunnels_per_identity", |s| &s.tunnels_refused),
    ("trusted_proxies", |s| &s.proxy_headers_refused),
    ("tls_handshake", |s| &s.tls_failures),
    ("no_capacity", |s| &s.no_capacity),
];

fn render_refusals(stats: &[Arc<WorkerStats>]) -> String {
    let name = "tether_connections_refused_total";
    let mut out = format!(
        "# HELP {name} Connections (client, or runner tunnels) refused: by a limit (its setting), a TLS handshake that failed (tls_handshake), or a trusted balancer without a valid PROXY header (trusted_proxies).\n# TYPE {name} counter\n"
    );
    for (reason, counter) in REFUSALS {
        let value: u64 = stats
            .iter()
            .map(|s| counter(s).load(Ordering::Relaxed))
            .sum();
        out.push_str(&format!("{name}{{reason=\"{reason}\"}} {value}\n"));
    }
    out
}

/// One series per worker counter: name, type, help, and the counter.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&WorkerStats) -> &AtomicU64,
);

const SERIES: &[Series] = &[
    (
        "tether_client_connections_accepted_total",
        "counter",
        "Connections accepted on the client listener.",
        |s| &s.accepted,
    ),
    (
        "tether_hibernated_connections",
        "gauge",
        "Hibernated connections parked now (no task, buffer or timer).",
        |s| &s.parked,
    ),
    (
        "tether_actor_migrations_total",
        "counter",
        "Actors moved off a runner on purpose (drain, operator).",
        |s| &s.migrations,
    ),
    (
        "tether_actor_failovers_total",
        "counter",
        "Actors restarted elsewhere because their runner failed them.",
        |s| &s.failovers,
    ),
    (
        "tether_actor_crash_loop_restarts_total",
        "counter",
        "Restarts of actors that were crash-looping (3+ failures in a row).",
        |s| &s.crash_loop_restarts,
    ),
    (
        "tether_client_send_queue_overflows_total",
        "counter",
        "Clients closed with 1008 because they did not read (client.max_send_queue_bytes).",
        |s| &s.send_queue_overflows,
    ),
    (
        "tether_handshakes_in_progress",
        "gauge",
        "Client connections not yet upgraded (sending their head or waiting for their actor).",
        |s| &s.handshakes,
    ),
    (
        "tether_handshakes_refused_total",
        "counter",
        "Connections refused with 503: client.max_handshakes were in progress on their worker.",
        |s| &s.handshakes_refused,
    ),
    (
        "tether_actor_creations_refused_total",
        "counter",
        "Connections refused with 429: their client address created too many new actors.",
        |s| &s.creations_refused,
    ),
];

fn render(stats: &[Arc<WorkerStats>]) -> String {
    let mut out = String::new();
    for (name, kind, help, counter) in SERIES {
        let value: u64 = stats
            .iter()
            .map(|s| counter(s).load(Ordering::Relaxed))
            .sum();
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    }
    out
}
