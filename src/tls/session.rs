//! A server TLS session as the connection layer sees it: live in rustls,
//! or resumed from its keys after an upgrade. One buffer contract for both
//! (`server.rs`'s module doc).

use bytes::BytesMut;

use super::{Progress, ResumedSession, SessionSecrets, TlsError, TlsServer};

// The live session inline: it is every connection's, and lives in the
// connection's own box (a second box would cost each an allocation).
#[allow(clippy::large_enum_variant)]
pub enum TlsSession {
    Live(TlsServer),
    /// Boxed: rare, and every parked TLS socket pays for this enum.
    Resumed(Box<ResumedSession>),
}

impl TlsSession {
    /// Continues a session another process started (an upgrade).
    pub fn resume(secrets: &SessionSecrets) -> Result<TlsSession, TlsError> {
        Ok(TlsSession::Resumed(Box::new(ResumedSession::new(secrets)?)))
    }

    pub fn read_tls(
        &mut self,
        incoming: &mut BytesMut,
        plaintext: &mut BytesMut,
        outgoing: &mut BytesMut,
    ) -> Result<Progress, TlsError> {
        match self {
            TlsSession::Live(s) => s.read_tls(incoming, plaintext, outgoing),
            TlsSession::Resumed(s) => s.read_tls(incoming, plaintext),
        }
    }

    pub fn write_plain(&mut self, plain: &[u8], outgoing: &mut BytesMut) -> Result<(), TlsError> {
        match self {
            TlsSession::Live(s) => s.write_plain(plain, outgoing),
            TlsSession::Resumed(s) => s.write_plain(plain, outgoing),
        }
    }

    pub fn close_notify(&mut self, outgoing: &mut BytesMut) {
        match self {
            TlsSession::Live(s) => s.close_notify(outgoing),
            TlsSession::Resumed(s) => s.close_notify(outgoing),
        }
    }

    pub fn is_handshaking(&self) -> bool {
        matches!(self, TlsSession::Live(s) if s.is_handshaking())
    }

    /// Whether the session can continue in another process.
    pub fn can_move(&self) -> bool {
        match self {
            TlsSession::Live(s) => s.can_move(),
            TlsSession::Resumed(s) => s.can_move(),
        }
    }

    pub fn into_secrets(self) -> Result<SessionSecrets, TlsError> {
        match self {
            TlsSession::Live(s) => s.into_secrets(),
            TlsSession::Resumed(s) if s.can_move() => Ok(s.secrets()),
            TlsSession::Resumed(_) => Err(TlsError::local("session closed")),
        }
    }

    /// The live rustls session (SNI, ALPN), if it is one.
    pub fn live(&self) -> Option<&TlsServer> {
        match self {
            TlsSession::Live(s) => Some(s),
            TlsSession::Resumed(_) => None,
        }
    }
}
