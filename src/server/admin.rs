//! The admin listener: operator endpoints. Every one but `/healthz`
//! needs `Authorization: Bearer <admin.token>` (none configured: 403).
//!
//! - `GET /healthz` → 200.
//! - `POST /actors/{name}/{key…}/publish[?conn=ID…]`: delivers the body as
//!   one message to every open connection of that actor — running or
//!   hibernated — without starting it. Body `text/*` (or no type) is a text
//!   message (must be UTF-8); `application/octet-stream` a binary one.
//!   Answers `{"delivered":N}`.
//! - `POST /actors/{name}/{key…}/migrate`: moves a running actor to another
//!   runner of its pool (its clients stay connected); answers when it runs
//!   there: `{"migrated":true,"actor":{…}}`, 409 if it is not running.
//! - `GET /metrics`: counters in Prometheus text format (summed over workers).
//! - `GET /actors/{name}/{key…}`: the actor's state, runner, connection
//!   count, failures in a row and whether it is crash-looping.
//! - `POST /runners/{key}/drain`: no new actors go to that runner; its
//!   actors move away one by one, and the runner is told when it may exit.
//!   Answers `{"runner":…,"tunnels":T,"moving":N}` at once.
//!
//! Actor requests are served by the actor's home worker; a drain visits
//! every worker, each draining its own tunnel of the runner.

use std::rc::Rc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use monoio::net::TcpStream;

use super::admin_route::{admin_route, AdminRoute};
use super::client::{actor_home, refuse, Refusal};
use super::handoff::{Handoff, Listener, Relay};
use super::io::{detach_fd, read_before, ReadOutcome};
use super::mux::MigrateOutcome;
use super::worker::Worker;
use crate::http::route::ActorPath;
use crate::http::{RequestHead, Status};
use crate::tunnel::MessageKind;

/// Serves an admin request whose head has been read (possibly on another
/// worker, with what earlier workers gathered in `relay`).
pub(crate) async fn admin_request(
    worker: Rc<Worker>,
    stream: TcpStream,
    buf: BytesMut,
    head: RequestHead,
    relay: Relay,
) {
    let Some(route) = admin_route(&head.target) else {
        return answer(&worker, stream, buf, Status::NOT_FOUND, &[], "no such path").await;
    };
    if head.method != route.method() {
        let allow: &'static [(&str, &str)] = match route.method() {
            "GET" => &[("Allow", "GET")],
            _ => &[("Allow", "POST")],
        };
        let reason = format!("use {}", route.method());
        return answer(
            &worker,
            stream,
            buf,
            Status::METHOD_NOT_ALLOWED,
            allow,
            &reason,
        )
        .await;
    }
    if route.needs_token() {
        let token = &worker.config.admin.token;
        if token.is_empty() {
            let reason = "admin.token is not configured: the admin API is disabled";
            return answer(&worker, stream, buf, Status(403), &[], reason).await;
        }
        if !head.bearer_is(token) {
            let headers = &[("WWW-Authenticate", "Bearer")];
            let reason = "missing or wrong admin token";
            return answer(&worker, stream, buf, Status::UNAUTHORIZED, headers, reason).await;
        }
    }
    let actor_home_of = |a: &ActorPath| actor_home(a, worker.worker_count);
    let (home, relay) = match &route {
        AdminRoute::Healthz | AdminRoute::Metrics => (worker.id, relay),
        AdminRoute::Actor(a) | AdminRoute::Publish(a) | AdminRoute::Migrate(a) => {
            (actor_home_of(a), relay)
        }
        AdminRoute::DrainRunner(key) => {
            let mut relay = relay;
            relay.visited += 1;
            if let Some(moving) = worker.mux.drain_runner(key) {
                relay.found += 1;
                relay.moving = relay.moving.saturating_add(moving as u32);
            }
            if usize::from(relay.visited) < worker.worker_count {
                ((worker.id + 1) % worker.worker_count, relay)
            } else {
                (worker.id, relay)
            }
        }
    };
    if home != worker.id {
        return hand_to(&worker, home, stream, buf, head, relay).await;
    }
    match route {
        AdminRoute::Healthz => answer(&worker, stream, buf, Status::OK, &[], "ok").await,
        AdminRoute::Metrics => {
            let body = metrics(&worker.all_stats);
            let headers = &[("Content-Type", "text/plain; version=0.0.4")];
            answer(&worker, stream, buf, Status::OK, headers, &body).await
        }
        AdminRoute::Publish(a) => publish(worker, stream, buf, head, a).await,
        AdminRoute::Migrate(a) => migrate(worker, stream, buf, a).await,
        AdminRoute::Actor(a) => match worker.mux.actor_status(&a.name, &a.key) {
            Some(json) => json_answer(&worker, stream, buf, Status::OK, &json).await,
            None => {
                let reason = "no such actor here (it never ran, or is gone)";
                answer(&worker, stream, buf, Status::NOT_FOUND, &[], reason).await
            }
        },
        AdminRoute::DrainRunner(key) => {
            if relay.found == 0 {
                let reason = format!("no runner with key {key} is connected");
                return answer(&worker, stream, buf, Status::NOT_FOUND, &[], &reason).await;
            }
            let json = format!(
                "{{\"runner\":{},\"tunnels\":{},\"moving\":{}}}",
                super::mux::json_string(&key),
                relay.found,
                relay.moving
            );
            json_answer(&worker, stream, buf, Status(202), &json).await
        }
    }
}

