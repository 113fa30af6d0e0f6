//! A worker's front door: accept on its listeners, read the request head,
//! and route the connection to the worker that must serve it (an actor's
//! home, the worker a runner tunnel names, wherever an admin request goes
//! next) — by a hand-off if that is another worker — then to the edge, the
//! runner side or the admin API.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use monoio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use super::handoff::{Handoff, HandoffQueues, Listener};
use super::handshake_slot::HandshakeSlot;
use super::worker::Worker;
use crate::http::{HeadReader, RequestHead, Status};
use crate::server::admin::{serve_admin, Relay, Visit};
use crate::server::conn::admission::Ticket;
use crate::server::conn::io::{
    read_before, read_proxy_header, wait_readable, ProxyHeaderFailure, ReadOutcome,
};
use crate::server::conn::reply::{refuse, refuse_on_arrival, Refusal};
use crate::server::conn::stream::Stream;
use crate::server::{edge, runners};
use crate::tls::TlsServer;

/// Bytes read per attempt while a request head is incomplete.
const HEAD_READ_BYTES: usize = 1024;

/// After accept fails for lack of descriptors: wait for some to be freed.
const OUT_OF_FDS_PAUSE: Duration = Duration::from_millis(100);

pub(super) async fn accept_loop(worker: Rc<Worker>, listener: TcpListener, kind: Listener) {
    loop {
        // Wait for readiness rather than racing accept() against shutdown:
        // an abandoned in-flight accept can leak the socket it accepted.
        monoio::select! {
            _ = worker.no_accept.wait() => return,
            ready = listener.readable(false) => {
                if let Err(e) = ready {
                    warn!(worker = worker.id, ?kind, error = %e, "listener failed");
                    return;
                }
            }
        }
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                if kind == Listener::Client {
                    worker.stats.accepted.fetch_add(1, Ordering::Relaxed);
                }
                let Some(stream) = worker.wrap(stream, kind) else {
                    continue;
                };
                let accepted = Accepted {
                    stream,
                    kind,
                    peer,
                    ticket: None,
                    since: Instant::now(),
                    early: BytesMut::new(),
                };
                monoio::spawn(admit(worker.clone(), accepted));
            }
            Err(e) if is_out_of_fds(&e) => {
                // Spinning on EMFILE burns the core; back off and let connections close.
                warn!(worker = worker.id, error = %e, "accept failed: out of file descriptors");
                monoio::time::sleep(OUT_OF_FDS_PAUSE).await;
            }
            Err(e) => warn!(worker = worker.id, error = %e, "accept failed"),
        }
    }
}

impl Worker {
    fn is_trusted_proxy(&self, ip: std::net::IpAddr) -> bool {
        let config = self.env.config();
        let trusted = &config.client.trusted_proxies;
        trusted.iter().any(|net| net.contains(ip))
    }

    /// The stream of a connection accepted on `listener`: TLS if the
    /// listener has certificates. `None`: TLS could not be set up for it.
    fn wrap(&self, tcp: TcpStream, listener: Listener) -> Option<Stream> {
        let Some(config) = self.tls.current(listener) else {
            return Some(Stream::plain(tcp));
        };
        match TlsServer::new(config) {
            Ok(server) => Some(Stream::tls(tcp, server)),
            Err(e) => {
                warn!(worker = self.id, error = %e, "cannot start a TLS session");
                None
            }
        }
    }
}

fn is_out_of_fds(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}

/// Serves connections other workers accepted for this one.
pub(super) async fn receive_handoffs(worker: Rc<Worker>) {
    loop {
        let handoff = monoio::select! {
            _ = worker.stopping.wait() => return,
            h = worker.handoffs.receive(worker.id) => h,
        };
        let Ok(stream) = Stream::attach(handoff.stream) else {
            continue;
        };
        let Handoff {
            head,
            leftover,
            listener,
            relay,
            peer,
            ticket,
            ..
        } = handoff;
        let arrived = Arrived {
            stream,
            buf: leftover,
            head,
            listener,
            peer,
            ticket,
        };
        monoio::spawn(route(worker.clone(), arrived, relay));
    }
}

/// A connection just accepted.
struct Accepted {
    stream: Stream,
    kind: Listener,
    peer: SocketAddr,
    /// A client connection's place (client listener only).
    ticket: Option<Ticket>,
    /// When it was accepted: its handshake must be done by
    /// `since + handshake_timeout`.
    since: Instant,
    /// Plaintext read past a PROXY protocol header, to be read first.
    early: BytesMut,
}

/// A connection whose request head has been read.
struct Arrived {
    stream: Stream,
    /// Bytes after the head: a WebSocket's first frames, or a request body.
    buf: BytesMut,
    head: RequestHead,
    listener: Listener,
    peer: SocketAddr,
    ticket: Option<Ticket>,
}

