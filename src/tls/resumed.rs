//! A TLS 1.3 session carried on in another process (an upgrade), sans IO.
//!
//! rustls's session state cannot be moved, but its traffic keys can
//! (`dangerous_extract_secrets`, meant for kernel TLS). The old process
//! extracts them after the handshake, with the record counters; the new
//! one continues the record layer here (RFC 8446 §5): AEAD records whose
//! nonce is the IV XOR the record counter, the content type inside. Only
//! application data, alerts, and nothing else: a KeyUpdate from the client
//! would need the traffic secret, which is not extracted, so it ends the
//! session (browsers send none on their own).

use bytes::{BufMut, BytesMut};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};

use super::{Progress, TlsError};

const HEADER: usize = 5;
const APPLICATION_DATA: u8 = 23;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
/// Largest plaintext per record, and largest ciphertext a peer may send.
const MAX_PLAIN: usize = 1 << 14;
const MAX_CIPHER: usize = MAX_PLAIN + 256;
const TAG: usize = 16;
/// Records one AES-GCM key may seal (RFC 8446 §5.5 bounds it near 2^24.5;
/// rustls updates its keys at 2^24). A moved session cannot update its
/// keys, so it ends there.
const AES_GCM_RECORDS: u64 = 1 << 24;
const USER_CANCELED: u8 = 90;

/// Which AEAD the session negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

impl Suite {
    fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Suite::Aes128Gcm => &aead::AES_128_GCM,
            Suite::Aes256Gcm => &aead::AES_256_GCM,
            Suite::Chacha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Suite::Aes128Gcm => 1,
            Suite::Aes256Gcm => 2,
            Suite::Chacha20Poly1305 => 3,
        }
    }

    pub fn from_code(code: u8) -> Option<Suite> {
        [Suite::Aes128Gcm, Suite::Aes256Gcm, Suite::Chacha20Poly1305]
            .into_iter()
            .find(|s| s.code() == code)
    }
}

/// One direction's traffic key, IV and next record number.
#[derive(Clone, PartialEq, Eq)]
pub struct DirectionSecrets {
    pub key: Vec<u8>,
    pub iv: [u8; 12],
    pub seq: u64,
}

impl std::fmt::Debug for DirectionSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DirectionSecrets {{ seq: {}, .. }}", self.seq) // no key in logs
    }
}

/// What continues a TLS 1.3 session elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSecrets {
    pub suite: Suite,
    pub tx: DirectionSecrets,
    pub rx: DirectionSecrets,
}

struct Direction {
    key: LessSafeKey,
    /// The key's bytes, for moving the session on again (a later upgrade).
    raw: Box<[u8]>,
    iv: [u8; 12],
    seq: u64,
}

impl Direction {
    fn new(suite: Suite, s: &DirectionSecrets) -> Result<Direction, TlsError> {
        let key = UnboundKey::new(suite.algorithm(), &s.key)
            .map_err(|_| TlsError::local("a traffic key of the wrong length"))?;
        Ok(Direction {
            key: LessSafeKey::new(key),
            raw: s.key.clone().into_boxed_slice(),
            iv: s.iv,
            seq: s.seq,
        })
    }

    fn secrets(&self) -> DirectionSecrets {
        DirectionSecrets {
            key: self.raw.to_vec(),
            iv: self.iv,
            seq: self.seq,
        }
    }

    /// The next record's nonce (RFC 8446 §5.3); the counter moves on.
    fn next_nonce(&mut self, limit: u64) -> Result<Nonce, TlsError> {
        if self.seq >= limit {
            return Err(TlsError::local("traffic keys used up; reconnect"));
        }
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        self.seq = self
            .seq
            .checked_add(1)
            .ok_or(TlsError::local("record counter exhausted"))?;
        Ok(Nonce::assume_unique_for_key(nonce))
    }
}

/// The record layer of a session resumed from [`SessionSecrets`]; the same
/// buffer contract as `TlsServer`.
pub struct ResumedSession {
    suite: Suite,
    /// Records each direction's key may protect.
    record_limit: u64,
    tx: Direction,
    rx: Direction,
    peer_closed: bool,
    sent_close: bool,
}

