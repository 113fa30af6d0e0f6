//! One request in flight: its body read from the client as the runner's
//! credit allows, the actor's response written as it arrives (credit given
//! back as the client's socket takes it), until the response is complete,
//! cut, refused or timed out.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::request_body::{RequestBody, Stop};
use super::response::{Progress, ResponseWriter};
use super::{read_some, wait_client, Conn, Next, Wake};
use crate::http::body::{BodyError, BodyLimits, Framing};
use crate::http::Status;
use crate::server::actors::{Exchange, Outcome};
use crate::server::conn::io::{write_all_or_stall, ReadOutcome};
use crate::server::conn::reply::Refusal;
use crate::server::edge::EdgeSide;

/// How the request wants its answer.
pub(super) struct Settings {
    pub continue_first: bool,
    pub head_request: bool,
    pub version: u8,
    pub keep_alive: bool,
}

/// Bytes read ahead of what can be forwarded (pipelined requests while a
/// response is on its way, body the runner has no credit for yet): past
/// it the client is not read until they are taken.
const READ_AHEAD_BYTES: usize = 64 * 1024;

/// Far enough to mean "no deadline" and near enough for a timer.
const NEVER: Duration = Duration::from_secs(24 * 3600);

pub(super) async fn pump(
    edge: &EdgeSide,
    conn: &mut Conn,
    exchange: &Exchange,
    (framing, limits): (Framing, BodyLimits),
    s: Settings,
) -> Next {
    let body = match RequestBody::new(framing, limits) {
        Ok(b) => b,
        Err(e) => return cancel_with(edge, exchange, e.status(), e.reason()),
    };
    let continued = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\n"[..]);
    if s.continue_first && !write_out(edge, conn, continued).await {
        return gone(edge, exchange);
    }
    let c = &edge.env.config().client;
    let mut p = Pump {
        edge,
        exchange,
        body,
        writer: ResponseWriter::new(s.head_request, s.version, s.keep_alive),
        head_deadline: Instant::now() + c.http_response_timeout,
        read_deadline: Instant::now() + c.http_idle_timeout,
        counted: false,
    };
    loop {
        let stop = match p
            .body
            .forward(&mut conn.buf, exchange, (&edge.actors, &conn.control))
        {
            Ok(stop) => stop,
            Err(e) => return body_failed(edge, exchange, &p.writer, e),
        };
        if let Some(next) = p.respond(conn).await {
            return next;
        }
        if let Some(next) = p.ended(stop, Instant::now()) {
            return next;
        }
        if let Some(next) = p.wait_and_read(conn, stop).await {
            return next;
        }
    }
}

/// One request's progress, turn by turn.
struct Pump<'a> {
    edge: &'a EdgeSide,
    exchange: &'a Exchange,
    body: RequestBody,
    writer: ResponseWriter,
    /// The response head must come by then (pushed on as the body goes).
    head_deadline: Instant,
    /// The client must send more of its body by then.
    read_deadline: Instant,
    /// Its status is counted.
    counted: bool,
}

