//! The server side of one TLS session, sans IO, over rustls's unbuffered API.
//!
//! The caller owns every buffer: `incoming` (bytes read from the socket),
//! `plaintext` (decrypted application data) and `outgoing` (bytes to write).
//! [`TlsServer`] holds only the rustls session state (keys, record
//! counters, handshake leftovers): measured by `tests/tls_memory.rs` after
//! the handshake and one message each way, about 3.5 KB with glibc malloc
//! including the 1,120-byte struct itself, TLS 1.2 or 1.3. An idle session
//! whose caller has dropped its (empty) buffers holds nothing else.
//!
//! Writing needs no input from the caller, except in one case: while the
//! peer is midway through a handshake message split over several records
//! after the handshake (a fragmented KeyUpdate, which real clients do not
//! send), rustls keeps looking for the rest in `incoming`, so
//! [`write_plain`](TlsServer::write_plain) fails instead of handing it an
//! empty buffer.
//!
//! Contract with the caller:
//! - Append what the socket delivers to `incoming` and call
//!   [`read_tls`](TlsServer::read_tls); it removes what it consumed from the
//!   front. What stays is an incomplete record, or (rarely) complete records
//!   rustls keeps, decrypted in place, until the rest of a handshake message
//!   split across records arrives. Never remove or change those bytes other
//!   than through `read_tls`; append only.
//! - Send everything appended to `outgoing`, in order, after every call.
//!   rustls is told that handshake bytes are sent as soon as they are in
//!   `outgoing`.
//! - A `TlsError` ends the session: send `outgoing` (it may hold an alert),
//!   then close the socket.

use bytes::{Buf, BytesMut};
use rustls::server::{ServerConfig, ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    AppDataRecord, ConnectionState, EncodeError, EncryptError, UnbufferedStatus, WriteTraffic,
};
use std::sync::Arc;

use super::resolver::take_resolved_sni;
use super::TlsError;

/// A TLS record header: content type, version, 16-bit length.
const RECORD_HEADER: usize = 5;
/// Bounds the rounds of queued output handed out before a write (a key
/// update, at most, in practice).
const MAX_ROUNDS: usize = 16;

/// What one [`TlsServer::read_tls`] call achieved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// The handshake is complete: application data flows both ways.
    pub handshake_done: bool,
    /// The peer sent close_notify during this call: no more data will come.
    pub peer_closed: bool,
    /// Bytes appended to `plaintext` during this call.
    pub plaintext: usize,
}

/// One server-side TLS session; see the module doc for the buffer contract.
pub struct TlsServer {
    conn: UnbufferedServerConnection,
    /// What the client sent as SNI (see `resolver.rs` for how it gets here).
    sni: Option<Box<str>>,
    /// Bytes at the front of the caller's `incoming` that rustls holds as
    /// part of an incomplete handshake message.
    held: usize,
    peer_closed: bool,
    sent_close: bool,
    failed: bool,
}

const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<TlsServer>();
};

/// One direction's extracted keys, as [`super::DirectionSecrets`].
fn direction(
    (seq, secrets): (u64, rustls::ConnectionTrafficSecrets),
) -> Result<(super::Suite, super::DirectionSecrets), TlsError> {
    use super::Suite;
    use rustls::ConnectionTrafficSecrets as C;
    let (suite, key, iv) = match secrets {
        C::Aes128Gcm { key, iv } => (Suite::Aes128Gcm, key, iv),
        C::Aes256Gcm { key, iv } => (Suite::Aes256Gcm, key, iv),
        C::Chacha20Poly1305 { key, iv } => (Suite::Chacha20Poly1305, key, iv),
        _ => return Err(TlsError::local("a cipher suite that cannot move")),
    };
    let iv: [u8; 12] = iv
        .as_ref()
        .try_into()
        .map_err(|_| TlsError::local("an IV of the wrong length"))?;
    let key = key.as_ref().to_vec();
    Ok((suite, super::DirectionSecrets { key, iv, seq }))
}

/// Appends every decrypted record of a `ReadTraffic` or `ReadEarlyData`
/// state to `plaintext` (a macro: `next_record` lends from the state).
macro_rules! drain_records {
    ($records:ident, $plaintext:ident, $discard:ident, $progress:ident) => {{
        let mut step = Step::Continue;
        while let Some(record) = $records.next_record() {
            match record {
                Ok(AppDataRecord {
                    discard, payload, ..
                }) => {
                    $discard += discard;
                    $plaintext.extend_from_slice(payload);
                    $progress.plaintext += payload.len();
                }
                Err(error) => {
                    step = Step::Fail(TlsError::from_rustls(error));
                    break;
                }
            }
        }
        step
    }};
}

enum Step {
    Continue,
    Stop,
    Fail(TlsError),
}

impl TlsServer {
    pub fn new(config: Arc<ServerConfig>) -> Result<Self, TlsError> {
        Ok(Self {
            conn: UnbufferedServerConnection::new(config).map_err(TlsError::from_rustls)?,
            sni: None,
            held: 0,
            peer_closed: false,
            sent_close: false,
            failed: false,
        })
    }