impl ResumedSession {
    pub fn new(s: &SessionSecrets) -> Result<ResumedSession, TlsError> {
        let record_limit = match s.suite {
            Suite::Chacha20Poly1305 => u64::MAX,
            Suite::Aes128Gcm | Suite::Aes256Gcm => AES_GCM_RECORDS,
        };
        Ok(ResumedSession {
            suite: s.suite,
            record_limit,
            tx: Direction::new(s.suite, &s.tx)?,
            rx: Direction::new(s.suite, &s.rx)?,
            peer_closed: false,
            sent_close: false,
        })
    }

    /// Decrypts the complete records at the front of `incoming` into
    /// `plaintext`, removing them; an incomplete one stays.
    pub fn read_tls(
        &mut self,
        incoming: &mut BytesMut,
        plaintext: &mut BytesMut,
    ) -> Result<Progress, TlsError> {
        // The handshake was done in the process the session came from.
        let mut read = Progress {
            handshake_done: true,
            ..Progress::default()
        };
        while !self.peer_closed && incoming.len() >= HEADER {
            let len = usize::from(u16::from_be_bytes([incoming[3], incoming[4]]));
            if incoming[0] != APPLICATION_DATA || !(TAG + 1..=MAX_CIPHER).contains(&len) {
                return Err(TlsError::local("not a TLS 1.3 record"));
            }
            if incoming.len() < HEADER + len {
                break;
            }
            let mut record = incoming.split_to(HEADER + len);
            let (header, body) = record.split_at_mut(HEADER);
            let nonce = self.rx.next_nonce(self.record_limit)?;
            let aad = Aad::from(&*header);
            let inner = self
                .rx
                .key
                .open_in_place(nonce, aad, body)
                .map_err(|_| TlsError::local("a record failed to decrypt"))?;
            let end = inner
                .iter()
                .rposition(|b| *b != 0)
                .ok_or(TlsError::local("no content type"))?;
            let (content, kind) = (&inner[..end], inner[end]);
            if content.len() > MAX_PLAIN {
                return Err(TlsError::local("record overflow"));
            }
            match kind {
                APPLICATION_DATA => {
                    plaintext.extend_from_slice(content);
                    read.plaintext += content.len();
                }
                ALERT if content == [1, 0] || content == [2, 0] => {
                    self.peer_closed = true;
                    read.peer_closed = true;
                }
                // A warning before its close_notify: nothing to do.
                ALERT if content == [1, USER_CANCELED] => {}
                ALERT => return Err(TlsError::local("the peer sent an alert")),
                HANDSHAKE => {
                    return Err(TlsError::local(
                        "a key update after an upgrade is not supported",
                    ))
                }
                _ => return Err(TlsError::local("unexpected record content type")),
            }
        }
        if self.peer_closed {
            incoming.clear();
        }
        Ok(read)
    }

    /// Encrypts `plain` into records of at most 16 KiB each.
    pub fn write_plain(&mut self, plain: &[u8], outgoing: &mut BytesMut) -> Result<(), TlsError> {
        if self.sent_close {
            return Err(TlsError::local("session closed"));
        }
        for chunk in plain.chunks(MAX_PLAIN) {
            self.seal(APPLICATION_DATA, chunk, outgoing)?;
        }
        Ok(())
    }

    /// Appends a close_notify alert, once.
    pub fn close_notify(&mut self, outgoing: &mut BytesMut) {
        if !self.sent_close {
            self.sent_close = self.seal(ALERT, &[1, 0], outgoing).is_ok();
        }
    }

    fn seal(&mut self, kind: u8, content: &[u8], out: &mut BytesMut) -> Result<(), TlsError> {
        let len = content.len() + 1 + TAG;
        let header = [APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
        let mut record = BytesMut::with_capacity(HEADER + len);
        record.put_slice(&header);
        record.put_slice(content);
        record.put_u8(kind);
        let nonce = self.tx.next_nonce(self.record_limit)?;
        let mut body = record.split_off(HEADER);
        self.tx
            .key
            .seal_in_place_append_tag(nonce, Aad::from(header), &mut body)
            .map_err(|_| TlsError::local("encrypt failed"))?;
        out.put_slice(&record);
        out.put_slice(&body);
        Ok(())
    }

    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Whether the session can move on again (nothing closed).
    pub fn can_move(&self) -> bool {
        !self.peer_closed && !self.sent_close
    }

    /// The keys and counters now, to continue in yet another process.
    pub fn secrets(&self) -> SessionSecrets {
        SessionSecrets {
            suite: self.suite,
            tx: self.tx.secrets(),
            rx: self.rx.secrets(),
        }
    }
}
