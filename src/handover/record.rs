//! One client connection as the old process hands it over: its actor, what
//! the actor must get again (RestoreConn's fields), what it has not
//! acknowledged, and the bytes read from the socket but not yet decoded.

use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};

use super::HandoverError;
use crate::tls::{DirectionSecrets, SessionSecrets, Suite};
use crate::tunnel::codec::limits;
use crate::tunnel::wire::{put_bytes, put_varint, Reader};
use crate::tunnel::MessageKind;

/// A client message the actor has not acknowledged (or was never sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldMessage {
    pub index: u64,
    pub kind: MessageKind,
    pub payload: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnRecord {
    pub ns: String,
    pub name: String,
    pub key: Vec<String>,
    /// The actor was running (or starting, or moving) when the handover
    /// began: the new process starts it as soon as a runner is back.
    pub actor_awake: bool,
    pub conn_id: u64,
    pub peer: SocketAddr,
    pub hibernatable: bool,
    /// The index of the client's last message.
    pub next_index: u64,
    /// The highest index the actor acknowledged.
    pub last_acked: u64,
    pub query: String,
    pub headers: Vec<(String, Bytes)>,
    pub protocol: Option<String>,
    pub attachment: Bytes,
    /// Not acknowledged, in index order.
    pub held: Vec<HeldMessage>,
    /// Read from the socket, not decoded yet: the start of a frame.
    pub unread: Bytes,
    /// The client closed (code, reason) before its actor could be told: the
    /// connection travels without a socket, for the actor to see its
    /// messages and then its close.
    pub close: Option<(u16, String)>,
    /// A `wss://` connection's TLS 1.3 session: its traffic keys and record
    /// counters, and the ciphertext read but not yet processed.
    pub tls: Option<TlsState>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsState {
    pub secrets: SessionSecrets,
    pub incoming: Bytes,
}

impl ConnRecord {
    pub(super) fn encode(&self, out: &mut BytesMut) {
        put_str(out, &self.ns);
        put_str(out, &self.name);
        put_varint(out, self.key.len() as u64);
        self.key.iter().for_each(|k| put_str(out, k));
        let flags = u8::from(self.actor_awake)
            | u8::from(self.hibernatable) << 1
            | u8::from(self.close.is_some()) << 2
            | u8::from(self.tls.is_some()) << 3;
        out.put_u8(flags);
        put_varint(out, self.conn_id);
        put_str(out, &self.peer.to_string());
        put_varint(out, self.next_index);
        put_varint(out, self.last_acked);
        put_str(out, &self.query);
        put_varint(out, self.headers.len() as u64);
        for (name, value) in &self.headers {
            put_str(out, name);
            put_bytes(out, value);
        }
        put_str(out, self.protocol.as_deref().unwrap_or(""));
        put_bytes(out, &self.attachment);
        put_varint(out, self.held.len() as u64);
        for m in &self.held {
            put_varint(out, m.index);
            out.put_u8(matches!(m.kind, MessageKind::Binary).into());
            put_bytes(out, &m.payload);
        }
        put_bytes(out, &self.unread);
        if let Some((code, reason)) = &self.close {
            put_varint(out, u64::from(*code));
            put_str(out, reason);
        }
        if let Some(tls) = &self.tls {
            out.put_u8(tls.secrets.suite.code());
            put_direction(out, &tls.secrets.tx);
            put_direction(out, &tls.secrets.rx);
            put_bytes(out, &tls.incoming);
        }
    }

    pub(super) fn decode(r: &mut Reader) -> Result<ConnRecord, HandoverError> {
        let ns = r.string()?;
        let name = r.string()?;
        let key = (0..count(r, limits::KEY_PARTS, 1)?)
            .map(|_| r.string())
            .collect::<Result<_, _>>()?;
        let flags = r.u8()?;
        let conn_id = r.varint()?;
        let peer = r
            .string()?
            .parse()
            .map_err(|_| HandoverError("peer is not an address"))?;
        let next_index = r.varint()?;
        let last_acked = r.varint()?;
        let query = r.string()?;
        let headers = (0..count(r, limits::HEADERS, 2)?)
            .map(|_| Ok((r.string()?, r.bytes()?)))
            .collect::<Result<_, HandoverError>>()?;
        let protocol = Some(r.string()?).filter(|p| !p.is_empty());
        let attachment = r.bytes()?;
        let held = (0..count(r, u64::MAX, 3)?)
            .map(|_| held_message(r))
            .collect::<Result<Vec<_>, _>>()?;
        let unread = r.bytes()?;
        let close = match flags & 4 {
            0 => None,
            _ => Some((close_code(r)?, r.string()?)),
        };
        let tls = match flags & 8 {
            0 => None,
            _ => Some(tls_state(r)?),
        };
        if last_acked > next_index {
            return Err(HandoverError("acknowledged beyond the last message"));
        }
        check_held(&held, last_acked, next_index)?;
        Ok(ConnRecord {
            ns,
            name,
            key,
            actor_awake: flags & 1 != 0,
            conn_id,
            peer,
            hibernatable: flags & 2 != 0,
            next_index,
            last_acked,
            query,
            headers,
            protocol,
            attachment,
            held,
            unread,
            close,
            tls,
        })
    }
}

fn put_direction(out: &mut BytesMut, d: &DirectionSecrets) {
    put_varint(out, d.seq);
    put_bytes(out, &d.key);
    out.put_slice(&d.iv);
}

fn direction(r: &mut Reader) -> Result<DirectionSecrets, HandoverError> {
    let seq = r.varint()?;
    let key = r.bytes()?;
    if !matches!(key.len(), 16 | 32) {
        return Err(HandoverError("a traffic key of the wrong length"));
    }
    let mut iv = [0u8; 12];
    for b in &mut iv {
        *b = r.u8()?;
    }
    Ok(DirectionSecrets {
        key: key.to_vec(),
        iv,
        seq,
    })
}

fn tls_state(r: &mut Reader) -> Result<TlsState, HandoverError> {
    let suite = Suite::from_code(r.u8()?).ok_or(HandoverError("unknown cipher suite"))?;
    let tx = direction(r)?;
    let rx = direction(r)?;
    let incoming = r.bytes()?;
    let secrets = SessionSecrets { suite, tx, rx };
    Ok(TlsState { secrets, incoming })
}

fn close_code(r: &mut Reader) -> Result<u16, HandoverError> {
    u16::try_from(r.varint()?).map_err(|_| HandoverError("close code out of range"))
}

/// Held messages are what the actor has not acknowledged, in index order,
/// none beyond the client's last.
fn check_held(held: &[HeldMessage], last_acked: u64, next_index: u64) -> Result<(), HandoverError> {
    let mut previous = last_acked;
    for m in held {
        if m.index <= previous || m.index > next_index {
            return Err(HandoverError("held messages out of order"));
        }
        previous = m.index;
    }
    Ok(())
}

fn held_message(r: &mut Reader) -> Result<HeldMessage, HandoverError> {
    let index = r.varint()?;
    let kind = match r.u8()? {
        0 => MessageKind::Text,
        1 => MessageKind::Binary,
        _ => return Err(HandoverError("unknown message kind")),
    };
    Ok(HeldMessage {
        index,
        kind,
        payload: r.bytes()?,
    })
}

fn put_str(out: &mut BytesMut, s: &str) {
    put_bytes(out, s.as_bytes());
}

/// A list's entry count, checked against `max` and the bytes left before
/// anything is allocated.
fn count(r: &mut Reader, max: u64, min_entry_bytes: usize) -> Result<usize, HandoverError> {
    let n = r.varint()?;
    if n > max || (n as usize).saturating_mul(min_entry_bytes) > r.remaining() {
        return Err(HandoverError("list longer than the note"));
    }
    Ok(n as usize)
}
