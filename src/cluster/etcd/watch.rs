//! A watch stream: one `POST /v3/watch` whose chunked answer never ends on
//! its own, carrying one JSON message per line. Lines are bounded; reads
//! wait at most as long as the caller says, so the reader can look at its
//! stop flag between messages.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;

use super::conn::{Conn, Endpoint};
use super::reply::{self, Error, WatchMessage, MAX_BODY_BYTES, MAX_WATCH_MESSAGE_BYTES};
use crate::http::client::{ResponseEvent, ResponseReader};

pub struct WatchStream {
    conn: Conn,
    reader: ResponseReader,
    /// Bytes of the message being received (no newline yet).
    line: Vec<u8>,
}

impl WatchStream {
    /// Connects, sends the create request and reads the answer's head.
    pub fn open(
        ep: &Endpoint,
        tls: Option<&Arc<ClientConfig>>,
        token: Option<&str>,
        body: &[u8],
        deadline: Instant,
    ) -> Result<WatchStream, Error> {
        let mut conn = Conn::connect(ep, tls, deadline)?;
        conn.send("/v3/watch", token, body, deadline)?;
        let mut reader = ResponseReader::new(u64::MAX);
        let timed_out = || Error::Io("timed out".into());
        let Some(ResponseEvent::Head(head)) = conn.event(&mut reader, deadline)? else {
            return Err(timed_out());
        };
        if head.status != 200 {
            let mut err = Vec::new();
            while let Some(ResponseEvent::Data(d)) = conn.event(&mut reader, deadline)? {
                if err.len() + d.len() > MAX_BODY_BYTES {
                    break;
                }
                err.extend_from_slice(&d);
            }
            return Err(reply::error(head.status, &err));
        }
        Ok(WatchStream {
            conn,
            reader,
            line: Vec::new(),
        })
    }

    /// The next message, waiting at most `wait`; `Ok(None)`: none yet. An
    /// error ends the stream (etcd closed it, it broke, or it sent
    /// something unacceptable).
    pub fn next(&mut self, wait: Duration) -> Result<Option<WatchMessage>, Error> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(at) = self.line.iter().position(|&b| b == b'\n') {
                let rest = self.line.split_off(at + 1);
                let line = std::mem::replace(&mut self.line, rest);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return reply::watch_message(&line).map(Some);
            }
            match self.conn.event(&mut self.reader, deadline)? {
                None => return Ok(None),
                Some(ResponseEvent::Data(d)) => {
                    if self.line.len() + d.len() > MAX_WATCH_MESSAGE_BYTES {
                        return Err(Error::Bad("watch message too long".into()));
                    }
                    self.line.extend_from_slice(&d);
                }
                Some(_) => return Err(Error::Io("watch stream ended".into())),
            }
        }
    }
}
