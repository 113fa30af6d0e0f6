//! The gateway as an HTTP/1.1 client of a serverless function (issue 15),
//! without IO: the `GET` request's bytes, and the response read as bytes
//! arrive — its head (bounded), then its body through `body::BodyDecoder`
//! (bounded). The caller moves bytes between a socket and these.

use bytes::{Bytes, BytesMut};

use super::body::{response_framing, BodyDecoder, BodyError, BodyEvent, BodyLimits};
use super::response_head::{ResponseHead, ResponseHeadReader};
use crate::config::FunctionUrl;

/// The largest response head the gateway reads from a function.
pub const MAX_RESPONSE_HEAD_BYTES: usize = 16 * 1024;
/// Headers in that head, at most.
pub const MAX_RESPONSE_HEADERS: usize = 64;

/// `GET {url.path}{path}` with `headers` (names and values checked by the
/// pool's configuration: tokens, no CR/LF). `Connection: close`: one
/// request per connection, the body ends with it or its framing.
pub fn encode_get(url: &FunctionUrl, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(format!("GET {}{path} HTTP/1.1\r\n", url.path).as_bytes());
    out.extend_from_slice(format!("host: {}\r\n", url.authority()).as_bytes());
    out.extend_from_slice(b"user-agent: tether-gateway\r\naccept: */*\r\nconnection: close\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// What the response says next.
#[derive(Debug, PartialEq, Eq)]
pub enum ResponseEvent {
    Head(ResponseHead),
    Data(Bytes),
    End,
}

/// Why a response cannot be read on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseError {
    /// The head is malformed, too large or has too many headers.
    Head(String),
    /// The body's framing or size is not acceptable.
    Body(BodyError),
}

impl std::fmt::Display for ResponseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResponseError::Head(why) => write!(f, "bad response head: {why}"),
            ResponseError::Body(e) => write!(f, "bad response body: {e:?}"),
        }
    }
}

/// A response read as its bytes arrive: first the head, then body events.
pub struct ResponseReader {
    head: Option<ResponseHeadReader>,
    body: Option<BodyDecoder>,
    max_body: u64,
}

impl ResponseReader {
    /// A response whose body may be `max_body` bytes at most.
    pub fn new(max_body: u64) -> Self {
        ResponseReader {
            head: Some(ResponseHeadReader::new(
                MAX_RESPONSE_HEAD_BYTES,
                MAX_RESPONSE_HEADERS,
            )),
            body: None,
            max_body,
        }
    }

    /// The next event from what `buf` holds (consumed from its front);
    /// `Ok(None)`: read more. After an error, stop: the connection is done.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<ResponseEvent>, ResponseError> {
        if let Some(reader) = &mut self.head {
            let Some((head, len)) = reader
                .poll(buf)
                .map_err(|e| ResponseError::Head(format!("{e:?}")))?
            else {
                return Ok(None);
            };
            let _ = buf.split_to(len);
            let headers = head.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice()));
            let framing =
                response_framing(head.status, false, headers).map_err(ResponseError::Body)?;
            let limits = BodyLimits::with_max_body(self.max_body);
            self.body = Some(BodyDecoder::new(framing, limits).map_err(ResponseError::Body)?);
            self.head = None;
            return Ok(Some(ResponseEvent::Head(head)));
        }
        let Some(body) = &mut self.body else {
            return Ok(None);
        };
        Ok(body.decode(buf).map_err(ResponseError::Body)?.map(event))
    }

    /// The connection closed: the end of a body that runs until close, an
    /// error for anything cut short.
    pub fn at_eof(&mut self) -> Result<Option<ResponseEvent>, ResponseError> {
        match &mut self.body {
            None => Err(ResponseError::Head(
                "the connection closed before a response head".into(),
            )),
            Some(body) => Ok(body.at_eof().map_err(ResponseError::Body)?.map(event)),
        }
    }
}

fn event(e: BodyEvent) -> ResponseEvent {
    match e {
        BodyEvent::Data(d) => ResponseEvent::Data(d),
        BodyEvent::End => ResponseEvent::End,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> FunctionUrl {
        FunctionUrl::parse("http://fn.local:8080/api").unwrap()
    }

    /// Every event of `bytes` fed in pieces of `step`, then EOF.
    fn read_all(
        bytes: &[u8],
        step: usize,
        max_body: u64,
    ) -> Result<Vec<ResponseEvent>, ResponseError> {
        let mut reader = ResponseReader::new(max_body);
        let mut buf = BytesMut::new();
        let mut events = Vec::new();
        for piece in bytes.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            while let Some(e) = reader.next(&mut buf)? {
                events.push(e);
            }
        }
        events.extend(reader.at_eof()?);
        Ok(events)
    }

    fn body_of(events: &[ResponseEvent]) -> Vec<u8> {
        let mut body = Vec::new();
        for e in events {
            if let ResponseEvent::Data(d) = e {
                body.extend_from_slice(d);
            }
        }
        body
    }

    #[test]
    fn the_request_names_the_path_host_and_headers() {
        let req = encode_get(&url(), "/start", &[("x-tether-pool", "fn")]);
        let text = String::from_utf8(req).unwrap();
        assert!(
            text.starts_with("GET /api/start HTTP/1.1\r\nhost: fn.local:8080\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nx-tether-pool: fn\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn a_chunked_stream_reads_the_same_at_every_split() {
        let response = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n5\r\n: hi\n\r\n3\r\nabc\r\n0\r\n\r\n";
        for step in 1..response.len() {
            let events = read_all(response, step, 1024).unwrap();
            assert!(matches!(&events[0], ResponseEvent::Head(h) if h.status == 200));
            assert_eq!(body_of(&events), b": hi\nabc");
            assert_eq!(events.last(), Some(&ResponseEvent::End), "step {step}");
        }
    }

    #[test]
    fn a_body_until_close_ends_at_eof_and_a_cut_length_is_an_error() {
        let events = read_all(b"HTTP/1.1 200 OK\r\n\r\nabc", 4, 1024).unwrap();
        assert_eq!(body_of(&events), b"abc");
        assert_eq!(events.last(), Some(&ResponseEvent::End));
        let cut = read_all(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nabc", 4, 1024);
        assert_eq!(cut.unwrap_err(), ResponseError::Body(BodyError::Truncated));
        assert!(read_all(b"HTTP/1.1 2", 4, 1024).is_err(), "no head at all");
    }

    #[test]
    fn limits_hold_before_trust() {
        let big = read_all(b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n", 8, 10);
        assert_eq!(big.unwrap_err(), ResponseError::Body(BodyError::TooLarge));
        let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
        head.extend(std::iter::repeat_n(b'a', MAX_RESPONSE_HEAD_BYTES + 1));
        assert!(matches!(
            read_all(&head, 512, 10),
            Err(ResponseError::Head(_))
        ));
        let smuggled =
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(matches!(
            read_all(smuggled, 8, 10),
            Err(ResponseError::Body(_))
        ));
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 7u64;
        for _ in 0..2000 {
            let len = (seed % 200) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let pick = b"HTTP/1.1 200 OK\r\n:0123456789abcdef;";
                    pick[(seed >> 33) as usize % pick.len()]
                })
                .collect();
            let _ = read_all(&bytes, 1 + (seed % 7) as usize, 64);
        }
    }
}
