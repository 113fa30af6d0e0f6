//! A connection on the client or runner listener, from accept until its
//! WebSocket session starts: read the head, move the connection to the
//! worker that must serve it, decide the answer, upgrade.
//!
//! Protocol decisions live in the sans-IO `http` and `ws` modules; this file
//! moves bytes between them and the socket.

use std::hash::{Hash, Hasher};
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use monoio::net::TcpStream;
use tracing::debug;

use super::handoff::{Handoff, Listener};
use super::io::{detach_fd, linger_close, read_before, write_all_or_stall, ReadOutcome};
use super::mux::{OpenAnswer, OpenRequest, Unavailable};
use super::registry::ConnControl;
use super::session::{Handler, Session};
use super::worker::Worker;
use crate::config::HandshakeErrors;
use crate::http::response::{write_response, write_switching_protocols};
use crate::http::route::{route, ActorPath, Route};
use crate::http::{HeadReader, RequestHead, Status};
use crate::ws::close::encode_close;
use crate::ws::handshake::{validate_upgrade, Upgrade};
use crate::ws::CloseCode;

/// Headers passed on to the runner with a client connection.
const FORWARDED_HEADERS: &[&str] = &[
    "origin",
    "user-agent",
    "cookie",
    "authorization",
    "x-forwarded-for",
    "x-real-ip",
];

pub(crate) async fn serve_http(worker: Rc<Worker>, mut stream: TcpStream, listener: Listener) {
    let cfg = &worker.config.client;
    let deadline = Instant::now() + cfg.handshake_timeout;
    let mut reader = HeadReader::new(cfg.max_header_bytes, cfg.max_headers);
    let mut buf = worker.pool.take();
    let (head, head_len) = loop {
        match reader.poll(&buf) {
            Ok(Some(done)) => break done,
            Ok(None) => {}
            Err(e) => return reject(&worker, stream, buf, e.status(), e.reason()).await,
        }
        let (outcome, b) = read_before(&mut stream, buf, 1024, deadline).await;
        buf = b;
        match outcome {
            ReadOutcome::Data(_) => {}
            ReadOutcome::TimedOut => {
                debug!("request head not complete within handshake_timeout");
                return reject(
                    &worker,
                    stream,
                    buf,
                    Status::REQUEST_TIMEOUT,
                    "request head timed out",
                )
                .await;
            }
            ReadOutcome::Eof | ReadOutcome::Failed(_) => return,
        }
    };
    // Bytes after the head are the client's first WebSocket frames: keep them.
    buf.advance(head_len);
    let home = home_worker(&worker, &head, listener);
    if home == worker.id {
        return respond(worker, stream, buf, head, listener).await;
    }
    let Ok(fd) = detach_fd(stream) else { return };
    let handoff = Handoff {
        fd,
        head,
        leftover: buf,
        listener,
        relay: Default::default(),
    };
    if let Err(back) = worker.handoffs.send(home, handoff) {
        let stream = match std_to_monoio(back.fd) {
            Some(s) => s,
            None => return,
        };
        reject(
            &worker,
            stream,
            back.leftover,
            Status::SERVICE_UNAVAILABLE,
            "gateway overloaded",
        )
        .await;
    }
}

/// Serves a connection another worker handed over.
pub(crate) async fn serve_handoff(worker: Rc<Worker>, handoff: Handoff) {
    let Some(stream) = std_to_monoio(handoff.fd) else {
        return;
    };
    match handoff.listener {
        Listener::Admin => {
            super::admin::admin_request(
                worker,
                stream,
                handoff.leftover,
                handoff.head,
                handoff.relay,
            )
            .await
        }
        listener => respond(worker, stream, handoff.leftover, handoff.head, listener).await,
    }
}

fn std_to_monoio(fd: OwnedFd) -> Option<TcpStream> {
    let std = std::net::TcpStream::from(fd);
    TcpStream::from_std(std).ok()
}

/// Which worker must serve this request: an actor's clients all live on the
/// actor's home worker; a runner tunnel on the worker it names.
fn home_worker(worker: &Worker, head: &RequestHead, listener: Listener) -> usize {
    let n = worker.worker_count;
    match listener {
        Listener::Client => match route(&head.target) {
            Ok(Route::Actor(actor)) => actor_home(&actor, n),
            _ => worker.id,
        },
        Listener::Runner => tunnel_index(&head.target)
            .filter(|&i| i < n)
            .unwrap_or(worker.id),
        Listener::Admin => worker.id,
    }
}

pub(crate) fn actor_home(actor: &ActorPath, workers: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    actor.name.hash(&mut h);
    actor.key.hash(&mut h);
    (h.finish() % workers as u64) as usize
}

/// `tunnel=N` in the query of a runner's connect request (absent: 0).
fn tunnel_index(target: &str) -> Option<usize> {
    let query = target.split_once('?').map_or("", |(_, q)| q);
    match query.split('&').find_map(|kv| kv.strip_prefix("tunnel=")) {
        Some(n) => n.parse().ok(),
        None => Some(0),
    }
}

