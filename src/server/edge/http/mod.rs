//! Plain HTTP requests to actors (PROTOCOL §7b): a client connection that
//! sends requests rather than a WebSocket upgrade. One request at a time:
//! its actor is got or started as for a WebSocket, the request goes
//! through the tunnel, the answer comes back, and only then is the next
//! request read (pipelined ones wait in the read buffer), so responses go
//! out in request order. A next request for an actor of another worker
//! moves the connection there (`EdgeSide::rehome`); an upgrade or a
//! non-actor path goes the way a new connection's would.

mod prepare;
mod pump;
mod request_body;
mod response;

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use bytes::{Buf, BytesMut};

use super::handshake::{serve_client, status_of, Client};
use super::{EdgeSide, Rehomed};
use crate::http::route::{route_http, HttpTarget};
use crate::http::{HeadReader, RequestHead, Status};
use crate::server::actors::{Exchange, Unavailable};
use crate::server::conn::control::{ConnControl, Signal};
use crate::server::conn::io::{linger_close, read_into, ReadOutcome};
use crate::server::conn::reply::{refuse, Refusal};
use crate::server::conn::stream::Stream;
use crate::ws::handshake::is_upgrade_attempt;
use prepare::prepare;
use pump::pump;

/// A deadline the sweep never reaches.
const NO_SWEEP: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// Bytes read per attempt while a request head is incomplete.
const HEAD_READ_BYTES: usize = 1024;

/// A client connection between its requests.
struct Conn {
    stream: Stream,
    /// Read, not yet used: the rest of a body, or pipelined requests.
    buf: BytesMut,
    control: Rc<ConnControl>,
    peer: SocketAddr,
}

/// What a request leaves the connection to do.
enum Next {
    KeepAlive,
    /// Close politely (what the client sends now is discarded).
    Close,
    /// The client is gone, or the connection was given up.
    Gone,
    /// The gateway answers, and closes.
    Refuse(Refusal),
}

/// The HTTP target of a request that is not a WebSocket upgrade, if it
/// names an actor.
pub(crate) fn http_target(head: &RequestHead) -> Option<HttpTarget> {
    if is_upgrade_attempt(head) {
        return None;
    }
    route_http(&head.target).ok().flatten()
}

/// Serves a connection's requests, from `client`'s (for `target`) on.
pub(super) async fn serve_http(
    edge: Rc<EdgeSide>,
    stream: Stream,
    buf: BytesMut,
    client: Client,
    target: HttpTarget,
) {
    let registration = edge.env.registry.register(Instant::now());
    let control = registration.control.clone();
    // Its timeouts are its own: the worker's sweep never needs to wake it.
    control.set_deadline(Instant::now() + NO_SWEEP);
    let Client { head, peer, ticket } = client;
    let mut conn = Conn {
        stream,
        buf,
        control,
        peer,
    };
    let (mut head, mut target, mut ticket) = (head, target, ticket);
    loop {
        match one_request(&edge, &mut conn, &head, target).await {
            Next::KeepAlive => {}
            Next::Gone => return,
            Next::Close => {
                let linger = edge.env.config().client.close_timeout;
                return linger_close(conn.stream, conn.buf, linger).await;
            }
            Next::Refuse(r) => return answer(&edge, conn, r).await,
        }
        let Some((next, rest)) = next_head(&edge, conn).await else {
            return;
        };
        conn = rest;
        let client = Client {
            head: next,
            peer,
            ticket: ticket.take(),
        };
        let (stream, buf, client) = match (edge.rehome)(conn.stream, conn.buf, client) {
            Rehomed::Here(stream, buf, client) => (stream, buf, client),
            Rehomed::Gone => return,
            Rehomed::Refused(stream, buf) => {
                let busy = Refusal::new(Status::SERVICE_UNAVAILABLE, "gateway overloaded");
                return refuse(&edge.env, stream, buf, busy).await;
            }
        };
        let Some(next_target) = http_target(&client.head) else {
            // An upgrade, or no actor's: as on a new connection.
            drop(registration);
            return Box::pin(serve_client(edge, stream, buf, client)).await;
        };
        (conn.stream, conn.buf) = (stream, buf);
        (head, target, ticket) = (client.head, next_target, client.ticket);
    }
}

/// The gateway's own answer to a request, counted; the connection closes.
async fn answer(edge: &EdgeSide, conn: Conn, r: Refusal) {
    edge.stats.count_http(r.status.0);
    refuse(&edge.env, conn.stream, conn.buf, r).await
}