impl Pump<'_> {
    /// Writes what the actor sent; gives the credit back; `Some` once the
    /// response is complete or broken.
    async fn respond(&mut self, conn: &mut Conn) -> Option<Next> {
        let (edge, exchange) = (self.edge, self.exchange);
        let mut out = edge.env.pool.take();
        let turn = match self.writer.turn(exchange, &mut out) {
            Ok(turn) => turn,
            Err(why) => {
                let why = format!("bad_response: {why}");
                return Some(cancel_with(edge, exchange, Status::BAD_GATEWAY, &why));
            }
        };
        if out.is_empty() {
            edge.env.pool.give_back(out);
        } else if !write_out(edge, conn, out).await {
            return Some(gone(edge, exchange));
        }
        if let (false, Some(status)) = (self.counted, self.writer.status()) {
            edge.stats.count_http(status);
            self.counted = true;
        }
        if turn.consumed > 0 {
            let bytes = &edge.stats.http_bytes_out;
            bytes.fetch_add(turn.consumed, Ordering::Relaxed);
            edge.actors.http_grant(exchange, turn.consumed);
        }
        match turn.progress {
            Progress::Complete => Some(complete(edge, exchange, &self.body, &self.writer)),
            Progress::Broken => {
                edge.actors
                    .http_close(exchange, Some("response framing broken"));
                Some(Next::Close)
            }
            Progress::Waiting => None,
        }
    }

    /// How the request ends if it cannot go on: the actors layer ended it,
    /// or a deadline passed.
    fn ended(&self, stop: Stop, now: Instant) -> Option<Next> {
        let (edge, exchange) = (self.edge, self.exchange);
        let started = self.writer.status().is_some();
        match exchange.outcome() {
            // A response that started can only be cut.
            Some(_) if started => return Some(Next::Close),
            Some(Outcome::Cut) => return Some(Next::Close),
            Some(Outcome::Refused {
                status,
                kind,
                reason,
                retry,
            }) => {
                let mut r = Refusal::new(Status(status), format!("{kind}: {reason}"));
                if retry {
                    r.headers = &[("Retry-After", "1")];
                }
                return Some(Next::Refuse(r));
            }
            None => {}
        }
        if !started && now >= self.head_deadline {
            let why =
                "gateway_timeout: no response from the actor within client.http_response_timeout";
            return Some(cancel_with(edge, exchange, Status::GATEWAY_TIMEOUT, why));
        }
        if stop == Stop::NeedRead && now >= self.read_deadline {
            let why = "request body stalled for client.http_idle_timeout";
            if started {
                // No second response inside the first: it is cut.
                edge.actors.http_close(exchange, Some(why));
                return Some(Next::Close);
            }
            return Some(cancel_with(edge, exchange, Status::REQUEST_TIMEOUT, why));
        }
        None
    }

    /// Waits for the next thing to do, reading the client if it may;
    /// `Some` if the client is gone.
    async fn wait_and_read(&mut self, conn: &mut Conn, stop: Stop) -> Option<Next> {
        // Pipelined bytes after a complete body are kept for the next
        // request, body bytes beyond the credit until it comes; reading
        // them also shows a client that went away (a response waiting for
        // the client's credit has no deadline to end it otherwise).
        let want_read = match stop {
            Stop::NeedRead => true,
            Stop::Done | Stop::NoCredit => conn.buf.len() < READ_AHEAD_BYTES,
        };
        let mut deadline = Instant::now() + NEVER;
        if self.writer.status().is_none() {
            deadline = deadline.min(self.head_deadline);
        }
        if stop == Stop::NeedRead {
            deadline = deadline.min(self.read_deadline);
        }
        match wait(conn, self.exchange, want_read, deadline).await {
            Wake::Closing => return Some(gone(self.edge, self.exchange)),
            Wake::TimedOut | Wake::Poked => return None,
            Wake::Readable if !want_read => return None,
            Wake::Readable => {}
        }
        let room = self.edge.env.pool.read_room(true);
        match read_some(self.edge, conn, room).await {
            ReadOutcome::Data(_) => {
                let c = &self.edge.env.config().client;
                self.read_deadline = Instant::now() + c.http_idle_timeout;
                if stop == Stop::NeedRead {
                    self.head_deadline = Instant::now() + c.http_response_timeout;
                }
                None
            }
            ReadOutcome::TimedOut => None,
            // A body cut short or a client that left: the same end.
            ReadOutcome::Eof | ReadOutcome::Failed(_) => Some(gone(self.edge, self.exchange)),
        }
    }
}

/// Waits for the actor's next move, the client's bytes (if wanted), the
/// deadline or a close request.
async fn wait(conn: &Conn, exchange: &Exchange, want_read: bool, deadline: Instant) -> Wake {
    if want_read {
        monoio::select! {
            w = wait_client(conn, deadline) => w,
            _ = exchange.changed() => Wake::Poked,
        }
    } else {
        monoio::select! {
            _ = monoio::time::sleep_until(deadline.into()) => Wake::TimedOut,
            w = super::signalled(&conn.control) => w,
            _ = exchange.changed() => Wake::Poked,
        }
    }
}

async fn write_out(edge: &EdgeSide, conn: &mut Conn, out: BytesMut) -> bool {
    let stall = edge.env.config().client.send_timeout;
    match write_all_or_stall(&mut conn.stream, out, stall).await {
        Ok(out) => {
            edge.env.pool.give_back(out);
            true
        }
        Err(_) => false,
    }
}

/// The whole response is written. A request whose body the client was
/// still sending ends here too: the runner stops, the connection closes.
fn complete(
    edge: &EdgeSide,
    exchange: &Exchange,
    body: &RequestBody,
    writer: &ResponseWriter,
) -> Next {
    let whole = body.is_complete();
    let cancel = (!whole).then_some("the response ended before the request body");
    edge.actors.http_close(exchange, cancel);
    match whole && writer.keeps_alive() {
        true => Next::KeepAlive,
        false => Next::Close,
    }
}

/// The client went away (or the worker closes it): the runner stops.
fn gone(edge: &EdgeSide, exchange: &Exchange) -> Next {
    edge.actors
        .http_close(exchange, Some("the client went away"));
    Next::Gone
}

/// The request cannot go on: the runner stops, the client gets `status`.
fn cancel_with(edge: &EdgeSide, exchange: &Exchange, status: Status, why: &str) -> Next {
    edge.actors.http_close(exchange, Some(why));
    Next::Refuse(Refusal::new(status, why))
}

/// A request body that breaks its framing or its limit: 400/413 if the
/// response has not started, else the connection just ends.
fn body_failed(
    edge: &EdgeSide,
    exchange: &Exchange,
    writer: &ResponseWriter,
    e: BodyError,
) -> Next {
    if writer.status().is_some() {
        edge.actors.http_close(exchange, Some(e.reason()));
        return Next::Close;
    }
    cancel_with(edge, exchange, e.status(), e.reason())
}
