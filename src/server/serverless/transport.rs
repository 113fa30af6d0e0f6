//! The bytes of a call to a function: a TCP connection on the worker's
//! monoio runtime, plain or through rustls's client (system roots, or the
//! CA file `TETHER_FUNCTION_CA` names, for tests and private CAs).
//!
//! Reads are never raced against timers here: a caller that gives up (a
//! deadline) drops the whole connection, so bytes lost in a cancelled read
//! belong to a connection nobody reads again. A cancelled connect may leak
//! its socket in monoio 0.2.4 (FIELD-NOTES): one descriptor per timed-out
//! connect, which only a function that accepts nothing can cause.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::BytesMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use crate::config::FunctionUrl;
use crate::server::conn::thread_slot::thread_slot;

/// One read from the socket, at most.
const READ_BYTES: usize = 16 * 1024;
/// How long one of a host's several addresses may take to connect.
const PER_ADDRESS_CONNECT: std::time::Duration = std::time::Duration::from_secs(3);

/// Runs `fut` until `deadline`; `None` if the deadline came first (the
/// future, and whatever it held, is dropped).
pub(crate) async fn within<F: std::future::Future>(deadline: Instant, fut: F) -> Option<F::Output> {
    let left = deadline.saturating_duration_since(Instant::now());
    monoio::time::timeout(left, fut).await.ok()
}

/// The TLS client configuration for functions, loaded once per process.
fn client_config() -> Result<Arc<ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let ca = std::env::var_os("TETHER_FUNCTION_CA").map(std::path::PathBuf::from);
            crate::tls::load_client_config(ca.as_deref())
        })
        .clone()
}

pub(crate) enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsConn>),
}

pub(crate) struct TlsConn {
    tcp: TcpStream,
    tls: ClientConnection,
    /// Bytes read from the socket that rustls has not taken yet: it takes
    /// at most a few KiB per `read_tls`, less than one socket read brings.
    unread: Vec<u8>,
}

/// Why a connection could not be made: the start failure's cause.
pub(crate) enum ConnectError {
    /// Name resolution or TCP connect failed.
    Connect(String),
    /// TLS could not be set up (configuration, server name).
    Tls(String),
}

impl Conn {
    /// Connects to the function's host (resolving a name first, on a
    /// short-lived thread: `getaddrinfo` blocks, and a worker must not).
    pub async fn connect(url: &FunctionUrl) -> Result<Conn, ConnectError> {
        let addrs = resolve(&url.host, url.port)
            .await
            .map_err(ConnectError::Connect)?;
        let mut last = format!("{} has no address", url.host);
        let mut tcp = None;
        // With several addresses one that swallows packets must not use up
        // the whole deadline: each gets a few seconds before the next.
        let each = (addrs.len() > 1).then_some(PER_ADDRESS_CONNECT);
        for addr in addrs {
            let attempt = TcpStream::connect_addr(addr);
            let outcome = match each {
                Some(limit) => monoio::time::timeout(limit, attempt).await,
                None => Ok(attempt.await),
            };
            match outcome {
                Ok(Ok(s)) => {
                    tcp = Some(s);
                    break;
                }
                Ok(Err(e)) => last = format!("{addr}: {e}"),
                Err(_) => {
                    last = format!(
                        "{addr}: no answer within {limit:?}",
                        limit = PER_ADDRESS_CONNECT
                    )
                }
            }
        }
        let tcp = tcp.ok_or(ConnectError::Connect(last))?;
        let _ = tcp.set_nodelay(true);
        if !url.tls {
            return Ok(Conn::Plain(tcp));
        }
        let config = client_config().map_err(ConnectError::Tls)?;
        let name = ServerName::try_from(url.host.clone())
            .map_err(|_| ConnectError::Tls(format!("{} is not a TLS server name", url.host)))?;
        let tls =
            ClientConnection::new(config, name).map_err(|e| ConnectError::Tls(e.to_string()))?;
        Ok(Conn::Tls(Box::new(TlsConn {
            tcp,
            tls,
            unread: Vec::new(),
        })))
    }

    /// Sends `data` (over TLS, after the handshake, which the reads drive).
    pub async fn send(&mut self, data: Vec<u8>) -> io::Result<()> {
        match self {
            Conn::Plain(tcp) => tcp.write_all(data).await.0.map(drop),
            Conn::Tls(c) => {
                c.tls.writer().write_all(&data)?;
                flush_tls(&mut c.tcp, &mut c.tls).await
            }
        }
    }

    /// Appends what arrives next to `into`; 0 at the end of the stream.
    pub async fn recv(&mut self, into: &mut BytesMut) -> io::Result<usize> {
        match self {
            Conn::Plain(tcp) => {
                let (result, buf) = tcp.read(Vec::with_capacity(READ_BYTES)).await;
                let n = result?;
                into.extend_from_slice(&buf[..n]);
                Ok(n)
            }
            Conn::Tls(c) => c.recv(into).await,
        }
    }
}

/// Writes every TLS record rustls has ready.
async fn flush_tls(tcp: &mut TcpStream, tls: &mut ClientConnection) -> io::Result<()> {
    while tls.wants_write() {
        let mut out = Vec::new();
        tls.write_tls(&mut out)?;
        tcp.write_all(out).await.0?;
    }
    Ok(())
}

impl TlsConn {
    /// Appends the next plaintext to `into`; 0 at the end of the stream.
    /// Every byte read from the socket reaches rustls, in as many calls as
    /// it takes, plaintext being drained between them so its buffer never
    /// fills.
    async fn recv(&mut self, into: &mut BytesMut) -> io::Result<usize> {
        let mut plain = [0u8; 4096];
        loop {
            match self.tls.reader().read(&mut plain) {
                Ok(n) => {
                    into.extend_from_slice(&plain[..n]);
                    return Ok(n); // 0: the function closed the session
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if !self.unread.is_empty() {
                self.feed()?;
                continue;
            }
            flush_tls(&mut self.tcp, &mut self.tls).await?;
            let (result, buf) = self.tcp.read(Vec::with_capacity(READ_BYTES)).await;
            let n = result?;
            if n == 0 {
                // No close_notify: the body's framing tells a cut-short body.
                return Ok(0);
            }
            self.unread = buf;
        }
    }

    /// Gives rustls what it takes of the unread bytes and lets it process them.
    fn feed(&mut self) -> io::Result<()> {
        let taken = self.tls.read_tls(&mut &self.unread[..])?;
        self.unread.drain(..taken);
        let state = self
            .tls
            .process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if taken == 0 && state.plaintext_bytes_to_read() == 0 {
            // Nothing taken and nothing to read: going round again would spin.
            let stuck = "the TLS session takes no more bytes";
            return Err(io::Error::new(io::ErrorKind::InvalidData, stuck));
        }
        Ok(())
    }
}

/// The addresses of `host`: an IP literal at once, a name on a thread.
async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (slot, filler) = thread_slot();
    let name = host.to_owned();
    std::thread::Builder::new()
        .name("tether-resolve".into())
        .spawn(move || {
            use std::net::ToSocketAddrs;
            let found = (name.as_str(), port)
                .to_socket_addrs()
                .map(Iterator::collect)
                .map_err(|e| format!("cannot resolve {name}: {e}"));
            filler.fill(found);
        })
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    let failed = || Err(format!("cannot resolve {host}: the resolver thread failed"));
    slot.wait().await.unwrap_or_else(failed)
}