/// One request: checked, its actor reached, forwarded, answered.
async fn one_request(edge: &EdgeSide, conn: &mut Conn, head: &RequestHead, t: HttpTarget) -> Next {
    let config = edge.env.config();
    let prepared = match prepare(&config, head, t, conn.peer) {
        Ok(p) => p,
        Err(r) => return Next::Refuse(r),
    };
    let exchange = Rc::new(Exchange::new());
    let deadline = Instant::now() + config.actors.start_timeout;
    let actor = match edge.actors.get_or_start(&prepared.actor, conn.peer.ip()) {
        Ok(a) => a,
        Err(u) => return Next::Refuse(unavailable(u)),
    };
    if let Some(ready) = edge.actors.when_ready(&actor) {
        let failed = match ready.wait_until(deadline).await {
            Some(Ok(())) => None,
            Some(Err(reason)) => Some(Unavailable::StartFailed { reason }),
            None => Some(Unavailable::StartTimeout),
        };
        if let Some(u) = failed {
            return Next::Refuse(unavailable(u));
        }
    }
    let (open, framing, limits) = (prepared.open, prepared.framing, prepared.limits);
    if let Err(u) = edge.actors.http_open(&actor, open, exchange.clone()) {
        return Next::Refuse(unavailable(u));
    }
    let settings = pump::Settings {
        continue_first: prepared.continue_first,
        head_request: prepared.head_request,
        version: prepared.version,
        keep_alive: prepared.keep_alive,
    };
    pump(edge, conn, &exchange, (framing, limits), settings).await
}

/// Why the actor cannot be reached, as the client reads it.
fn unavailable(u: Unavailable) -> Refusal {
    let status = match u {
        Unavailable::NoHttp => Status::NOT_IMPLEMENTED,
        ref other => status_of(other),
    };
    let mut refusal = Refusal::new(status, u.to_string());
    if matches!(u, Unavailable::Upgrading) {
        refusal.headers = &[("Retry-After", "1")];
    }
    refusal
}

/// What ends a wait besides the client's bytes.
enum Wake {
    Readable,
    TimedOut,
    /// The worker asks the connection to close (shutdown).
    Closing,
    /// Something changed that the task should look at again.
    Poked,
}

/// The worker's next word for the connection: close (shutdown), or a poke
/// (a congested tunnel drained). Cancel-safe.
async fn signalled(control: &ConnControl) -> Wake {
    match control.next_signal().await {
        Signal::Close(..) => Wake::Closing,
        _ => Wake::Poked,
    }
}

/// Waits for the client's bytes (never a read: one that is dropped loses
/// them), the deadline or a close request.
async fn wait_client(conn: &Conn, deadline: Instant) -> Wake {
    if conn.stream.has_unread_input() {
        return Wake::Readable;
    }
    monoio::select! {
        r = conn.stream.readable() => match r {
            Ok(()) => Wake::Readable,
            Err(_) => Wake::Closing,
        },
        _ = monoio::time::sleep_until(deadline.into()) => Wake::TimedOut,
        w = signalled(&conn.control) => w,
    }
}

/// Reads what the client sent into `conn.buf` (call once it is readable).
async fn read_some(edge: &EdgeSide, conn: &mut Conn, room: usize) -> ReadOutcome {
    let buf = std::mem::take(&mut conn.buf);
    let (outcome, buf) = read_into(&mut conn.stream, buf, room, &edge.env.pool).await;
    conn.buf = buf;
    outcome
}

/// The next request's head on a kept-alive connection: within
/// `http_idle_timeout` for its first byte, `handshake_timeout` for the rest.
/// `None`: the connection ended (answered if it must be).
async fn next_head(edge: &EdgeSide, mut conn: Conn) -> Option<(RequestHead, Conn)> {
    let config = edge.env.config();
    let c = &config.client;
    let mut reader = HeadReader::new(c.max_header_bytes, c.max_headers);
    let idle = Instant::now() + c.http_idle_timeout;
    let mut started = None;
    loop {
        match reader.poll(&conn.buf) {
            Ok(Some((head, len))) => {
                conn.buf.advance(len);
                return Some((head, conn));
            }
            Ok(None) => {}
            Err(e) => {
                let refusal = Refusal::new(e.status(), e.reason());
                edge.stats.count_handshake(refusal.status.0);
                refuse(&edge.env, conn.stream, conn.buf, refusal).await;
                return None;
            }
        }
        if !conn.buf.is_empty() && started.is_none() {
            started = Some(Instant::now() + c.handshake_timeout);
        }
        if conn.buf.is_empty() && conn.buf.capacity() > 0 {
            // An idle kept connection holds no buffer (one is lent again
            // when bytes arrive).
            edge.env.pool.give_back(std::mem::take(&mut conn.buf));
        }
        match wait_client(&conn, started.unwrap_or(idle)).await {
            Wake::Readable => {}
            Wake::Poked => continue,
            Wake::TimedOut if started.is_some() => {
                let timed_out = Refusal::new(Status::REQUEST_TIMEOUT, "request head timed out");
                edge.stats.count_handshake(timed_out.status.0);
                refuse(&edge.env, conn.stream, conn.buf, timed_out).await;
                return None;
            }
            Wake::TimedOut | Wake::Closing => return None,
        }
        if !matches!(
            read_some(edge, &mut conn, HEAD_READ_BYTES).await,
            ReadOutcome::Data(_)
        ) {
            return None;
        }
    }
}
