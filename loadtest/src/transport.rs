//! A client connection, plain (`ws://`) or TLS (`wss://`), split into a
//! reader and a writer (a client's two tasks).
//!
//! monoio has no TLS stream, so TLS is rustls's buffered `ClientConnection`
//! pumped by hand over monoio's owned-buffer TCP halves: the reader reads
//! ciphertext into a buffer of its own, feeds it to rustls
//! (`read_tls`/`process_new_packets`) and appends the plaintext to the
//! caller's buffer; the writer hands plaintext to rustls and writes the
//! records it makes (`write_tls`) from a buffer of its own. Both halves
//! share the session (one thread: an `Rc<RefCell>` never borrowed across an
//! await), and only the writer writes to the socket, so records leave in
//! the order rustls made them; records the reader makes rustls want to
//! send (an alert, a key update) wait for the writer's next `flush`.
//!
//! The plain path is the TCP halves themselves behind a `match`.

use std::cell::RefCell;
use std::io::{self, Read as _, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;

use bytes::BytesMut;
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable,
};
use monoio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use tether::server::driver::Driver;

/// How to speak TLS to the gateway: whom to trust (the system's roots or
/// `--ca`) and the name to ask for (SNI) and verify.
#[derive(Clone)]
pub struct TlsTarget {
    pub config: Arc<ClientConfig>,
    pub name: ServerName<'static>,
}

impl TlsTarget {
    /// `ca`: a PEM file of trusted certificates; `None`: the system's roots.
    pub fn new(host: &str, ca: Option<&std::path::Path>) -> Result<TlsTarget, String> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("TLS: `{host}` is not a server name: {e}"))?;
        let config = tether::tls::load_client_config(ca).map_err(|e| format!("TLS: {e}"))?;
        Ok(TlsTarget { config, name })
    }
}

/// Ciphertext read from the socket at once.
const TLS_READ_BYTES: usize = 16 * 1024;

pub struct Connection {
    pub reader: Reader,
    pub writer: Writer,
}

/// Opens a TCP connection to `to` (from `from`, if given) and, with `tls`,
/// completes the TLS handshake. The error says which step failed.
pub async fn connect(
    to: SocketAddr,
    from: Option<IpAddr>,
    driver: Driver,
    tls: Option<&TlsTarget>,
) -> Result<Connection, String> {
    let stream = crate::net::connect(to, from, driver)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let Some(target) = tls else {
        return Ok(Connection {
            reader: Reader::Plain(rd),
            writer: Writer::Plain(wr),
        });
    };
    let session = ClientConnection::new(target.config.clone(), target.name.clone())
        .map_err(|e| format!("TLS: {e}"))?;
    let session = Rc::new(RefCell::new(session));
    let mut reader = TlsReader {
        rd,
        tls: session.clone(),
        raw: Vec::new(),
        closed: false,
    };
    let mut writer = TlsWriter {
        wr,
        tls: session,
        out: Vec::new(),
    };
    let mut early = BytesMut::new();
    loop {
        writer
            .flush()
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        if !writer.tls.borrow().is_handshaking() {
            break;
        }
        match reader.read_some(&mut early).await {
            Ok(Some(_)) => {}
            Ok(None) => return Err("TLS handshake: the server closed the connection".into()),
            Err(e) => {
                // Tell the server why (rustls queued an alert), if it listens.
                let _ = writer.flush().await;
                return Err(format!("TLS handshake: {e}"));
            }
        }
    }
    if !early.is_empty() {
        return Err("TLS: the server sent data before the upgrade request".into());
    }
    Ok(Connection {
        reader: Reader::Tls(reader),
        writer: Writer::Tls(writer),
    })
}

pub enum Reader {
    Plain(OwnedReadHalf<TcpStream>),
    Tls(TlsReader),
}

pub struct TlsReader {
    rd: OwnedReadHalf<TcpStream>,
    tls: Rc<RefCell<ClientConnection>>,
    /// Ciphertext just read (taken while a read is in flight, so a
    /// cancelled read loses it and the next one allocates anew).
    raw: Vec<u8>,
    /// The server sent close_notify: nothing more will come.
    closed: bool,
}

impl Reader {
    /// Reads what arrives next onto the end of `buf`, at least one byte;
    /// `Ok(0)`: the end of the stream. Plain: into `buf`'s spare capacity,
    /// which the caller keeps non-empty; TLS: the plaintext, `buf` grows.
    pub async fn read(&mut self, buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        match self {
            Reader::Plain(rd) => {
                let (len, cap) = (buf.len(), buf.capacity());
                let (r, slice) = rd.read(buf.slice_mut(len..cap)).await;
                (r, slice.into_inner())
            }
            Reader::Tls(t) => t.read(buf).await,
        }
    }

