//! The function client: `GET {url}{path}` on the worker's runtime, the
//! response head within a deadline, then its body as it streams, every
//! length bounded (`http::client`). One request per connection.

use std::time::Instant;

use bytes::BytesMut;

use super::transport::{within, Conn, ConnectError};
use crate::config::{FunctionUrl, ServerlessPool};
use crate::http::client::{encode_get, ResponseEvent, ResponseReader};
use crate::http::response_head::ResponseHead;

/// Why a call failed, sorted by cause (`core::FAILURE_CAUSES`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallError {
    /// Refused or unreachable (or a name that does not resolve).
    Connect(String),
    /// No answer within the deadline.
    Timeout(String),
    /// Not HTTP, a bound broken, a TLS failure.
    Protocol(String),
}

impl CallError {
    pub fn cause(&self) -> usize {
        match self {
            CallError::Connect(_) => 1,
            CallError::Timeout(_) => 2,
            CallError::Protocol(_) => 3,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Connect(w) => write!(f, "unreachable: {w}"),
            CallError::Timeout(w) => write!(f, "timeout: {w}"),
            CallError::Protocol(w) => write!(f, "bad answer: {w}"),
        }
    }
}

/// A response being read: its head, and its body to come.
pub(crate) struct Response {
    pub head: ResponseHead,
    conn: Conn,
    reader: ResponseReader,
    buf: BytesMut,
    done: bool,
}

/// The pool's own headers, then the gateway's.
pub(crate) fn headers_of<'a>(
    pool: &'a ServerlessPool,
    ours: &'a [(&'a str, String)],
) -> Vec<(&'a str, &'a str)> {
    let theirs = pool.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
    theirs
        .chain(ours.iter().map(|(n, v)| (*n, v.as_str())))
        .collect()
}

/// Sends the request and reads the response head, all before `deadline`;
/// the body may be `max_body` bytes at most.
pub(crate) async fn call(
    url: &FunctionUrl,
    path: &str,
    headers: &[(&str, &str)],
    max_body: u64,
    deadline: Instant,
) -> Result<Response, CallError> {
    let what = format!("GET {}{path}", url.path);
    let timeout = || CallError::Timeout(format!("{what}: no answer in time"));
    let conn = within(deadline, Conn::connect(url))
        .await
        .ok_or_else(timeout)?;
    let mut conn = conn.map_err(|e| match e {
        ConnectError::Connect(w) => CallError::Connect(w),
        ConnectError::Tls(w) => CallError::Protocol(w),
    })?;
    let request = encode_get(url, path, headers);
    let head = within(deadline, async {
        conn.send(request)
            .await
            .map_err(|e| CallError::Connect(e.to_string()))?;
        let mut reader = ResponseReader::new(max_body);
        let mut buf = BytesMut::with_capacity(4096);
        loop {
            match reader.next(&mut buf) {
                Ok(Some(ResponseEvent::Head(head))) => return Ok((head, reader, buf)),
                Ok(_) => {}
                Err(e) => return Err(CallError::Protocol(e.to_string())),
            }
            let n = conn
                .recv(&mut buf)
                .await
                .map_err(|e| CallError::Protocol(e.to_string()))?;
            if n == 0 {
                let why = "the connection closed before a response head";
                return Err(CallError::Protocol(why.into()));
            }
        }
    })
    .await
    .ok_or_else(timeout)??;
    let (head, reader, buf) = head;
    Ok(Response {
        head,
        conn,
        reader,
        buf,
        done: false,
    })
}

impl Response {
    /// The next piece of the body as it arrives, `None` at its end; errors
    /// for a body that breaks its framing or its bound, or a connection
    /// that fails.
    pub async fn next_piece(&mut self) -> Result<Option<bytes::Bytes>, CallError> {
        let bad = |e: String| CallError::Protocol(e);
        while !self.done {
            match self
                .reader
                .next(&mut self.buf)
                .map_err(|e| bad(e.to_string()))?
            {
                Some(ResponseEvent::Data(d)) => return Ok(Some(d)),
                Some(ResponseEvent::End) => self.done = true,
                Some(ResponseEvent::Head(_)) => return Err(bad("a second head".into())),
                None => {
                    let n = self.conn.recv(&mut self.buf).await;
                    if n.map_err(|e| bad(e.to_string()))? == 0 {
                        // Only the end of a body that runs until close.
                        self.reader.at_eof().map_err(|e| bad(e.to_string()))?;
                        self.done = true;
                    }
                }
            }
        }
        Ok(None)
    }

    /// The whole body (at most the call's `max_body`).
    pub async fn body(&mut self) -> Result<Vec<u8>, CallError> {
        let mut body = Vec::new();
        while let Some(piece) = self.next_piece().await? {
            body.extend_from_slice(&piece);
        }
        Ok(body)
    }
}
