//! HTTP requests to a runner's actors (PROTOCOL §7b), the runner's side:
//! what an actor is told of a request, and the responses it writes, sent
//! within the gateway's credit. A streamed response's bytes beyond the
//! credit wait here (bounded by `MAX_BACKLOG`: a client that stops
//! reading cannot make the runner hold more) and leave as credit comes.

use std::collections::{HashMap, VecDeque};

use bytes::{Bytes, BytesMut};

use crate::tunnel::codec::limits;
use crate::tunnel::{encode_frame, encode_http_body, Frame, HttpResponse as ResponseFrame};

/// A request's id, unique within the gateway (a replay has a new one).
pub type RequestId = u64;

/// The largest body piece sent at once (PROTOCOL §7b).
pub const MAX_PIECE: usize = 64 * 1024;

/// Response bytes a request may have waiting for credit; past it the
/// request is cancelled (the client is not reading).
pub const MAX_BACKLOG: usize = 4 * 1024 * 1024;

/// A client's HTTP request, as its actor sees it.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub id: RequestId,
    pub method: String,
    /// After the actor's prefix (`/actors/chat/lobby/history` → `/history`),
    /// not percent-decoded.
    pub path: String,
    /// After the `?`, without it (a client token removed).
    pub query: String,
    /// End-to-end headers, names lower-case.
    pub headers: Vec<(String, Bytes)>,
    /// The client's address as the gateway saw it.
    pub peer: Option<std::net::SocketAddr>,
    /// A body follows: `on_request_body` calls, then `on_request_end`.
    pub has_body: bool,
}

impl HttpRequest {
    /// The first value of a header (names are lower-case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| &v[..])
    }
}

/// The body of a response.
pub enum ResponseBody {
    Empty,
    /// All of it now (sent as credit allows).
    Full(Bytes),
    /// Written later with `Ctx::write_body`, ended with `Ctx::end_body`.
    Stream,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    NotYet,
    Streaming,
    /// Ended by the actor; the backlog still leaves.
    Ending,
}

struct Request {
    actor_id: u64,
    answer: Answer,
    /// Response body bytes the gateway allows still.
    credit: u64,
    backlog: VecDeque<Bytes>,
    backlog_bytes: usize,
}

/// The requests of one tunnel's actors.
#[derive(Default)]
pub(crate) struct Requests {
    map: HashMap<RequestId, Request>,
}

impl Requests {
    pub fn insert(&mut self, id: RequestId, actor_id: u64) {
        let r = Request {
            actor_id,
            answer: Answer::NotYet,
            credit: limits::HTTP_INITIAL_CREDIT,
            backlog: VecDeque::new(),
            backlog_bytes: 0,
        };
        self.map.insert(id, r);
    }

    pub fn actor_of(&self, id: RequestId) -> Option<u64> {
        self.map.get(&id).map(|r| r.actor_id)
    }

    /// Forgets a request the gateway cancelled; whether it was known.
    pub fn remove(&mut self, id: RequestId) -> bool {
        self.map.remove(&id).is_some()
    }

