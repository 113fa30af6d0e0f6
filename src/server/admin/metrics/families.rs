//! The single-value families (and the refusals by reason), and the helpers
//! every family encodes with.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::Workers;
use crate::server::conn::stats::WorkerStats;

/// A worker counter, read by a series.
type Counter = fn(&WorkerStats) -> &AtomicU64;

fn load(counter: Counter) -> impl Fn(&WorkerStats) -> u64 {
    move |s| counter(s).load(Ordering::Relaxed)
}

/// Client connections now: holding a place, handshaking, hibernated.
#[derive(Debug)]
pub(super) struct Connections {
    pub workers: Workers,
    /// `client.max_connections` places taken (one count for all workers).
    pub open: u64,
}

impl Collector for Connections {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let help = "Client connections open now (handshaking, active and hibernated).";
        gauge(&mut e, "tether_client_connections", help, self.open)?;
        let help =
            "Client connections not yet upgraded (sending their head or waiting for their actor).";
        let handshaking = self.workers.sum(load(|s| &s.handshakes));
        gauge(&mut e, "tether_handshakes_in_progress", help, handshaking)?;
        let help = "Hibernated connections parked now (no task, buffer or timer).";
        let parked = self.workers.sum(load(|s| &s.parked));
        gauge(&mut e, "tether_hibernated_connections", help, parked)
    }
}

/// Counters with no label: name (without `_total`, which the encoder
/// adds), help, and the worker counter.
const COUNTERS: &[(&str, &str, Counter)] = &[
    (
        "tether_client_connections_accepted",
        "Connections accepted on the client listener.",
        |s| &s.accepted,
    ),
    (
        "tether_actor_migrations",
        "Actors moved off a runner on purpose (drain, operator).",
        |s| &s.migrations,
    ),
    (
        "tether_actor_failovers",
        "Actors restarted elsewhere because their runner failed them.",
        |s| &s.failovers,
    ),
    (
        "tether_actor_crash_loop_restarts",
        "Restarts of actors that were crash-looping (3+ failures in a row).",
        |s| &s.crash_loop_restarts,
    ),
    (
        "tether_broadcasts",
        "Broadcast frames from runners (one actor message for several connections; each copy is also in tether_messages_total).",
        |s| &s.broadcasts,
    ),
    (
        "tether_http_replays",
        "HTTP requests sent again to an actor's next runner after it moved (PROTOCOL 7b).",
        |s| &s.http_replays,
    ),
    (
        "tether_client_send_queue_overflows",
        "Clients closed with 1008 because they did not read (client.max_send_queue_bytes).",
        |s| &s.send_queue_overflows,
    ),
    (
        "tether_handshakes_refused",
        "Connections refused with 503: client.max_handshakes were in progress on their worker.",
        |s| &s.handshakes_refused,
    ),
    (
        "tether_actor_creations_refused",
        "Connections refused with 429: their client address created too many new actors.",
        |s| &s.creations_refused,
    ),
];

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

/// The unlabelled counters, and the refusals by reason.
#[derive(Debug)]
pub(super) struct Counters(pub Workers);

impl Collector for Counters {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        for (name, help, counter) in COUNTERS {
            self::counter(&mut e, name, help, self.0.sum(load(*counter)))?;
        }
        let refusals = REFUSALS
            .iter()
            .map(|(reason, counter)| ([("reason", *reason)], self.0.sum(load(*counter))));
        let help = "Connections (client, or runner tunnels) refused: by a limit (its setting), a TLS handshake that failed (tls_handshake), or a trusted balancer without a valid PROXY header (trusted_proxies).";
        let name = "tether_connections_refused";
        family(&mut e, MetricType::Counter, name, help, refusals)
    }
}

pub(super) fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let metric = ConstCounter::new(v);
    metric.encode(e.encode_descriptor(name, help, None, metric.metric_type())?)
}

pub(super) fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let metric = ConstGauge::new(v);
    metric.encode(e.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// A family of counters or gauges: one series per label set.
pub(super) fn family<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder,
    kind: MetricType,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut family = e.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in series {
        let mut metric = family.encode_family(&labels)?;
        match kind {
            MetricType::Counter => metric.encode_counter::<NoLabelSet, _, u64>(&value, None)?,
            _ => metric.encode_gauge(&value)?,
        }
    }
    Ok(())
}