/// Only the client listener faces the internet at large: its connections
/// must find a place (`client.max_connections`, per address, per second)
/// and a handshake slot, or are refused at once without reading a byte.
async fn admit(worker: Rc<Worker>, mut accepted: Accepted) {
    if accepted.kind != Listener::Client {
        let slot = HandshakeSlot::free(&worker);
        return serve_accepted(worker, accepted, slot).await;
    }
    if worker.is_trusted_proxy(accepted.peer.ip()) {
        match take_proxy_header(&worker, &mut accepted).await {
            Some(()) => {}
            None => return, // closed: a balancer that says nothing valid
        }
    }
    match worker.admission.admit(accepted.peer.ip(), Instant::now()) {
        Ok(ticket) => accepted.ticket = Some(ticket),
        Err(why) => {
            worker.stats.refused(why).fetch_add(1, Ordering::Relaxed);
            debug!(peer = %accepted.peer, why = why.label(), "connection refused");
            let refusal = why.refusal();
            worker.stats.count_handshake(refusal.status.0);
            return refuse_on_arrival(&worker.env, accepted.stream, refusal).await;
        }
    }
    match HandshakeSlot::take(&worker) {
        Some(slot) => serve_accepted(worker, accepted, slot).await,
        None => refuse_overloaded(worker, accepted.stream).await,
    }
}

/// Reads the PROXY protocol header a trusted balancer sends first; the
/// client it names is the connection's peer from now on. `None`: no valid
/// header within `handshake_timeout` (the connection is dropped).
async fn take_proxy_header(worker: &Worker, accepted: &mut Accepted) -> Option<()> {
    let deadline = accepted.since + worker.env.config().client.handshake_timeout;
    match read_proxy_header(&mut accepted.stream, deadline).await {
        Ok((header, early)) => {
            if let Some(source) = header.source {
                accepted.peer = source;
            }
            accepted.early = early;
            Some(())
        }
        // A balancer's health check connects and closes: not a refusal.
        Err(ProxyHeaderFailure::Read(ReadOutcome::Eof)) => None,
        Err(why) => {
            worker
                .stats
                .proxy_headers_refused
                .fetch_add(1, Ordering::Relaxed);
            debug!(balancer = %accepted.peer, ?why, "no valid PROXY protocol header");
            None
        }
    }
}

/// The slot is held until the connection is served or handed on: a client
/// waiting for its actor to start (up to `start_timeout`) still counts.
async fn serve_accepted(worker: Rc<Worker>, accepted: Accepted, slot: HandshakeSlot) {
    if let Some(arrived) = read_head(&worker, accepted).await {
        route(worker, arrived, Relay::default()).await;
    }
    drop(slot);
}

/// Every handshake slot of this worker is taken: 503 at once.
async fn refuse_overloaded(worker: Rc<Worker>, stream: Stream) {
    let busy = Refusal::new(
        Status::SERVICE_UNAVAILABLE,
        "too many connections handshaking",
    );
    worker.stats.count_handshake(busy.status.0);
    refuse_on_arrival(&worker.env, stream, busy).await;
}

/// Reads a request head within `handshake_timeout`, `max_header_bytes` and
/// `max_headers`; refuses (400/408/431) or gives up on a vanished peer.
async fn read_head(worker: &Worker, accepted: Accepted) -> Option<Arrived> {
    let Accepted {
        mut stream,
        kind: listener,
        peer,
        ticket,
        since,
        early,
    } = accepted;
    let env = &worker.env;
    let config = env.config();
    let cfg = &config.client;
    let deadline = since + cfg.handshake_timeout;
    let mut reader = HeadReader::new(cfg.max_header_bytes, cfg.max_headers);
    // No buffer until the peer sends something: a silent connection holds none.
    let waiting = early.is_empty() && !stream.has_unread_input();
    if let Err(outcome) = if waiting {
        wait_readable(&stream, deadline).await
    } else {
        Ok(())
    } {
        if matches!(outcome, ReadOutcome::TimedOut) {
            let timed_out = Refusal::new(Status::REQUEST_TIMEOUT, "request head timed out");
            refuse_on(worker, listener, stream, BytesMut::new(), timed_out).await;
        }
        return None;
    }
    let mut buf = if early.is_empty() {
        env.pool.take()
    } else {
        early
    };
    loop {
        match reader.poll(&buf) {
            Ok(Some((head, head_len))) => {
                buf.advance(head_len);
                return Some(Arrived {
                    stream,
                    buf,
                    head,
                    listener,
                    peer,
                    ticket,
                });
            }
            Ok(None) => {}
            Err(e) => {
                let refusal = Refusal::new(e.status(), e.reason());
                refuse_on(worker, listener, stream, buf, refusal).await;
                return None;
            }
        }
        let (outcome, b) =
            read_before(&mut stream, buf, HEAD_READ_BYTES, deadline, &env.pool).await;
        buf = b;
        match outcome {
            ReadOutcome::Data(_) => {}
            ReadOutcome::TimedOut => {
                debug!("request head not complete within handshake_timeout");
                let timed_out = Refusal::new(Status::REQUEST_TIMEOUT, "request head timed out");
                refuse_on(worker, listener, stream, buf, timed_out).await;
                return None;
            }
            ReadOutcome::Failed(e) if e.kind() == io::ErrorKind::InvalidData => {
                // Only TLS reads fail so: not TLS, or a failed handshake.
                worker.stats.tls_failures.fetch_add(1, Ordering::Relaxed);
                debug!(%peer, error = %e, "TLS handshake failed");
                return None;
            }
            ReadOutcome::Eof | ReadOutcome::Failed(_) => return None,
        }
    }
}

