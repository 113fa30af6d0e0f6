//! One blocking HTTP/1.1 connection to one etcd endpoint: a request out,
//! its response read through the gateway's sans-IO `ResponseReader` (head
//! and body bounded, chunked or not). Every wait has a deadline; a
//! connection that saw any error is dropped, never reused.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::reply::Error;
use crate::http::client::{ResponseEvent, ResponseReader};

/// An etcd endpoint this client can reach: plain `http://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port`, also the `Host` header.
    pub authority: String,
}

impl Endpoint {
    /// TLS to etcd is not implemented yet: an `https://` URL is refused
    /// here (and by the configuration check) rather than sent in clear.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        if url.starts_with("https://") {
            return Err(format!("{url}: https etcd endpoints are not supported yet"));
        }
        match url.strip_prefix("http://") {
            Some(a) if !a.is_empty() && !a.contains('/') => Ok(Endpoint {
                authority: a.to_owned(),
            }),
            _ => Err(format!("{url}: not http://host:port")),
        }
    }
}

pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    authority: String,
}

fn left(deadline: Instant) -> Result<Duration, Error> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() {
        return Err(Error::Io("timed out".into()));
    }
    Ok(d)
}

fn io(e: std::io::Error) -> Error {
    Error::Io(e.to_string())
}

impl Conn {
    /// Connects to the first address of `ep` that answers by `deadline`.
    pub fn connect(ep: &Endpoint, deadline: Instant) -> Result<Conn, Error> {
        let addrs = ep.authority.to_socket_addrs().map_err(io)?;
        let mut last = Error::Io(format!("{}: no address", ep.authority));
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, left(deadline)?) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(Conn {
                        stream,
                        buf: BytesMut::with_capacity(16 * 1024),
                        authority: ep.authority.clone(),
                    });
                }
                Err(e) => last = Error::Io(format!("{addr}: {e}")),
            }
        }
        Err(last)
    }

    /// Sends `POST path` with a JSON body.
    pub fn send(
        &mut self,
        path: &str,
        token: Option<&str>,
        body: &[u8],
        deadline: Instant,
    ) -> Result<(), Error> {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            self.authority,
            body.len()
        );
        if let Some(t) = token {
            req.push_str(&format!("authorization: {t}\r\n"));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.stream
            .set_write_timeout(Some(left(deadline)?))
            .map_err(io)?;
        self.stream.write_all(&bytes).map_err(io)
    }

    /// The next response event by `deadline`; `Ok(None)` when the deadline
    /// passed first (the caller decides whether that is an error).
    pub fn event(
        &mut self,
        reader: &mut ResponseReader,
        deadline: Instant,
    ) -> Result<Option<ResponseEvent>, Error> {
        loop {
            let bad = |e| Error::Bad(format!("{e}"));
            if let Some(e) = reader.next(&mut self.buf).map_err(bad)? {
                return Ok(Some(e));
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                return Ok(None);
            }
            self.stream.set_read_timeout(Some(wait)).map_err(io)?;
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    let end = reader.at_eof().map_err(bad)?;
                    return end
                        .map(Some)
                        .ok_or_else(|| Error::Io("connection closed".into()));
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if is_timeout(&e) => return Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(e)),
            }
        }
    }

    /// A whole response to a request already sent: its status and body (at
    /// most `max` bytes), and whether the connection may carry another.
    pub fn response(
        &mut self,
        max: usize,
        deadline: Instant,
    ) -> Result<(u16, Vec<u8>, bool), Error> {
        let mut reader = ResponseReader::new(max as u64);
        let timed_out = || Error::Io("timed out".into());
        let Some(ResponseEvent::Head(head)) = self.event(&mut reader, deadline)? else {
            return Err(timed_out());
        };
        let reusable = head.version == 1
            && !head
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case(b"close"));
        let mut body = Vec::new();
        loop {
            match self.event(&mut reader, deadline)?.ok_or_else(timed_out)? {
                ResponseEvent::Data(d) => append(&mut body, &d, max)?,
                ResponseEvent::End => return Ok((head.status, body, reusable)),
                ResponseEvent::Head(_) => return Err(Error::Bad("a second head".into())),
            }
        }
    }
}

fn append(body: &mut Vec<u8>, d: &Bytes, max: usize) -> Result<(), Error> {
    if body.len() + d.len() > max {
        return Err(Error::Bad(format!("answer over {max} bytes")));
    }
    body.extend_from_slice(d);
    Ok(())
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:2379").unwrap().authority,
            "127.0.0.1:2379"
        );
        assert!(Endpoint::parse("https://e:2379")
            .unwrap_err()
            .contains("https"));
        assert!(Endpoint::parse("http://e:2379/v3").is_err());
        assert!(Endpoint::parse("e:2379").is_err());
    }

    /// A fake etcd on a loopback socket answers one chunked response with
    /// a trailer, then one with a length, on the same connection.
    #[test]
    fn keep_alive_with_chunked_and_trailers() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ep = Endpoint {
            authority: l.local_addr().unwrap().to_string(),
        };
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut got = Vec::new();
            let mut b = [0u8; 4096];
            while got.windows(2).filter(|w| w == b"{}").count() < 2 {
                let n = s.read(&mut b).unwrap();
                got.extend_from_slice(&b[..n]);
            }
            s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x\r\n\r\n3\r\nabc\r\n0\r\nx: y\r\n\r\nHTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\nok").unwrap();
            String::from_utf8(got).unwrap()
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut c = Conn::connect(&ep, deadline).unwrap();
        c.send("/v3/a", Some("tok"), b"{}", deadline).unwrap();
        c.send("/v3/b", None, b"{}", deadline).unwrap();
        assert_eq!(
            c.response(100, deadline).unwrap(),
            (200, b"abc".to_vec(), true)
        );
        assert_eq!(
            c.response(100, deadline).unwrap(),
            (404, b"ok".to_vec(), true)
        );
        let sent = server.join().unwrap();
        assert!(sent.starts_with("POST /v3/a HTTP/1.1\r\nhost: 127.0.0.1:"));
        assert!(sent.contains("authorization: tok\r\n"));
        assert!(sent.contains("content-length: 2\r\n"));
    }
}