    /// Processes the complete records at the front of `incoming`: handshake
    /// replies and alerts go to `outgoing`, application data to `plaintext`.
    /// After the peer's close_notify, whatever follows it is dropped.
    pub fn read_tls(
        &mut self,
        incoming: &mut BytesMut,
        plaintext: &mut BytesMut,
        outgoing: &mut BytesMut,
    ) -> Result<Progress, TlsError> {
        if self.failed {
            return Err(TlsError::local("session already failed"));
        }
        if incoming.len() < self.held {
            return Err(self.abandon("incoming lost bytes rustls holds", incoming));
        }
        let handshaking = self.conn.is_handshaking();
        if handshaking {
            take_resolved_sni(); // a stale name from another session's resolve
        }
        let scanned = self.held + complete_records(&incoming[self.held..]);
        let mut progress = Progress::default();
        let result = self.drive(incoming, plaintext, outgoing, &mut progress);
        if handshaking {
            if let Some(sni) = take_resolved_sni() {
                self.sni = sni;
            }
        }
        let discarded = result?;
        self.held = scanned.saturating_sub(discarded);
        if progress.peer_closed {
            incoming.clear();
            self.held = 0;
        }
        progress.handshake_done = !self.conn.is_handshaking();
        Ok(progress)
    }

    /// Encrypts `plain` into records of at most 16 KiB of data each, appended
    /// to `outgoing`. Only after the handshake.
    pub fn write_plain(&mut self, plain: &[u8], outgoing: &mut BytesMut) -> Result<(), TlsError> {
        if self.failed || self.sent_close {
            return Err(TlsError::local("session closed"));
        }
        if self.conn.is_handshaking() {
            return Err(TlsError::local("handshake not complete"));
        }
        if plain.is_empty() {
            return Ok(());
        }
        self.with_write_traffic(outgoing, |traffic, outgoing| {
            append(outgoing, |buf| traffic.encrypt(plain, buf), encrypt_needs)
                .map_err(|_| TlsError::local("encrypt failed"))
        })
    }

    /// Appends a close_notify alert to `outgoing`, once. Does nothing during
    /// the handshake or after a failure: then just close the socket.
    pub fn close_notify(&mut self, outgoing: &mut BytesMut) {
        if self.failed || self.sent_close {
            return;
        }
        let sent = self.with_write_traffic(outgoing, |traffic, outgoing| {
            append(
                outgoing,
                |buf| traffic.queue_close_notify(buf),
                encrypt_needs,
            )
            .map_err(|_| TlsError::local("close_notify failed"))
        });
        self.sent_close = sent.is_ok();
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The SNI the client sent, once its ClientHello has been read. Known
    /// only with a configuration from [`load_server_config`](super::load_server_config).
    pub fn server_name(&self) -> Option<&str> {
        self.sni.as_deref()
    }

    /// The negotiated ALPN protocol (`http/1.1`), if the client offered ALPN.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.conn.protocol_version()
    }

    /// Whether [`into_secrets`](Self::into_secrets) would succeed: TLS 1.3,
    /// past the handshake, nothing half-received or failed.
    pub fn can_move(&self) -> bool {
        let tls13 = self.conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
        tls13 && !self.conn.is_handshaking() && self.held == 0 && !self.failed && !self.sent_close
    }

    /// The session's traffic keys and record counters, to continue it in
    /// another process (an upgrade); the session ends here.
    // `dangerous_into_kernel_connection` would follow key updates, but its
    // handle cannot cross processes; a key update ends a moved session.
    #[allow(deprecated)]
    pub fn into_secrets(self) -> Result<super::SessionSecrets, TlsError> {
        if !self.can_move() {
            return Err(TlsError::local(
                "only an established TLS 1.3 session can move",
            ));
        }
        let secrets = self
            .conn
            .dangerous_extract_secrets()
            .map_err(TlsError::from_rustls)?;
        let (suite, tx) = direction(secrets.tx)?;
        let (_, rx) = direction(secrets.rx)?;
        Ok(super::SessionSecrets { suite, tx, rx })
    }