    /// TLS: what was read made rustls want to send something (an alert, a
    /// key update); the writer should `flush`.
    pub fn wants_write(&self) -> bool {
        match self {
            Reader::Plain(_) => false,
            Reader::Tls(t) => t.tls.borrow().wants_write(),
        }
    }
}

impl TlsReader {
    async fn read(&mut self, mut buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        loop {
            match self.read_some(&mut buf).await {
                // Handshake messages, session tickets: no plaintext yet.
                Ok(Some(0)) => {}
                Ok(Some(n)) => return (Ok(n), buf),
                Ok(None) => return (Ok(0), buf),
                Err(e) => return (Err(e), buf),
            }
        }
    }

    /// One read from the socket, decrypted; its plaintext (perhaps none) is
    /// appended to `into`. `None`: the end (EOF or the server's close_notify).
    async fn read_some(&mut self, into: &mut BytesMut) -> io::Result<Option<usize>> {
        if self.closed {
            return Ok(None);
        }
        let mut raw = std::mem::take(&mut self.raw);
        raw.clear();
        raw.reserve(TLS_READ_BYTES);
        let (r, raw) = self.rd.read(raw).await;
        self.raw = raw;
        let n = r?;
        if n == 0 {
            return Ok(None);
        }
        let mut tls = self.tls.borrow_mut();
        let mut rest = &self.raw[..n];
        let before = into.len();
        while !rest.is_empty() {
            if tls.read_tls(&mut rest)? == 0 {
                break; // after close_notify rustls takes nothing more
            }
            let state = tls
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let k = state.plaintext_bytes_to_read();
            if k > 0 {
                let at = into.len();
                into.resize(at + k, 0);
                tls.reader().read_exact(&mut into[at..])?;
            }
            if state.peer_has_closed() {
                self.closed = true;
                break;
            }
        }
        let got = into.len() - before;
        Ok((got > 0 || !self.closed).then_some(got))
    }
}

pub enum Writer {
    Plain(OwnedWriteHalf<TcpStream>),
    Tls(TlsWriter),
}

pub struct TlsWriter {
    wr: OwnedWriteHalf<TcpStream>,
    tls: Rc<RefCell<ClientConnection>>,
    /// Records on their way to the socket (taken while a write is in flight).
    out: Vec<u8>,
}

impl Writer {
    /// Writes all of `buf` (TLS: encrypted), handing it back.
    pub async fn write_all<B: IoBuf + AsRef<[u8]>>(&mut self, buf: B) -> (io::Result<()>, B) {
        match self {
            Writer::Plain(wr) => {
                let (r, buf) = wr.write_all(buf).await;
                (r.map(drop), buf)
            }
            Writer::Tls(t) => {
                let r = t.write_all(buf.as_ref()).await;
                (r, buf)
            }
        }
    }

    /// TLS: sends whatever rustls has queued (after the reader fed it);
    /// plain: nothing to do.
    pub async fn flush(&mut self) -> io::Result<()> {
        match self {
            Writer::Plain(_) => Ok(()),
            Writer::Tls(t) => t.flush().await,
        }
    }

    /// Shuts the sending side down (TLS: close_notify first).
    pub async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Writer::Plain(wr) => wr.shutdown().await,
            Writer::Tls(t) => {
                t.tls.borrow_mut().send_close_notify();
                let flushed = t.flush().await;
                let shut = t.wr.shutdown().await;
                flushed.and(shut)
            }
        }
    }
}

impl TlsWriter {
    async fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        loop {
            let n = self.tls.borrow_mut().writer().write(data)?;
            data = &data[n..];
            if n == 0 && !data.is_empty() && !self.tls.borrow().wants_write() {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the TLS session takes no more data",
                ));
            }
            // rustls holds a limited amount of records: send them before more.
            self.flush().await?;
            if data.is_empty() {
                return Ok(());
            }
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        loop {
            let mut out = std::mem::take(&mut self.out);
            out.clear();
            {
                let mut tls = self.tls.borrow_mut();
                while tls.wants_write() {
                    tls.write_tls(&mut out)?;
                }
            }
            if out.is_empty() {
                self.out = out;
                return Ok(());
            }
            let (r, out) = self.wr.write_all(out).await;
            self.out = out;
            r?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_server_name_or_ca_file_is_an_error() {
        assert!(TlsTarget::new("not a name!", None)
            .err()
            .is_some_and(|e| e.contains("not a server name")));
        assert!(
            TlsTarget::new("localhost", Some(std::path::Path::new("/no/such/ca.pem"))).is_err()
        );
    }
}
