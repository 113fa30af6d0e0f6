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

/// Bytes of pipelined requests read while a response is on its way: past
/// it the client is not read until the response is done.
const PIPELINED_BYTES: usize = 64 * 1024;

/// Far enough to mean "no deadline" and near enough for a timer.
const NEVER: Duration = Duration::from_secs(24 * 3600);

pub(super) async fn pump(
    edge: &EdgeSide,
    conn: &mut Conn,
    exchange: &Exchange,
    (framing, limits): (Framing, BodyLimits),
    s: Settings,
) -> Next {
    let config = edge.env.config();
    let c = &config.client;
    let mut body = match RequestBody::new(framing, limits) {
        Ok(b) => b,
        Err(e) => return cancel_with(edge, exchange, e.status(), e.reason()),
    };
    if s.continue_first
        && !write_out(
            edge,
            conn,
            BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\n"[..]),
        )
        .await
    {
        return gone(edge, exchange);
    }
    let mut writer = ResponseWriter::new(s.head_request, s.version, s.keep_alive);
    let mut head_deadline = Instant::now() + c.http_response_timeout;
    let mut read_deadline = Instant::now() + c.http_idle_timeout;
    let mut counted = false;
    loop {
        let stop = match body.forward(&mut conn.buf, exchange, (&edge.actors, &conn.control)) {
            Ok(stop) => stop,
            Err(e) => return body_failed(edge, exchange, &writer, e),
        };
        let mut out = edge.env.pool.take();
        let turn = match writer.turn(exchange, &mut out) {
            Ok(turn) => turn,
            Err(why) => {
                return cancel_with(
                    edge,
                    exchange,
                    Status::BAD_GATEWAY,
                    &format!("bad_response: {why}"),
                )
            }
        };
        if !out.is_empty() && !write_out(edge, conn, out).await {
            return gone(edge, exchange);
        }
        if let (false, Some(status)) = (counted, writer.status()) {
            edge.stats.count_http(status);
            counted = true;
        }
        if turn.consumed > 0 {
            edge.stats
                .http_bytes_out
                .fetch_add(turn.consumed, Ordering::Relaxed);
            edge.actors.http_grant(exchange, turn.consumed);
        }
        match turn.progress {
            Progress::Complete => return complete(edge, exchange, &body, &writer),
            Progress::Broken => {
                edge.actors
                    .http_close(exchange, Some("response framing broken"));
                return Next::Close;
            }
            Progress::Waiting => {}
        }
        match exchange.outcome() {
            // A response that started can only be cut.
            Some(Outcome::Cut) => return Next::Close,
            Some(_) if writer.status().is_some() => return Next::Close,
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
                return Next::Refuse(r);
            }
            None => {}
        }
        let now = Instant::now();
        if writer.status().is_none() && now >= head_deadline {
            let why =
                "gateway_timeout: no response from the actor within client.http_response_timeout";
            return cancel_with(edge, exchange, Status::GATEWAY_TIMEOUT, why);
        }
        if stop == Stop::NeedRead && now >= read_deadline {
            let why = "request body stalled for client.http_idle_timeout";
            return cancel_with(edge, exchange, Status::REQUEST_TIMEOUT, why);
        }
        // Pipelined bytes after a complete body are kept for the next
        // request; reading them also shows a client that went away.
        let want_read = match stop {
            Stop::NeedRead => true,
            Stop::Done => conn.buf.len() < PIPELINED_BYTES,
            Stop::NoCredit => false,
        };
        let mut deadline = now + NEVER;
        if writer.status().is_none() {
            deadline = deadline.min(head_deadline);
        }
        if stop == Stop::NeedRead {
            deadline = deadline.min(read_deadline);
        }
        match wait(conn, exchange, want_read, deadline).await {
            Wake::Closing => return gone(edge, exchange),
            Wake::TimedOut | Wake::Poked => continue,
            Wake::Readable => {}
        }
        if !want_read {
            continue;
        }
        let room = edge.env.pool.read_room(true);
        match read_some(edge, conn, room).await {
            ReadOutcome::Data(_) => {
                read_deadline = Instant::now() + c.http_idle_timeout;
                if stop == Stop::NeedRead {
                    head_deadline = Instant::now() + c.http_response_timeout;
                }
            }
            ReadOutcome::TimedOut => {}
            ReadOutcome::Eof | ReadOutcome::Failed(_) => {
                let _ = body.at_eof();
                return gone(edge, exchange);
            }
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
