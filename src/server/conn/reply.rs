//! Answers written before any WebSocket exists (an HTTP status, headers and
//! a one-line reason), followed by a lingering close.

use super::stream::Stream;
use tracing::debug;

use super::env::ConnEnv;
use super::io::{linger_close, write_all_or_stall};
use crate::http::response::write_response;
use crate::http::Status;

/// An HTTP answer the gateway writes itself: a status, headers and a body
/// (a reason, or JSON).
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

    /// 405 naming the one method the path answers.
    pub fn method_not_allowed(allowed: &'static str, reason: impl Into<String>) -> Self {
        let headers: &'static [(&str, &str)] = match allowed {
            "GET" => &[("Allow", "GET")],
            "GET, PUT, DELETE" => &[("Allow", "GET, PUT, DELETE")],
            _ => &[("Allow", "POST")],
        };
        Refusal {
            status: Status::METHOD_NOT_ALLOWED,
            headers,
            reason: reason.into(),
        }
    }

    /// 401 asking for a bearer token.
    pub fn unauthorized(reason: impl Into<String>) -> Self {
        Refusal {
            status: Status::UNAUTHORIZED,
            headers: &[("WWW-Authenticate", "Bearer")],
            reason: reason.into(),
        }
    }

    /// `body` as JSON, with its content type.
    pub fn json(status: Status, body: &impl serde::Serialize) -> Self {
        match serde_json::to_string(body) {
            Ok(json) => Refusal {
                status,
                headers: &[("Content-Type", "application/json")],
                reason: json,
            },
            Err(e) => Refusal::new(Status::INTERNAL_ERROR, format!("cannot encode JSON: {e}")),
        }
    }
}

/// Writes the answer (the body as one line), then closes politely.
pub(crate) async fn refuse(env: &ConnEnv, stream: Stream, scratch: bytes::BytesMut, r: Refusal) {
    if r.status != Status::OK {
        debug!(status = r.status.0, reason = %r.reason, "refusing request");
    }
    let mut out = env.pool.take();
    write_response(&mut out, r.status, r.headers, &format!("{}\n", r.reason));
    send_then_linger(env, stream, scratch, out).await;
}

/// Refuses a connection turned away on arrival (a limit, or overload):
/// the answer, then only a short linger. Under a flood these come by the
/// thousand a second; lingering each for `close_timeout` would keep tens
/// of thousands of sockets, polls and timers alive for clients that are
/// being turned away. A well-behaved client has sent its request by the
/// time it reads the answer, so it still gets it rather than a reset.
/// On a TLS listener nothing is written: the refusal comes before the
/// handshake, and no handshake is spent on it; the connection is closed
/// (cleanly, after the short linger).
pub(crate) async fn refuse_on_arrival(env: &ConnEnv, mut stream: Stream, r: Refusal) {
    if stream.is_tls() {
        return linger_close(stream, bytes::BytesMut::new(), ARRIVAL_LINGER).await;
    }
    let mut out = env.pool.take();
    write_response(&mut out, r.status, r.headers, &format!("{}\n", r.reason));
    if let Ok(out) = write_all_or_stall(&mut stream, out, ARRIVAL_LINGER).await {
        env.pool.give_back(out);
        linger_close(stream, bytes::BytesMut::new(), ARRIVAL_LINGER).await;
    }
}

/// How long a connection refused on arrival may take to read its answer.
const ARRIVAL_LINGER: std::time::Duration = std::time::Duration::from_millis(200);

/// Writes `out`, then discards input until the peer closes (bounded): the
/// peer reads our last word before its socket is torn down.
pub(crate) async fn send_then_linger(
    env: &ConnEnv,
    mut stream: Stream,
    scratch: bytes::BytesMut,
    out: bytes::BytesMut,
) {
    let config = env.config();
    let cfg = &config.client;
    if let Ok(out) = write_all_or_stall(&mut stream, out, cfg.send_timeout).await {
        env.pool.give_back(out);
        linger_close(stream, scratch, cfg.close_timeout).await;
    }
}

/// A request that is not a valid WebSocket upgrade (400/426).
impl From<crate::ws::handshake::Rejection> for Refusal {
    fn from(r: crate::ws::handshake::Rejection) -> Self {
        Refusal {
            status: r.status,
            headers: r.headers(),
            reason: r.reason.into(),
        }
    }
}
