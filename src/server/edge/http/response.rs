//! The actor's response on its way to the client, without IO: its head
//! with the hop-by-hop fields dropped and the gateway's own framing, then
//! its body pieces framed as declared (a `content-length` checked against
//! what the runner sends, chunked otherwise, nothing for HEAD, 204, 304).

use bytes::{Bytes, BytesMut};

use crate::http::body::{BodyEncoder, Framing};
use crate::http::forward::{actor_head, write_head, WireBody};
use crate::server::actors::Exchange;

/// Where the response stands after a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Progress {
    /// More is to come from the actor.
    Waiting,
    /// All of it is in the output.
    Complete,
    /// The runner broke the response's framing (more or less than its
    /// `content-length`): the client's connection ends after what was written.
    Broken,
}

/// What a turn produced.
pub(super) struct Turn {
    /// Body bytes taken from the actor (the credit to give back).
    pub consumed: u64,
    pub progress: Progress,
}

pub(super) struct ResponseWriter {
    head_request: bool,
    version: u8,
    keep_alive: bool,
    /// The head is written; `None` inside: the body is not written (HEAD,
    /// 204, 304) but still taken, so that the runner can finish.
    body: Option<Option<BodyEncoder>>,
    wire: Option<WireBody>,
    status: Option<u16>,
    pieces: Vec<Bytes>,
}

impl ResponseWriter {
    pub fn new(head_request: bool, version: u8, keep_alive: bool) -> Self {
        ResponseWriter {
            head_request,
            version,
            keep_alive,
            body: None,
            wire: None,
            status: None,
            pieces: Vec::new(),
        }
    }

    /// The status written, once the head is.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// Whether the connection may serve another request after a complete
    /// response (a close-delimited body ends it).
    pub fn keeps_alive(&self) -> bool {
        self.wire
            .map_or(self.keep_alive, |w| self.keeps_alive_with(w))
    }

    /// Appends to `out` what the exchange holds. `Err`: the actor's head
    /// cannot be written (the client gets 502).
    pub fn turn(&mut self, exchange: &Exchange, out: &mut BytesMut) -> Result<Turn, &'static str> {
        if self.body.is_none() {
            let Some(head) = exchange.take_head() else {
                let progress = Progress::Waiting;
                return Ok(Turn {
                    consumed: 0,
                    progress,
                });
            };
            let sorted = actor_head(&head.headers)?;
            let wire = WireBody::choose(
                head.status,
                self.head_request,
                self.version,
                head.body,
                sorted.length,
            );
            write_head(
                out,
                head.status,
                &sorted.fields,
                wire,
                self.keeps_alive_with(wire),
            );
            self.body = Some(encoder_for(wire));
            (self.wire, self.status) = (Some(wire), Some(head.status));
        }
        Ok(self.body_turn(exchange, out))
    }

    fn keeps_alive_with(&self, wire: WireBody) -> bool {
        self.keep_alive && wire != WireBody::UntilClose
    }

    fn body_turn(&mut self, exchange: &Exchange, out: &mut BytesMut) -> Turn {
        let ended = exchange.take_pieces(&mut self.pieces);
        let mut consumed = 0;
        let mut encoder = self.body.as_mut().and_then(Option::as_mut);
        let mut broken = false;
        for piece in self.pieces.drain(..) {
            consumed += piece.len() as u64;
            let Some(e) = encoder.as_deref_mut().filter(|_| !broken) else {
                continue;
            };
            match e.encode(piece) {
                Ok(Some(framed)) => {
                    out.extend_from_slice(framed.head.as_bytes());
                    out.extend_from_slice(&framed.payload);
                    out.extend_from_slice(framed.tail);
                }
                Ok(None) => {}
                Err(_) => broken = true,
            }
        }
        let progress = match (broken, ended, encoder) {
            (true, _, _) => Progress::Broken,
            (false, false, _) => Progress::Waiting,
            (false, true, None) => Progress::Complete,
            (false, true, Some(e)) => match e.finish() {
                Ok(tail) => {
                    out.extend_from_slice(tail);
                    Progress::Complete
                }
                Err(_) => Progress::Broken,
            },
        };
        Turn { consumed, progress }
    }
}