async fn respond(
    worker: Rc<Worker>,
    stream: TcpStream,
    buf: BytesMut,
    head: RequestHead,
    listener: Listener,
) {
    match listener {
        Listener::Client => client_request(worker, stream, buf, head).await,
        Listener::Runner => runner_request(worker, stream, buf, head).await,
        Listener::Admin => {
            super::admin::admin_request(worker, stream, buf, head, Default::default()).await
        }
    }
}

/// A refusal before any WebSocket exists: a status, headers and a reason.
pub(crate) struct Refusal {
    pub status: Status,
    pub headers: &'static [(&'static str, &'static str)],
    pub reason: String,
}

impl Refusal {
    pub fn new(status: Status, reason: impl Into<String>) -> Self {
        Refusal {
            status,
            headers: &[],
            reason: reason.into(),
        }
    }
}

/// Checks that a client request is a WebSocket upgrade to an actor path.
fn client_precheck(head: &RequestHead) -> Result<(ActorPath, Upgrade), Refusal> {
    let actor = match route(&head.target) {
        Err(bad) => return Err(Refusal::new(Status::BAD_REQUEST, bad.0)),
        Ok(Route::Healthz) if head.method == "GET" => return Err(Refusal::new(Status::OK, "ok")),
        Ok(Route::Healthz) => {
            return Err(Refusal {
                status: Status::METHOD_NOT_ALLOWED,
                headers: &[("Allow", "GET")],
                reason: "use GET".into(),
            })
        }
        Ok(Route::NotFound) => return Err(Refusal::new(Status::NOT_FOUND, "no such path")),
        Ok(Route::Actor(actor)) => actor,
    };
    if head.method != "GET" {
        return Err(Refusal {
            status: Status::METHOD_NOT_ALLOWED,
            headers: &[("Allow", "GET")],
            reason: "WebSocket endpoints accept GET only".into(),
        });
    }
    let upgrade = validate_upgrade(head).map_err(|r| Refusal {
        status: r.status,
        headers: r.headers(),
        reason: r.reason.into(),
    })?;
    Ok((actor, upgrade))
}

async fn client_request(
    worker: Rc<Worker>,
    mut stream: TcpStream,
    buf: BytesMut,
    head: RequestHead,
) {
    let (actor, upgrade) = match client_precheck(&head) {
        Ok(x) => x,
        Err(r) => return refuse(&worker, stream, buf, r).await,
    };
    let registration = worker.registry.register(Instant::now());
    let opened = connect_actor(
        &worker,
        &actor,
        &head,
        &upgrade,
        registration.control.clone(),
    )
    .await;
    let (conn_id, protocol) = match opened {
        Ok(ok) => ok,
        Err(u) => {
            drop(registration);
            debug!(actor = %actor.name, key = ?actor.key, status = u.status, reason = %u.reason, "client refused");
            let refusal = Refusal::new(Status(u.status), u.describe());
            return match worker.config.client.handshake_errors {
                HandshakeErrors::Http => refuse(&worker, stream, buf, refusal).await,
                HandshakeErrors::Close => {
                    upgrade_then_close(&worker, stream, buf, &upgrade, refusal).await
                }
            };
        }
    };
    let mut out = worker.pool.take();
    write_switching_protocols(&mut out, &upgrade.accept_key, protocol.as_deref());
    match write_all_or_stall(&mut stream, out, worker.config.client.send_timeout).await {
        Ok(out) => worker.pool.give_back(out),
        Err(_) => {
            return worker.mux.client_closed(
                conn_id,
                1006,
                "connection lost during the handshake",
                false,
            )
        }
    }
    debug!(actor = %actor.name, key = ?actor.key, conn_id, "client connected");
    // The session is a task of its own so that nothing of the handshake
    // (head, parser, timer) stays allocated for the connection's lifetime.
    let session = Session::new(
        worker.clone(),
        Handler::Client {
            conn_id,
            next_index: 0,
        },
    );
    monoio::spawn(session.run(stream, buf, registration));
}

