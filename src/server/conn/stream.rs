//! A connection's byte stream: plain TCP, or TLS over it. Everything above
//! reads and writes plaintext through `conn::io`, which encrypts and
//! decrypts here; nothing else knows which it is.
//!
//! TLS is driven through rustls's unbuffered API (`tls::TlsServer`): an
//! idle TLS connection holds only rustls's session state (about 3.5 KB)
//! and no buffer. Ciphertext is read into a buffer that lives only while a
//! record is incomplete; encrypted output goes to a buffer that lives only
//! while it is written.

use std::io;
use std::os::fd::OwnedFd;

use bytes::BytesMut;
use monoio::net::TcpStream;

use crate::tls::{SessionSecrets, TlsError, TlsServer, TlsSession};

pub(crate) struct Stream {
    pub(super) tcp: TcpStream,
    pub(super) tls: Option<Box<TlsConn>>,
}

/// A TLS session and the ciphertext of a record not complete yet.
pub(crate) struct TlsConn {
    pub(super) server: TlsSession,
    /// Empty (no allocation) unless a record is partly read.
    pub(super) incoming: BytesMut,
    /// `incoming` holds bytes read ahead (after a PROXY header) that the
    /// session has not processed yet: the next read processes them first.
    pub(super) unread: bool,
    /// The peer sent close_notify after data that was delivered: the next
    /// read reports the end.
    pub(super) peer_closed: bool,
}

impl TlsConn {
    /// The session's keys and the ciphertext read but not processed, for
    /// another process to continue it (see [`Stream::can_move`]).
    pub fn into_moved(self) -> Result<(SessionSecrets, BytesMut), TlsError> {
        Ok((self.server.into_secrets()?, self.incoming))
    }
}

/// A stream taken out of monoio (to park it, or to move it to another
/// worker): its descriptor and its TLS session, if any.
pub(crate) struct Detached {
    pub fd: OwnedFd,
    pub tls: Option<Box<TlsConn>>,
}

impl Stream {
    pub fn plain(tcp: TcpStream) -> Self {
        Stream { tcp, tls: None }
    }

    /// A stream whose TLS handshake is still to happen (it happens as the
    /// first bytes are read).
    pub fn tls(tcp: TcpStream, server: TlsServer) -> Self {
        let tls = TlsConn {
            server: TlsSession::Live(server),
            incoming: BytesMut::new(),
            unread: false,
            peer_closed: false,
        };
        Stream {
            tcp,
            tls: Some(Box::new(tls)),
        }
    }

    /// Resolves when the socket has bytes (or an error) to read; consumes
    /// nothing, so it may be raced and abandoned.
    /// (Not an `async fn`: the runtime's own future, without a wrapper
    /// state, since every idle session holds one.)
    pub fn readable(&self) -> impl std::future::Future<Output = io::Result<()>> + '_ {
        self.tcp.readable(false)
    }

    /// Bytes read off the socket ahead of time (after a PROXY header):
    /// ciphertext goes to the TLS session's input; plaintext is returned
    /// for the caller to read first.
    pub fn keep_early_bytes(&mut self, early: BytesMut) -> BytesMut {
        match self.tls.as_mut() {
            Some(tls) => {
                tls.unread = !early.is_empty();
                tls.incoming = early;
                BytesMut::new()
            }
            None => early,
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether the stream can continue in another process (an upgrade):
    /// plain, or TLS 1.3 past its handshake with nothing pending.
    pub fn can_move(&self) -> bool {
        self.tls
            .as_ref()
            .is_none_or(|t| t.server.can_move() && !t.peer_closed)
    }

    /// A TLS stream continued from a session another process started
    /// (`incoming`: ciphertext it had read but not processed).
    pub fn resumed(
        tcp: TcpStream,
        secrets: &SessionSecrets,
        incoming: &[u8],
    ) -> Result<Self, TlsError> {
        let tls = TlsConn {
            server: TlsSession::resume(secrets)?,
            incoming: BytesMut::from(incoming),
            unread: !incoming.is_empty(),
            peer_closed: false,
        };
        Ok(Stream {
            tcp,
            tls: Some(Box::new(tls)),
        })
    }

    /// Whether a read would find input without waiting for the socket.
    pub fn has_unread_input(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.unread)
    }

    /// Takes the stream out of monoio (see [`detach_fd`]).
    pub fn detach(self) -> Result<Detached, Stream> {
        let Stream { tcp, tls } = self;
        match detach_fd(tcp) {
            Ok(fd) => Ok(Detached { fd, tls }),
            Err(tcp) => Err(Stream { tcp, tls }),
        }
    }

    /// Gives a detached stream back to monoio on the current worker.
    pub fn attach(d: Detached) -> io::Result<Stream> {
        let tcp = attach_fd(d.fd)?;
        Ok(Stream { tcp, tls: d.tls })
    }
}

/// Takes a socket out of monoio as an owned descriptor, to move it to another
/// worker or to the parker. A duplicate, not `into_raw_fd`: a cancelled
/// operation may still hold monoio's handle to the socket (`into_raw_fd`
/// panics then); dropping the stream closes only the original descriptor.
pub(crate) fn detach_fd(stream: TcpStream) -> Result<std::os::fd::OwnedFd, TcpStream> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor we hold; the result is checked.
    let raw = unsafe { libc::fcntl(stream.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if raw < 0 {
        return Err(stream);
    }
    drop(stream);
    // SAFETY: `raw` is a fresh descriptor we own.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) })
}

/// Gives a descriptor taken out with [`detach_fd`] (on this worker or
/// another) back to monoio on the current worker.
pub(crate) fn attach_fd(fd: std::os::fd::OwnedFd) -> io::Result<TcpStream> {
    TcpStream::from_std(std::net::TcpStream::from(fd))
}
