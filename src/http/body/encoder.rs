//! Framing a body on the way out, without copying it.
//!
//! Each piece comes back as a small head to copy (a chunk-size line, at most
//! 18 bytes), the caller's `Bytes` untouched, and a static tail: what a
//! gather write (`conn::Outbox`) sends as-is. Every piece is a whole chunk,
//! so a stream (Server-Sent Events) reaches the client as it is produced.

use bytes::Bytes;

use super::Framing;

/// The last chunk with an empty trailer section: the end of a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A chunk-size line (`{hex}\r\n`), held inline: 16 hex digits at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHead {
    bytes: [u8; 18],
    len: u8,
}

impl ChunkHead {
    const EMPTY: ChunkHead = ChunkHead {
        bytes: [0; 18],
        len: 0,
    };

    fn new(size: u64) -> Self {
        let digits = (64 - size.leading_zeros()).div_ceil(4).max(1) as usize;
        let mut bytes = [0u8; 18];
        for (i, b) in bytes[..digits].iter_mut().enumerate() {
            let shift = 4 * (digits - 1 - i);
            *b = b"0123456789abcdef"[((size >> shift) & 0xf) as usize];
        }
        bytes[digits..digits + 2].copy_from_slice(b"\r\n");
        ChunkHead {
            bytes,
            len: digits as u8 + 2,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// One piece of a body, framed: `head`, then `payload`, then `tail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framed {
    /// Empty unless chunked.
    pub head: ChunkHead,
    pub payload: Bytes,
    /// `\r\n` when chunked, else empty.
    pub tail: &'static [u8],
}

/// Why a body could not be framed as declared. Either way the connection
/// must close: the client cannot tell where this body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// More bytes than the `Content-Length` sent ahead of them.
    Overrun { declared: u64 },
    /// The body ended this many bytes short of its `Content-Length`.
    Short { missing: u64 },
    /// A piece after the body was finished.
    Finished,
}

#[derive(Debug)]
pub struct BodyEncoder {
    kind: Kind,
    finished: bool,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Length { declared: u64, sent: u64 },
    Chunked,
    UntilClose,
}

impl BodyEncoder {
    pub fn new(framing: Framing) -> Self {
        let kind = match framing {
            Framing::Length(declared) => Kind::Length { declared, sent: 0 },
            Framing::Chunked => Kind::Chunked,
            Framing::UntilClose => Kind::UntilClose,
        };
        Self {
            kind,
            finished: false,
        }
    }

    /// Frames the next piece. `Ok(None)` for an empty piece: in chunked
    /// framing an empty chunk would end the body, so none is ever written.
    pub fn encode(&mut self, payload: Bytes) -> Result<Option<Framed>, EncodeError> {
        if self.finished {
            return Err(EncodeError::Finished);
        }
        if payload.is_empty() {
            return Ok(None);
        }
        let (head, tail): (_, &'static [u8]) = match &mut self.kind {
            Kind::Length { declared, sent } => {
                let total = sent.saturating_add(payload.len() as u64);
                if total > *declared {
                    return Err(EncodeError::Overrun {
                        declared: *declared,
                    });
                }
                *sent = total;
                (ChunkHead::EMPTY, b"")
            }
            Kind::Chunked => (ChunkHead::new(payload.len() as u64), b"\r\n"),
            Kind::UntilClose => (ChunkHead::EMPTY, b""),
        };
        Ok(Some(Framed {
            head,
            payload,
            tail,
        }))
    }

    /// Ends the body: the bytes that close it (the last chunk, or nothing),
    /// or why it cannot end here. For `UntilClose` the caller then closes.
    pub fn finish(&mut self) -> Result<&'static [u8], EncodeError> {
        if self.finished {
            return Err(EncodeError::Finished);
        }
        self.finished = true;
        match self.kind {
            Kind::Length { declared, sent } if sent < declared => Err(EncodeError::Short {
                missing: declared - sent,
            }),
            Kind::Chunked => Ok(LAST_CHUNK),
            _ => Ok(b""),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(framed: &Framed) -> Vec<u8> {
        [framed.head.as_bytes(), &framed.payload, framed.tail].concat()
    }

    #[test]
    fn chunk_heads() {
        assert_eq!(ChunkHead::new(0).as_bytes(), b"0\r\n");
        assert_eq!(ChunkHead::new(1).as_bytes(), b"1\r\n");
        assert_eq!(ChunkHead::new(15).as_bytes(), b"f\r\n");
        assert_eq!(ChunkHead::new(16).as_bytes(), b"10\r\n");
        assert_eq!(ChunkHead::new(0x1234abcd).as_bytes(), b"1234abcd\r\n");
        assert_eq!(ChunkHead::new(u64::MAX).as_bytes(), b"ffffffffffffffff\r\n");
    }

    #[test]
    fn chunked_shares_the_payload() {
        let mut enc = BodyEncoder::new(Framing::Chunked);
        let payload = Bytes::from(vec![7u8; 300]);
        let framed = enc.encode(payload.clone()).unwrap().unwrap();
        assert_eq!(framed.payload.as_ptr(), payload.as_ptr());
        assert_eq!(wire(&framed), [&b"12c\r\n"[..], &payload, b"\r\n"].concat());
        assert_eq!(enc.encode(Bytes::new()), Ok(None));
        assert_eq!(enc.finish(), Ok(LAST_CHUNK));
        assert_eq!(
            enc.encode(Bytes::from_static(b"x")),
            Err(EncodeError::Finished)
        );
        assert_eq!(enc.finish(), Err(EncodeError::Finished));
    }

    #[test]
    fn length_counts_exactly() {
        let mut enc = BodyEncoder::new(Framing::Length(5));
        let framed = enc.encode(Bytes::from_static(b"hel")).unwrap().unwrap();
        assert_eq!(wire(&framed), b"hel");
        assert_eq!(
            enc.encode(Bytes::from_static(b"lo!")),
            Err(EncodeError::Overrun { declared: 5 })
        );
        assert_eq!(enc.finish(), Err(EncodeError::Short { missing: 2 }));

        let mut exact = BodyEncoder::new(Framing::Length(2));
        assert!(exact.encode(Bytes::from_static(b"ok")).unwrap().is_some());
        assert_eq!(exact.finish(), Ok(&b""[..]));
        assert_eq!(BodyEncoder::new(Framing::Length(0)).finish(), Ok(&b""[..]));
    }

    #[test]
    fn until_close_passes_through() {
        let mut enc = BodyEncoder::new(Framing::UntilClose);
        let framed = enc
            .encode(Bytes::from_static(b"data: x\n\n"))
            .unwrap()
            .unwrap();
        assert_eq!(wire(&framed), b"data: x\n\n");
        assert_eq!(enc.finish(), Ok(&b""[..]));
    }
}