    /// The response head; false if the request is unknown or answered.
    pub fn respond(
        &mut self,
        out: &mut BytesMut,
        id: RequestId,
        (status, headers): (u16, Vec<(String, Bytes)>),
        body: ResponseBody,
    ) -> bool {
        let Some(r) = self.map.get_mut(&id).filter(|r| r.answer == Answer::NotYet) else {
            return false;
        };
        // What a runner may not send would close the whole tunnel.
        let status = if (100..600).contains(&status) && status != 101 && status >= 200 {
            status
        } else {
            500
        };
        let has_body = !matches!(body, ResponseBody::Empty);
        let length = match &body {
            // Known: the client gets it as a length, and a HEAD its size.
            ResponseBody::Full(b) => {
                Some(("content-length".into(), Bytes::from(b.len().to_string())))
            }
            _ => None,
        };
        let mut headers = headers;
        if length.is_some() {
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case("content-length"));
        }
        let reserved = length
            .as_ref()
            .map_or((0, 0), |(n, v): &(String, Bytes)| (1, n.len() + v.len()));
        let mut headers = clean(headers, reserved);
        headers.extend(length);
        let head = ResponseFrame {
            req_id: id,
            status,
            headers,
            body: has_body,
        };
        encode_frame(out, &Frame::HttpResponse(head));
        r.answer = Answer::Streaming;
        match body {
            ResponseBody::Empty => {
                self.map.remove(&id);
            }
            ResponseBody::Full(bytes) => {
                self.push(out, id, bytes, false);
                self.end(out, id);
            }
            ResponseBody::Stream => {}
        }
        true
    }

    /// Writes body bytes (sent now within the credit, the rest kept);
    /// false if the request is gone, or was cancelled for a backlog over
    /// `MAX_BACKLOG`.
    pub fn write(&mut self, out: &mut BytesMut, id: RequestId, data: &[u8]) -> bool {
        self.push(out, id, Bytes::copy_from_slice(data), true)
    }

    /// `bounded`: the backlog may not pass `MAX_BACKLOG` (a whole body the
    /// actor handed over is held anyway, and waits however long it is).
    fn push(&mut self, out: &mut BytesMut, id: RequestId, mut data: Bytes, bounded: bool) -> bool {
        let Some(r) = self
            .map
            .get_mut(&id)
            .filter(|r| r.answer == Answer::Streaming)
        else {
            return false;
        };
        while r.backlog.is_empty() && r.credit > 0 && !data.is_empty() {
            let n = data.len().min(MAX_PIECE).min(r.credit as usize);
            encode_http_body(out, id, &data[..n]);
            r.credit -= n as u64;
            data = data.slice(n..);
        }
        if data.is_empty() {
            return true;
        }
        r.backlog_bytes += data.len();
        if bounded && r.backlog_bytes > MAX_BACKLOG {
            self.cancel(out, id, "the client does not read the response");
            return false;
        }
        r.backlog.push_back(data);
        true
    }

    /// Ends the body (once the backlog has left).
    pub fn end(&mut self, out: &mut BytesMut, id: RequestId) {
        if let Some(r) = self
            .map
            .get_mut(&id)
            .filter(|r| r.answer == Answer::Streaming)
        {
            r.answer = Answer::Ending;
            self.flush(out, id);
        }
    }

    /// Bytes of `id`'s response waiting for credit.
    pub fn backlog(&self, id: RequestId) -> usize {
        self.map.get(&id).map_or(0, |r| r.backlog_bytes)
    }

    /// Gives the request up: the gateway is told, it is forgotten.
    pub fn cancel(&mut self, out: &mut BytesMut, id: RequestId, reason: &str) {
        if self.map.remove(&id).is_some() {
            let reason = reason.chars().take(limits::HTTP_REASON / 4).collect();
            encode_frame(out, &Frame::HttpCancel { req_id: id, reason });
        }
    }

    /// More credit; returns whether a backlog emptied (the actor may write).
    pub fn credit(&mut self, out: &mut BytesMut, id: RequestId, n: u64) -> bool {
        let Some(r) = self.map.get_mut(&id) else {
            return false;
        };
        let had = r.backlog_bytes;
        r.credit = r.credit.saturating_add(n);
        self.flush(out, id);
        had > 0 && self.backlog(id) == 0 && self.map.contains_key(&id)
    }

    /// Sends what the credit allows of the backlog; an ended body whose
    /// backlog is gone gets its `HttpEnd`.
    fn flush(&mut self, out: &mut BytesMut, id: RequestId) {
        let Some(r) = self.map.get_mut(&id) else {
            return;
        };
        while r.credit > 0 {
            let Some(mut piece) = r.backlog.pop_front() else {
                break;
            };
            let n = piece.len().min(MAX_PIECE).min(r.credit as usize);
            encode_http_body(out, id, &piece[..n]);
            r.credit -= n as u64;
            r.backlog_bytes -= n;
            if n < piece.len() {
                r.backlog.push_front(piece.split_off(n));
            }
        }
        if r.answer == Answer::Ending && r.backlog.is_empty() {
            encode_frame(out, &Frame::HttpEnd { req_id: id });
            self.map.remove(&id);
        }
    }

    /// The actor stops (a move, a sleep): every request of it is answered
    /// or cancelled before the gateway hears it stopped. Unanswered ones
    /// were not acted on as far as the gateway knows: it sends them to the
    /// actor's next runner; started responses end there (the client sees
    /// an incomplete message).
    pub fn stop_actor(&mut self, out: &mut BytesMut, actor_id: u64) {
        let ids: Vec<RequestId> = self
            .map
            .iter()
            .filter(|(_, r)| r.actor_id == actor_id)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.cancel(out, id, "the actor stopped");
        }
    }
}