fn encoder_for(wire: WireBody) -> Option<BodyEncoder> {
    match wire {
        WireBody::None(_) => None,
        WireBody::Length(n) => Some(BodyEncoder::new(Framing::Length(n))),
        WireBody::Chunked => Some(BodyEncoder::new(Framing::Chunked)),
        WireBody::UntilClose => Some(BodyEncoder::new(Framing::UntilClose)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::actors::ResponseHead;

    fn head(status: u16, headers: &[(&str, &str)], body: bool) -> ResponseHead {
        let headers = headers
            .iter()
            .map(|(n, v)| (n.to_string(), Bytes::copy_from_slice(v.as_bytes())))
            .collect();
        ResponseHead {
            status,
            headers,
            body,
        }
    }

    fn turn(w: &mut ResponseWriter, x: &Exchange) -> (String, Progress) {
        let mut out = BytesMut::new();
        let t = w.turn(x, &mut out).unwrap();
        (String::from_utf8(out.to_vec()).unwrap(), t.progress)
    }

    #[test]
    fn a_body_without_a_length_is_chunked_and_ends_with_the_last_chunk() {
        let (mut w, x) = (ResponseWriter::new(false, 1, true), Exchange::new());
        assert_eq!(turn(&mut w, &x), (String::new(), Progress::Waiting));
        x.set_head(head(200, &[("x-a", "1"), ("connection", "x-a")], true));
        x.push_piece(Bytes::from_static(b"hello"));
        let (out, p) = turn(&mut w, &x);
        assert_eq!(p, Progress::Waiting);
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n5\r\nhello\r\n"
        );
        x.end();
        assert_eq!(turn(&mut w, &x), ("0\r\n\r\n".into(), Progress::Complete));
        assert!(w.keeps_alive());
    }

    #[test]
    fn a_declared_length_is_held_to_and_head_gets_no_body() {
        let (mut w, x) = (ResponseWriter::new(false, 1, true), Exchange::new());
        x.set_head(head(200, &[("content-length", "3")], true));
        x.push_piece(Bytes::from_static(b"abcd"));
        assert_eq!(turn(&mut w, &x).1, Progress::Broken, "more than declared");
        let (mut w, x) = (ResponseWriter::new(false, 1, true), Exchange::new());
        x.set_head(head(200, &[("content-length", "3")], true));
        x.push_piece(Bytes::from_static(b"ab"));
        x.end();
        assert_eq!(turn(&mut w, &x).1, Progress::Broken, "less than declared");
        let (mut w, x) = (ResponseWriter::new(true, 1, true), Exchange::new());
        x.set_head(head(200, &[("content-length", "3")], true));
        x.push_piece(Bytes::from_static(b"abc"));
        x.end();
        let (out, p) = turn(&mut w, &x);
        assert_eq!(p, Progress::Complete);
        assert!(
            out.ends_with("content-length: 3\r\nconnection: keep-alive\r\n\r\n"),
            "{out}"
        );
    }

    #[test]
    fn an_http_1_0_client_gets_a_close_delimited_body() {
        let (mut w, x) = (ResponseWriter::new(false, 0, false), Exchange::new());
        x.set_head(head(200, &[], true));
        x.push_piece(Bytes::from_static(b"x"));
        x.end();
        let (out, p) = turn(&mut w, &x);
        assert_eq!(p, Progress::Complete);
        assert!(out.ends_with("connection: close\r\n\r\nx"), "{out}");
        assert!(!w.keeps_alive());
        let (mut w, x) = (ResponseWriter::new(false, 1, true), Exchange::new());
        x.set_head(head(200, &[("content-length", "x")], true));
        assert!(
            w.turn(&x, &mut BytesMut::new()).is_err(),
            "an unreadable length: 502"
        );
    }
}