    /// Steps rustls until it needs more input; returns the bytes consumed
    /// from the front of `incoming`.
    fn drive(
        &mut self,
        incoming: &mut BytesMut,
        plaintext: &mut BytesMut,
        outgoing: &mut BytesMut,
        progress: &mut Progress,
    ) -> Result<usize, TlsError> {
        let mut consumed = 0;
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut incoming[..]);
            let step = match state {
                Err(error) => Step::Fail(TlsError::from_rustls(error)),
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    drain_records!(records, plaintext, discard, progress)
                }
                Ok(ConnectionState::ReadEarlyData(mut records)) => {
                    drain_records!(records, plaintext, discard, progress)
                }
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    match append(outgoing, |buf| data.encode(buf), encode_needs) {
                        Ok(()) => Step::Continue,
                        Err(_) => Step::Fail(TlsError::local("encode failed")),
                    }
                }
                Ok(ConnectionState::TransmitTlsData(sent)) => {
                    sent.done(); // the bytes are in `outgoing`, the caller sends them
                    Step::Continue
                }
                Ok(ConnectionState::PeerClosed) => {
                    progress.peer_closed = true;
                    self.peer_closed = true;
                    Step::Continue
                }
                Ok(_) => Step::Stop, // BlockedHandshake, WriteTraffic, Closed
            };
            incoming.advance(discard);
            consumed += discard;
            match step {
                Step::Continue => {}
                Step::Stop => return Ok(consumed),
                Step::Fail(error) => return Err(self.fail(error, incoming, outgoing)),
            }
        }
    }

    /// Steps rustls, with no input, to the state that lets us encrypt, handing
    /// out what it queued before (a key update), then runs `write` there.
    fn with_write_traffic(
        &mut self,
        outgoing: &mut BytesMut,
        write: impl FnOnce(
            &mut WriteTraffic<'_, ServerConnectionData>,
            &mut BytesMut,
        ) -> Result<(), TlsError>,
    ) -> Result<(), TlsError> {
        if self.held > 0 {
            // rustls would look for the rest of the message in the buffer.
            return Err(TlsError::local("peer's handshake message incomplete"));
        }
        for _ in 0..MAX_ROUNDS {
            let status = self.conn.process_tls_records(&mut []);
            match status.state {
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    return write(&mut traffic, outgoing);
                }
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    append(outgoing, |buf| data.encode(buf), encode_needs)
                        .map_err(|_| TlsError::local("encode failed"))?;
                }
                Ok(ConnectionState::TransmitTlsData(sent)) => sent.done(),
                Ok(ConnectionState::PeerClosed) => self.peer_closed = true,
                Ok(ConnectionState::BlockedHandshake) => {
                    return Err(TlsError::local("handshake not complete"));
                }
                Ok(_) => return Err(TlsError::local("session closed")),
                Err(error) => {
                    let error = TlsError::from_rustls(error);
                    return Err(self.fail(error, &mut BytesMut::new(), outgoing));
                }
            }
        }
        Err(TlsError::local("no write state"))
    }

    /// Marks the session failed and appends what rustls queued (the alert,
    /// perhaps handshake messages before it). Each call that hands out a
    /// queued message returns before reading input, and none is made once
    /// the queue is empty: reading the bad input again would make rustls
    /// raise (and queue) a second fatal alert.
    fn fail(
        &mut self,
        error: TlsError,
        incoming: &mut BytesMut,
        outgoing: &mut BytesMut,
    ) -> TlsError {
        self.failed = true;
        while self.conn.wants_write() {
            let status = self.conn.process_tls_records(&mut []);
            let Ok(ConnectionState::EncodeTlsData(mut data)) = status.state else {
                break;
            };
            if append(outgoing, |buf| data.encode(buf), encode_needs).is_err() {
                break;
            }
        }
        incoming.clear();
        self.held = 0;
        error
    }

    /// Fails without asking rustls anything (the buffer is not what it
    /// expects, so it must not see it).
    fn abandon(&mut self, reason: &'static str, incoming: &mut BytesMut) -> TlsError {
        self.failed = true;
        incoming.clear();
        self.held = 0;
        TlsError::local(reason)
    }
}

/// Runs `write` on exactly the room it asks for at the end of `outgoing`:
/// once on an empty slice to learn the size, then on that many new bytes.
fn append<E>(
    outgoing: &mut BytesMut,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
    needs: fn(&E) -> Option<usize>,
) -> Result<(), E> {
    let required = match write(&mut []) {
        Ok(_) => return Ok(()),
        Err(error) => match needs(&error) {
            Some(required) => required,
            None => return Err(error),
        },
    };
    let start = outgoing.len();
    outgoing.resize(start + required, 0);
    match write(&mut outgoing[start..]) {
        Ok(written) => {
            outgoing.truncate(start + written);
            Ok(())
        }
        Err(error) => {
            outgoing.truncate(start);
            Err(error)
        }
    }
}

fn encode_needs(error: &EncodeError) -> Option<usize> {
    match error {
        EncodeError::InsufficientSize(size) => Some(size.required_size),
        _ => None,
    }
}

fn encrypt_needs(error: &EncryptError) -> Option<usize> {
    match error {
        EncryptError::InsufficientSize(size) => Some(size.required_size),
        _ => None,
    }
}

/// Length of the complete TLS records at the front of `bytes`.
fn complete_records(mut bytes: &[u8]) -> usize {
    let mut total = 0;
    while bytes.len() >= RECORD_HEADER {
        let len = RECORD_HEADER + usize::from(u16::from_be_bytes([bytes[3], bytes[4]]));
        if bytes.len() < len {
            break;
        }
        total += len;
        bytes = &bytes[len..];
    }
    total
}