/// Header fields as the tunnel carries them: lower-case names, values
/// without CR, LF or NUL (a field that breaks these is dropped), and no
/// more fields or bytes than a head may carry, less `reserved` (fields,
/// bytes) for what is added after (a field past them is dropped too).
fn clean(headers: Vec<(String, Bytes)>, reserved: (usize, usize)) -> Vec<(String, Bytes)> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    let max_fields = limits::HEADERS as usize - reserved.0;
    let max_bytes = limits::HTTP_HEADER_BYTES - reserved.1;
    let (mut kept, mut total, mut dropped) = (Vec::new(), 0usize, 0usize);
    for (n, v) in headers {
        let valid = !n.is_empty()
            && n.chars().all(token)
            && !v.iter().any(|b| matches!(b, b'\r' | b'\n' | 0));
        let size = n.len() + v.len();
        if !valid || kept.len() == max_fields || total + size > max_bytes {
            dropped += 1;
            continue;
        }
        total += size;
        kept.push((n.to_ascii_lowercase(), v));
    }
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "response header fields dropped: invalid, or past what a head may carry"
        );
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::decode_frames;

    fn frames(out: &mut BytesMut) -> Vec<Frame> {
        decode_frames(out.split().freeze())
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn a_streamed_body_waits_for_credit_and_ends_after_its_backlog() {
        let (mut r, mut out) = (Requests::default(), BytesMut::new());
        r.insert(7, 1);
        assert!(r.respond(&mut out, 7, (200, vec![]), ResponseBody::Stream));
        let big = vec![b'x'; limits::HTTP_INITIAL_CREDIT as usize + 10];
        assert!(r.write(&mut out, 7, &big));
        r.end(&mut out, 7);
        let sent: usize = frames(&mut out)
            .iter()
            .map(|f| match f {
                Frame::HttpBody { data, .. } => {
                    assert!(data.len() <= MAX_PIECE);
                    data.len()
                }
                _ => 0,
            })
            .sum();
        assert_eq!(sent as u64, limits::HTTP_INITIAL_CREDIT);
        assert_eq!(r.backlog(7), 10);
        assert!(!r.credit(&mut out, 7, 4), "6 bytes still wait");
        assert!(!r.credit(&mut out, 7, 100), "ended: nothing more to write");
        assert!(r.actor_of(7).is_none(), "ended and forgotten");
        let f = frames(&mut out);
        assert!(matches!(&f[0], Frame::HttpBody { data, .. } if data.len() == 4));
        assert!(matches!(&f[1], Frame::HttpBody { data, .. } if data.len() == 6));
        assert_eq!(f[2], Frame::HttpEnd { req_id: 7 });
    }

    #[test]
    fn an_open_stream_whose_backlog_left_may_be_written_again() {
        let (mut r, mut out) = (Requests::default(), BytesMut::new());
        r.insert(5, 1);
        r.respond(&mut out, 5, (200, vec![]), ResponseBody::Stream);
        let credit = limits::HTTP_INITIAL_CREDIT as usize;
        assert!(r.write(&mut out, 5, &vec![1; credit + 1]));
        assert!(r.credit(&mut out, 5, 1), "the backlog left: writable");
        assert!(!r.credit(&mut out, 5, 1), "nothing waited");
    }

    #[test]
    fn a_backlog_past_its_bound_cancels_and_a_stop_cancels_the_rest() {
        let (mut r, mut out) = (Requests::default(), BytesMut::new());
        r.insert(1, 9);
        r.insert(2, 9);
        r.respond(&mut out, 1, (200, vec![]), ResponseBody::Stream);
        let chunk = vec![0u8; MAX_BACKLOG];
        assert!(r.write(&mut out, 1, &chunk));
        assert!(!r.write(&mut out, 1, &chunk));
        assert!(r.actor_of(1).is_none());
        r.stop_actor(&mut out, 9);
        let cancels = frames(&mut out)
            .into_iter()
            .filter(|f| matches!(f, Frame::HttpCancel { .. }))
            .count();
        assert_eq!(cancels, 2);
        assert!(!r.respond(&mut out, 2, (200, vec![]), ResponseBody::Empty));
    }

    #[test]
    fn headers_and_statuses_stay_within_what_the_tunnel_carries() {
        let (mut r, mut out) = (Requests::default(), BytesMut::new());
        r.insert(3, 1);
        let headers = vec![
            (
                "Content-Type".to_string(),
                Bytes::from_static(b"text/plain"),
            ),
            ("bad name".to_string(), Bytes::from_static(b"x")),
            ("x-split".to_string(), Bytes::from_static(b"a\r\nb")),
        ];
        r.respond(&mut out, 3, (101, headers), ResponseBody::Empty);
        let Frame::HttpResponse(head) = &frames(&mut out)[0] else {
            panic!()
        };
        assert_eq!(head.status, 500);
        assert_eq!(head.headers.len(), 1);
        assert_eq!(head.headers[0].0, "content-type");
    }

    /// Every head `respond` sends decodes at the gateway: too many or too
    /// large fields would close the whole tunnel.
    #[test]
    fn a_head_past_the_tunnels_bounds_is_trimmed_so_the_gateway_takes_it() {
        let many: Vec<(String, Bytes)> = (0..200)
            .map(|i| (format!("x-{i}"), Bytes::from_static(b"v")))
            .collect();
        let large: Vec<(String, Bytes)> = (0..4)
            .map(|i| (format!("x-big-{i}"), Bytes::from(vec![b'a'; 20_000])))
            .collect();
        let bodies = || {
            [
                ResponseBody::Empty,
                ResponseBody::Stream,
                ResponseBody::Full(Bytes::from_static(b"body")),
            ]
        };
        for headers in [many, large] {
            for body in bodies() {
                let (mut r, mut out) = (Requests::default(), BytesMut::new());
                r.insert(9, 1);
                assert!(r.respond(&mut out, 9, (200, headers.clone()), body));
                let frames: Vec<_> = decode_frames(out.split().freeze()).collect();
                let Ok(Frame::HttpResponse(head)) = &frames[0] else {
                    panic!("{:?}", frames[0])
                };
                let total: usize = head.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
                assert!(head.headers.len() <= limits::HEADERS as usize);
                assert!(total <= limits::HTTP_HEADER_BYTES);
                assert!(!head.headers.is_empty(), "what fits is kept");
            }
        }
    }
}
