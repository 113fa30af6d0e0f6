//! One blocking HTTP/1.1 connection to one etcd endpoint, plain or through
//! rustls: a request out, its response read through the gateway's sans-IO
//! `ResponseReader` (head and body bounded, chunked or not). Every wait has
//! a deadline; a connection that saw any error is dropped, never reused.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use super::reply::Error;
use crate::http::client::{ResponseEvent, ResponseReader};

/// An etcd endpoint: `http://host:port` or `https://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port`, also the `Host` header.
    pub authority: String,
    /// The host alone (no brackets), the name TLS verifies.
    pub host: String,
    pub tls: bool,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let (tls, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(r), _) => (false, r),
            (_, Some(r)) => (true, r),
            _ => return Err(format!("{url}: not http:// or https://")),
        };
        let host = rest
            .rsplit_once(':')
            .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
            .filter(|h| !h.is_empty() && !rest.contains('/'))
            .ok_or_else(|| format!("{url}: not scheme://host:port"))?;
        Ok(Endpoint {
            authority: rest.to_owned(),
            host: host.to_owned(),
            tls,
        })
    }
}

/// The bytes of a connection, in clear or through TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

pub struct Conn {
    stream: Stream,
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
    /// Connects to the first address of `ep` that answers by `deadline`;
    /// over TLS (`tls` must then be given) for an https endpoint. The
    /// handshake happens with the first request, under its deadline.
    pub fn connect(
        ep: &Endpoint,
        tls: Option<&Arc<ClientConfig>>,
        deadline: Instant,
    ) -> Result<Conn, Error> {
        let addrs = ep.authority.to_socket_addrs().map_err(io)?;
        let mut last = Error::Io(format!("{}: no address", ep.authority));
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, left(deadline)?) {
                Ok(tcp) => {
                    let _ = tcp.set_nodelay(true);
                    return Ok(Conn {
                        stream: wrap(ep, tls, tcp)?,
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
            .tcp()
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
            self.stream.tcp().set_read_timeout(Some(wait)).map_err(io)?;
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

/// `tcp` as it will carry the requests: through TLS for https.
fn wrap(ep: &Endpoint, tls: Option<&Arc<ClientConfig>>, tcp: TcpStream) -> Result<Stream, Error> {
    if !ep.tls {
        return Ok(Stream::Plain(tcp));
    }
    let config = tls.ok_or_else(|| Error::Io("https without a TLS configuration".into()))?;
    let name = ServerName::try_from(ep.host.clone())
        .map_err(|_| Error::Io(format!("{} is not a TLS server name", ep.host)))?;
    let conn = ClientConnection::new(config.clone(), name).map_err(|e| Error::Io(e.to_string()))?;
    Ok(Stream::Tls(Box::new(StreamOwned::new(conn, tcp))))
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
        let e = Endpoint::parse("http://127.0.0.1:2379").unwrap();
        assert_eq!(e.authority, "127.0.0.1:2379");
        assert_eq!((e.host.as_str(), e.tls), ("127.0.0.1", false));
        let e = Endpoint::parse("https://[::1]:2379").unwrap();
        assert_eq!((e.host.as_str(), e.tls), ("::1", true));
        assert!(Endpoint::parse("https://:2379").is_err());
        assert!(Endpoint::parse("http://e:2379/v3").is_err());
        assert!(Endpoint::parse("e:2379").is_err());
    }

    /// A fake etcd on a loopback socket answers one chunked response with
    /// a trailer, then one with a length, on the same connection.
    #[test]
    fn keep_alive_with_chunked_and_trailers() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ep = Endpoint::parse(&format!("http://{}", l.local_addr().unwrap())).unwrap();
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
        let mut c = Conn::connect(&ep, None, deadline).unwrap();
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
