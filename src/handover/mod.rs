//! What one gateway process tells the next during an upgrade (sans-IO).
//!
//! `tether upgrade` (SIGUSR2) starts the new binary with one end of a Unix
//! socket pair; the old process hands it its listening sockets, then every
//! client connection — the descriptor travels beside its record as
//! SCM_RIGHTS — and says when it is done (docs/ARCHITECTURE.md, "Upgrade").
//! Everything here is plain code over bytes: the IO lives in
//! `server::runtime::upgrade`.
//!
//! The channel carries [`Note`]s, each one encoded message. Sizes are
//! bounded by what a gateway may hold per connection (the migration buffer,
//! a frame of unread input), checked before anything is allocated.

mod record;

pub use record::{ConnRecord, HeldMessage, TlsState};

use bytes::{BufMut, Bytes, BytesMut};

use crate::tunnel::wire::{put_varint, Reader};

/// Bumped when a record changes shape; a new binary refuses an old one's
/// notes of another version (and the old process keeps serving).
pub const HANDOVER_VERSION: u64 = 2;

/// One message on the upgrade channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// old → new, first: the listening sockets, in this order, as
    /// descriptors beside the note (client ×`client`, runner ×`runner`,
    /// then the admin one).
    Listeners { client: u32, runner: u32 },
    /// new → old: listeners taken, workers up: send the connections.
    Ready,
    /// old → new: one client connection (its socket beside the note, unless
    /// the client already closed: `ConnRecord::close`).
    Conn(Box<ConnRecord>),
    /// old → new: every connection was sent (`conns` of them).
    Done { conns: u64 },
    /// new → old: everything was taken; the old process may exit.
    Taken,
}

mod tag {
    pub const LISTENERS: u8 = 1;
    pub const READY: u8 = 2;
    pub const CONN: u8 = 3;
    pub const DONE: u8 = 4;
    pub const TAKEN: u8 = 5;
}

/// Why a note could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoverError(pub &'static str);

impl std::fmt::Display for HandoverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad upgrade note: {}", self.0)
    }
}

impl From<crate::tunnel::wire::Truncated> for HandoverError {
    fn from(_: crate::tunnel::wire::Truncated) -> Self {
        HandoverError("truncated")
    }
}

impl Note {
    /// How many descriptors travel beside this note.
    pub fn descriptors(&self) -> usize {
        match self {
            Note::Listeners { client, runner } => *client as usize + *runner as usize + 1,
            Note::Conn(record) if record.close.is_some() => 0,
            Note::Conn(_) => 1,
            _ => 0,
        }
    }

    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        put_varint(&mut out, HANDOVER_VERSION);
        match self {
            Note::Listeners { client, runner } => {
                out.put_u8(tag::LISTENERS);
                put_varint(&mut out, u64::from(*client));
                put_varint(&mut out, u64::from(*runner));
            }
            Note::Ready => out.put_u8(tag::READY),
            Note::Conn(record) => {
                out.put_u8(tag::CONN);
                record.encode(&mut out);
            }
            Note::Done { conns } => {
                out.put_u8(tag::DONE);
                put_varint(&mut out, *conns);
            }
            Note::Taken => out.put_u8(tag::TAKEN),
        }
        out.freeze()
    }

    pub fn decode(bytes: Bytes) -> Result<Note, HandoverError> {
        let mut r = Reader::new(bytes);
        if r.varint()? != HANDOVER_VERSION {
            return Err(HandoverError("another handover version"));
        }
        let note = match r.u8()? {
            tag::LISTENERS => Note::Listeners {
                client: small_count(&mut r)?,
                runner: small_count(&mut r)?,
            },
            tag::READY => Note::Ready,
            tag::CONN => Note::Conn(Box::new(ConnRecord::decode(&mut r)?)),
            tag::DONE => Note::Done { conns: r.varint()? },
            tag::TAKEN => Note::Taken,
            _ => return Err(HandoverError("unknown note")),
        };
        if !r.is_empty() {
            return Err(HandoverError("trailing bytes"));
        }
        Ok(note)
    }
}

/// A listener count: at most one per worker.
fn small_count(r: &mut Reader) -> Result<u32, HandoverError> {
    let n = r.varint()?;
    if n == 0 || n > crate::config::MAX_WORKERS as u64 {
        return Err(HandoverError("listener count out of range"));
    }
    Ok(n as u32)
}

#[cfg(test)]
mod tests;
