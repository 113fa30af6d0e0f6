//! `/metrics`: every worker's counters, summed at scrape time, in the
//! Prometheus text format (0.0.4), encoded by `prometheus-client`.
//!
//! Workers count into their own `WorkerStats` (relaxed atomics, nothing
//! shared per message); a scrape reads them all. Each family below is a
//! `prometheus_client` collector that sums what it shows when the registry
//! is encoded, so nothing is kept between scrapes. The series:
//!
//! | series | type | labels | what |
//! |---|---|---|---|
//! | `tether_client_connections` | gauge | | client connections holding a place now (handshaking, active, hibernated) |
//! | `tether_handshakes_in_progress` | gauge | | client connections not yet upgraded |
//! | `tether_hibernated_connections` | gauge | | hibernated connections parked now |
//! | `tether_client_connections_accepted_total` | counter | | accepted on the client listener |
//! | `tether_handshakes_total` | counter | `status` | requests on the client listener answered, by status (`101`: upgraded; unlisted statuses: `other`) |
//! | `tether_client_closes_total` | counter | `code` | client WebSockets closed, by the first close frame's code (`1006`: lost without one; actor codes and unlisted ones: `other`) |
//! | `tether_connections_refused_total` | counter | `reason` | connections refused by a limit (its setting) or a failed TLS or PROXY handshake |
//! | `tether_handshakes_refused_total`, `tether_actor_creations_refused_total`, `tether_client_send_queue_overflows_total` | counter | | single limits, also under `reason` above (the last: clients closed 1008) |
//! | `tether_messages_total` | counter | `direction` | messages, `client_to_actor` (as they arrive) and `actor_to_client` (as queued for a client) |
//! | `tether_message_bytes_total` | counter | `direction` | their payload bytes |
//! | `tether_http_requests_total` | counter | `status` | HTTP requests to actors answered, by status (the actor's own, or the gateway's: 413, 431, 501 `no_http`, 502, 503, 504; unlisted: `other`) |
//! | `tether_http_body_bytes_total` | counter | `direction` | HTTP body bytes, `client_to_actor` (forwarded) and `actor_to_client` (written) |
//! | `tether_http_replays_total` | counter | | HTTP requests sent again to an actor's next runner after it moved (PROTOCOL §7b) |
//! | `tether_broadcasts_total` | counter | | `Broadcast` frames from runners (one per frame; each recipient's copy is also an `actor_to_client` message) |
//! | `tether_actors` | gauge | `state` | actors now: `placing`, `starting`, `running`, `stopping` (to sleep), `migrating` (stopping to move), `asleep` |
//! | `tether_actor_wake_latency_seconds` | histogram | | from a wake's trigger to the actor running again |
//! | `tether_actor_migration_pause_seconds` | histogram | | from a move's stop on the old runner to running on the next (drain, operator) |
//! | `tether_actor_migrations_total`, `tether_actor_failovers_total`, `tether_actor_crash_loop_restarts_total` | counter | | actor moves, restarts after a runner failed them, restarts while crash-looping |
//! | `tether_runners` | gauge | `namespace`, `pool` | runners with a tunnel up (a runner counts once, not once per worker) |
//! | `tether_worker_client_connections` | gauge | `worker` | client WebSockets each worker serves (active and hibernated) |
//! | `tether_worker_actors` | gauge | `worker` | actors each worker holds (any state) |
//! | `tether_worker_runner_tunnels` | gauge | `worker` | runner tunnels connected to each worker |
//! | `tether_reloads_total` | counter | `result` | SIGHUP reloads: `applied`, `invalid` (nothing changed) |
//! | `tether_serverless_runners` | gauge | `namespace`, `pool`, `phase` | runners the gateway started for a serverless pool: `starting`, `live`, `retiring` |
//! | `tether_serverless_waiting_actors` | gauge | `namespace`, `pool` | actors waiting for a runner of the pool |
//! | `tether_serverless_starts_total` | counter | `namespace`, `pool` | `GET /start` calls |
//! | `tether_serverless_start_failures_total` | counter | `namespace`, `pool`, `cause` | failed starts: `http`, `connect`, `timeout`, `protocol` |
//! | `tether_serverless_retirements_total` | counter | `namespace`, `pool`, `reason` | started runners ended: `lifespan` (drained before it), `idle`, `died` (request ended first) |
//! | `tether_serverless_runners_refused_total` | counter | `namespace`, `pool` | runner tunnels refused (close 4403): the hello's key is none of the pool's starts |
//! | `tether_upgrades_total` | counter | | 1 in a process that took over from an upgrade (SIGUSR2), else 0 |
//! | `tether_cluster_etcd_requests_total` | counter | `kind` | with `[cluster]`: requests to etcd by kind: `grant`, `keepalive`, `revoke`, `claim`, `release`, `leave`, `placed`, `runner_record`, `range`, `put`, `auth`, `watch_open` |
//! | `tether_cluster_lease_confirmed` | gauge | | with `[cluster]`: 1 while the node's lease is confirmed, 0 while it is fenced |

mod actors;
mod cluster;
mod families;
mod load;
mod serverless;
mod traffic;

use std::sync::Arc;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;

use super::AdminSide;
use crate::http::Status;
use crate::server::conn::reply::Refusal;
use crate::server::conn::stats::WorkerStats;

pub(super) fn answer(side: &AdminSide) -> Refusal {
    let headers = &[("Content-Type", prometheus_text::CONTENT_TYPE)];
    let mut text = String::new();
    match prometheus_text::encode(&mut text, &registry(side)) {
        Ok(()) => Refusal {
            status: Status::OK,
            headers,
            reason: text,
        },
        Err(e) => Refusal::new(Status::INTERNAL_ERROR, format!("cannot encode: {e}")),
    }
}

/// A registry of every family, over every worker's counters as they are.
/// Built per scrape: it holds only handles (and the runner count, read
/// under its lock once), so there is nothing to keep in step.
fn registry(side: &AdminSide) -> Registry {
    let workers = Workers(side.all_stats.clone());
    let mut registry = Registry::default();
    registry.register_collector(Box::new(families::Connections {
        workers: workers.clone(),
        open: side.admission.open() as u64,
    }));
    registry.register_collector(Box::new(families::Counters(workers.clone())));
    registry.register_collector(Box::new(traffic::Traffic(workers.clone())));
    registry.register_collector(Box::new(actors::Actors(workers.clone())));
    registry.register_collector(Box::new(load::Load {
        workers,
        runners: side.actors.runners_by_pool(),
        gateway: side.gateway_stats.clone(),
    }));
    let pools = side.actors.serverless_pools();
    registry.register_collector(Box::new(serverless::Serverless(pools)));
    if let Some(directory) = &side.directory {
        registry.register_collector(Box::new(cluster::Cluster::of(directory)));
    }
    registry
}

/// Every worker's counters.
#[derive(Debug, Clone)]
struct Workers(Arc<[Arc<WorkerStats>]>);

impl Workers {
    /// Each worker's counters, by worker id.
    fn each(&self) -> impl Iterator<Item = &WorkerStats> {
        self.0.iter().map(|s| &**s)
    }

    /// One value of every worker, summed.
    fn sum(&self, value: impl Fn(&WorkerStats) -> u64) -> u64 {
        self.each().map(value).sum()
    }
}