/// Serves the connection here, or hands it to the worker that must.
async fn route(worker: Rc<Worker>, a: Arrived, relay: Relay) {
    let (this, n) = (worker.id, worker.worker_count);
    match a.listener {
        Listener::Client => match edge::home_worker(&a.head, this, n) {
            home if home == this => {
                let edge = worker.edge.clone();
                let client = edge::Client {
                    head: a.head,
                    peer: a.peer,
                    ticket: a.ticket,
                };
                edge::serve_client(edge, a.stream, a.buf, client).await
            }
            home => hand_to(&worker, home, a, relay).await,
        },
        Listener::Runner => match runners::home_worker(&a.head, this, n) {
            home if home == this => {
                runners::serve_runner(worker.runners.clone(), a.stream, a.buf, a.head).await
            }
            home => hand_to(&worker, home, a, relay).await,
        },
        Listener::Admin => match worker.admin.visit(&a.head, relay) {
            Visit::Serve(served) => {
                let admin = worker.admin.clone();
                serve_admin(admin, a.stream, a.buf, a.head, a.peer, served).await
            }
            Visit::Forward(home, relay) => hand_to(&worker, home, a, relay).await,
            Visit::Refuse(refusal) => refuse(&worker.env, a.stream, a.buf, refusal).await,
        },
    }
}

/// Hands the connection to worker `to`; if that cannot be done (its inbox
/// is full, or no descriptor is left to move the socket with), 503.
async fn hand_to(worker: &Worker, to: usize, a: Arrived, relay: Relay) {
    let detached = match a.stream.detach() {
        Ok(d) => d,
        Err(stream) => {
            let why = "gateway out of file descriptors";
            let refusal = Refusal::new(Status::SERVICE_UNAVAILABLE, why);
            return refuse_on(worker, a.listener, stream, a.buf, refusal).await;
        }
    };
    let handoff = Handoff {
        stream: detached,
        peer: a.peer,
        head: a.head,
        leftover: a.buf,
        listener: a.listener,
        relay,
        ticket: a.ticket,
    };
    if let Err(back) = worker.handoffs.send(to, handoff) {
        if let Ok(stream) = Stream::attach(back.stream) {
            let overloaded = Refusal::new(Status::SERVICE_UNAVAILABLE, "gateway overloaded");
            refuse_on(worker, back.listener, stream, back.leftover, overloaded).await;
        }
    }
}

/// The hand-off a kept-alive HTTP connection takes when its next request
/// belongs on another worker (`EdgeSide::rehome`): the same inbox a new
/// connection's would go through.
pub(super) fn rehome(handoffs: Arc<HandoffQueues>, this: usize, n: usize) -> edge::Rehome {
    Box::new(move |stream, buf, client| {
        let home = edge::home_worker(&client.head, this, n);
        if home == this {
            return edge::Rehomed::Here(stream, buf, client);
        }
        let detached = match stream.detach() {
            Ok(d) => d,
            Err(stream) => return edge::Rehomed::Refused(stream, buf),
        };
        let handoff = Handoff {
            stream: detached,
            peer: client.peer,
            head: client.head,
            leftover: buf,
            listener: Listener::Client,
            relay: Relay::default(),
            ticket: client.ticket,
        };
        match handoffs.send(home, handoff) {
            Ok(()) => edge::Rehomed::Gone,
            Err(back) => match Stream::attach(back.stream) {
                Ok(stream) => edge::Rehomed::Refused(stream, back.leftover),
                Err(_) => edge::Rehomed::Gone,
            },
        }
    })
}

/// Refuses a request that arrived on `listener`; on the client listener
/// its status counts among the handshake results.
async fn refuse_on(worker: &Worker, listener: Listener, stream: Stream, buf: BytesMut, r: Refusal) {
    if listener == Listener::Client {
        worker.stats.count_handshake(r.status.0);
    }
    refuse(&worker.env, stream, buf, r).await
}
