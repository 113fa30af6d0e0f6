//! Why a TLS session failed, short enough for a log line or a metric label.

use std::fmt;

/// A failed TLS session. [`reason`](Self::reason) is a fixed string fit for
/// a metric label; `Display` adds rustls's description, which carries no
/// secrets.
#[derive(Debug, Clone)]
pub struct TlsError {
    reason: &'static str,
    source: Option<rustls::Error>,
}

impl TlsError {
    pub(crate) fn local(reason: &'static str) -> Self {
        Self {
            reason,
            source: None,
        }
    }

    pub(crate) fn from_rustls(error: rustls::Error) -> Self {
        Self {
            reason: reason(&error),
            source: Some(error),
        }
    }

    /// A fixed description: "bad record", "peer alert", "handshake failed", ...
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// The rustls error behind it, if any.
    pub fn rustls_error(&self) -> Option<&rustls::Error> {
        self.source.as_ref()
    }
}

fn reason(error: &rustls::Error) -> &'static str {
    use rustls::Error as E;
    match error {
        E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
            "unexpected message"
        }
        E::InvalidMessage(_) | E::PeerSentOversizedRecord => "bad record",
        E::DecryptError => "decrypt error",
        E::PeerIncompatible(_) => "no common parameters",
        E::PeerMisbehaved(_) => "peer misbehaved",
        E::AlertReceived(_) => "peer alert",
        E::NoApplicationProtocol => "no common ALPN protocol",
        E::InvalidCertificate(_) | E::NoCertificatesPresented => "bad certificate",
        E::EncryptError => "encrypt error",
        E::HandshakeNotComplete => "handshake not complete",
        _ => "TLS error",
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "TLS {}: {source}", self.reason),
            None => write!(f, "TLS {}", self.reason),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