/// Gets the actor running (starting it if needed) and has its runner accept
/// the connection, all within `actors.start_timeout`.
async fn connect_actor(
    worker: &Worker,
    actor: &ActorPath,
    head: &RequestHead,
    upgrade: &Upgrade,
    control: Rc<ConnControl>,
) -> Result<(u64, Option<String>), Unavailable> {
    let cfg = &worker.config.actors;
    let deadline = Instant::now() + cfg.start_timeout;

    let instance = worker.mux.get_or_start(&actor.name, &actor.key)?;
    if let Some(ready) = worker.mux.when_ready(&instance) {
        match ready.wait_until(deadline).await {
            Some(Ok(())) => {}
            Some(Err(reason)) => return Err(Unavailable::new(503, "start_failed", reason)),
            None => {
                let reason = "actor did not start within actors.start_timeout";
                return Err(Unavailable::new(503, "start_timeout", reason));
            }
        }
    }
    let (path, query) = match head.target.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (head.target.clone(), String::new()),
    };
    let headers = head
        .headers
        .iter()
        .filter(|(n, _)| FORWARDED_HEADERS.iter().any(|f| n.eq_ignore_ascii_case(f)))
        .map(|(n, v)| (n.to_ascii_lowercase(), Bytes::copy_from_slice(v)))
        .collect();
    let request = OpenRequest {
        path,
        query,
        headers,
        protocols: upgrade.protocols.clone(),
    };
    let (conn_id, answer) = worker.mux.open(&instance, control, request);
    match answer.wait_until(deadline).await {
        Some(OpenAnswer::Accepted { protocol }) => Ok((conn_id, protocol)),
        Some(OpenAnswer::Rejected { status, reason }) => {
            Err(Unavailable::new(status, "rejected", reason))
        }
        None => {
            worker.mux.abandon_open(conn_id);
            let reason = "the actor did not accept the connection in time";
            Err(Unavailable::new(503, "open_timeout", reason))
        }
    }
}

async fn runner_request(
    worker: Rc<Worker>,
    mut stream: TcpStream,
    buf: BytesMut,
    head: RequestHead,
) {
    let path = head
        .target
        .split_once('?')
        .map_or(head.target.as_str(), |(p, _)| p);
    let refusal = match path {
        "/healthz" if head.method == "GET" => Some(Refusal::new(Status::OK, "ok")),
        "/runners/connect" if head.method != "GET" => Some(Refusal {
            status: Status::METHOD_NOT_ALLOWED,
            headers: &[("Allow", "GET")],
            reason: "use GET".into(),
        }),
        "/runners/connect" => None,
        _ => Some(Refusal::new(
            Status::NOT_FOUND,
            "no such path; runners connect to /runners/connect",
        )),
    };
    if let Some(r) = refusal {
        return refuse(&worker, stream, buf, r).await;
    }
    if !head.bearer_is(&worker.config.runners.token) {
        let r = Refusal {
            status: Status::UNAUTHORIZED,
            headers: &[("WWW-Authenticate", "Bearer")],
            reason: "missing or wrong runner token".into(),
        };
        return refuse(&worker, stream, buf, r).await;
    }
    if tunnel_index(&head.target).is_none_or(|i| i >= worker.worker_count) {
        let reason = format!(
            "tunnel must be a number below {} (the gateway's worker count)",
            worker.worker_count
        );
        return refuse(
            &worker,
            stream,
            buf,
            Refusal::new(Status::BAD_REQUEST, reason),
        )
        .await;
    }
    let upgrade = match validate_upgrade(&head) {
        Ok(u) => u,
        Err(r) => {
            return refuse(
                &worker,
                stream,
                buf,
                Refusal {
                    status: r.status,
                    headers: r.headers(),
                    reason: r.reason.into(),
                },
            )
            .await
        }
    };
    let mut out = worker.pool.take();
    write_switching_protocols(&mut out, &upgrade.accept_key, None);
    match write_all_or_stall(&mut stream, out, worker.config.client.send_timeout).await {
        Ok(out) => worker.pool.give_back(out),
        Err(_) => return,
    }
    let registration = worker.registry.register(Instant::now());
    let handler = Handler::Tunnel {
        control: registration.control.clone(),
        tunnel: None,
    };
    monoio::spawn(Session::new(worker.clone(), handler).run(stream, buf, registration));
}

/// For browsers: accept the upgrade, then close at once with 4000 + status.
async fn upgrade_then_close(
    worker: &Rc<Worker>,
    stream: TcpStream,
    buf: BytesMut,
    upgrade: &Upgrade,
    r: Refusal,
) {
    let mut out = worker.pool.take();
    write_switching_protocols(&mut out, &upgrade.accept_key, None);
    encode_close(&mut out, CloseCode(4000 + r.status.0), &r.reason);
    send_then_linger(worker, stream, buf, out).await;
}

pub(crate) async fn refuse(worker: &Rc<Worker>, stream: TcpStream, buf: BytesMut, r: Refusal) {
    if r.status != Status::OK {
        debug!(status = r.status.0, reason = %r.reason, "refusing request");
    }
    let mut out = worker.pool.take();
    write_response(&mut out, r.status, r.headers, &format!("{}\n", r.reason));
    send_then_linger(worker, stream, buf, out).await;
}

async fn reject(
    worker: &Rc<Worker>,
    stream: TcpStream,
    buf: BytesMut,
    status: Status,
    reason: &str,
) {
    refuse(worker, stream, buf, Refusal::new(status, reason)).await;
}

async fn send_then_linger(
    worker: &Rc<Worker>,
    mut stream: TcpStream,
    scratch: BytesMut,
    out: BytesMut,
) {
    let cfg = &worker.config.client;
    if let Ok(out) = write_all_or_stall(&mut stream, out, cfg.send_timeout).await {
        worker.pool.give_back(out);
        linger_close(stream, scratch, cfg.close_timeout).await;
    }
}