/// Counters of every worker, summed, in Prometheus text format.
fn metrics(stats: &[std::sync::Arc<super::worker::WorkerStats>]) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    let sum = |f: fn(&super::worker::WorkerStats) -> &AtomicU64| -> u64 {
        stats.iter().map(|s| f(s).load(Ordering::Relaxed)).sum()
    };
    let series: [(&str, &str, &str, u64); 5] = [
        (
            "tether_client_connections_accepted_total",
            "counter",
            "Connections accepted on the client listener.",
            sum(|s| &s.accepted),
        ),
        (
            "tether_hibernated_connections",
            "gauge",
            "Hibernated connections parked now (no task, buffer or timer).",
            sum(|s| &s.parked),
        ),
        (
            "tether_actor_migrations_total",
            "counter",
            "Actors moved off a runner on purpose (drain, operator).",
            sum(|s| &s.migrations),
        ),
        (
            "tether_actor_failovers_total",
            "counter",
            "Actors restarted elsewhere because their runner failed them.",
            sum(|s| &s.failovers),
        ),
        (
            "tether_actor_crash_loop_restarts_total",
            "counter",
            "Restarts of actors that were crash-looping (3+ failures in a row).",
            sum(|s| &s.crash_loop_restarts),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in series {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    }
    out
}

async fn hand_to(
    worker: &Rc<Worker>,
    to: usize,
    stream: TcpStream,
    buf: BytesMut,
    head: RequestHead,
    relay: Relay,
) {
    let Ok(fd) = detach_fd(stream) else { return };
    let handoff = Handoff {
        fd,
        head,
        leftover: buf,
        listener: Listener::Admin,
        relay,
    };
    if let Err(back) = worker.handoffs.send(to, handoff) {
        if let Ok(stream) = TcpStream::from_std(std::net::TcpStream::from(back.fd)) {
            let reason = "gateway overloaded";
            answer(
                worker,
                stream,
                back.leftover,
                Status::SERVICE_UNAVAILABLE,
                &[],
                reason,
            )
            .await;
        }
    }
}

async fn migrate(worker: Rc<Worker>, stream: TcpStream, buf: BytesMut, actor: ActorPath) {
    match worker.mux.migrate(&actor.name, &actor.key) {
        MigrateOutcome::NotFound => {
            let reason = "no such actor here (it never ran, or is gone)";
            answer(&worker, stream, buf, Status::NOT_FOUND, &[], reason).await
        }
        MigrateOutcome::NotRunning(state) => {
            let reason = format!("the actor is {state}: only a running actor can be moved");
            answer(&worker, stream, buf, Status(409), &[], &reason).await
        }
        MigrateOutcome::Moving(ready) => {
            let a = &worker.config.actors;
            let deadline = Instant::now() + a.stop_timeout + a.start_timeout;
            let status = worker.mux.actor_status(&actor.name, &actor.key);
            match ready.wait_until(deadline).await {
                Some(Ok(())) => {
                    let status = worker
                        .mux
                        .actor_status(&actor.name, &actor.key)
                        .or(status)
                        .unwrap_or_else(|| "null".into());
                    let json = format!("{{\"migrated\":true,\"actor\":{status}}}");
                    json_answer(&worker, stream, buf, Status::OK, &json).await
                }
                Some(Err(reason)) => {
                    let reason = format!("the actor could not be moved: {reason}");
                    answer(&worker, stream, buf, Status(502), &[], &reason).await
                }
                None => {
                    let reason = "the actor is still moving (see GET on the actor)";
                    answer(&worker, stream, buf, Status(504), &[], reason).await
                }
            }
        }
    }
}

async fn publish(
    worker: Rc<Worker>,
    mut stream: TcpStream,
    mut buf: BytesMut,
    head: RequestHead,
    actor: ActorPath,
) {
    let Some(length) = head
        .header("content-length")
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<usize>().ok())
    else {
        return answer(
            &worker,
            stream,
            buf,
            Status(411),
            &[],
            "Content-Length required",
        )
        .await;
    };
    if length > worker.config.client.max_message_bytes {
        return answer(
            &worker,
            stream,
            buf,
            Status(413),
            &[],
            "body larger than client.max_message_bytes",
        )
        .await;
    }
    let deadline = Instant::now() + worker.config.client.handshake_timeout;
    while buf.len() < length {
        let room = length - buf.len();
        let (outcome, b) = read_before(&mut stream, buf, room, deadline).await;
        buf = b;
        match outcome {
            ReadOutcome::Data(_) => {}
            ReadOutcome::TimedOut => {
                return answer(
                    &worker,
                    stream,
                    buf,
                    Status::REQUEST_TIMEOUT,
                    &[],
                    "body timed out",
                )
                .await
            }
            ReadOutcome::Eof | ReadOutcome::Failed(_) => return,
        }
    }
    let body: Bytes = buf.split_to(length).freeze();
    let binary = head
        .header("content-type")
        .is_some_and(|t| t.starts_with(b"application/octet-stream"));
    let kind = if binary {
        MessageKind::Binary
    } else if std::str::from_utf8(&body).is_ok() {
        MessageKind::Text
    } else {
        return answer(
            &worker,
            stream,
            buf,
            Status::BAD_REQUEST,
            &[],
            "a text message must be UTF-8 (send application/octet-stream for binary)",
        )
        .await;
    };
    let only: Vec<u64> = actor
        .query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.strip_prefix("conn="))
        .filter_map(|v| v.parse().ok())
        .collect();
    let delivered = worker
        .mux
        .publish(&actor.name, &actor.key, kind, body, &only);
    let json = format!("{{\"delivered\":{delivered}}}");
    json_answer(&worker, stream, buf, Status::OK, &json).await;
}

async fn json_answer(
    worker: &Rc<Worker>,
    stream: TcpStream,
    scratch: BytesMut,
    status: Status,
    json: &str,
) {
    let headers = &[("Content-Type", "application/json")];
    answer(worker, stream, scratch, status, headers, json).await;
}

async fn answer(
    worker: &Rc<Worker>,
    stream: TcpStream,
    scratch: BytesMut,
    status: Status,
    headers: &'static [(&'static str, &'static str)],
    body: &str,
) {
    refuse(
        worker,
        stream,
        scratch,
        Refusal {
            status,
            headers,
            reason: body.to_owned(),
        },
    )
    .await;
}
