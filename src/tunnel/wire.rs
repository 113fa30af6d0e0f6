//! Primitive encodings of the tunnel protocol: LEB128 varints, length-prefixed
//! strings and byte strings. Readers never panic and never allocate more than
//! the input holds.

use bytes::{BufMut, Bytes, BytesMut};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated;

pub fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

pub fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.put_slice(b);
}

/// A cursor over one frame body, handing out zero-copy slices of it.
pub struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    pub fn new(buf: Bytes) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub fn varint(&mut self) -> Result<u64, Truncated> {
        let mut v: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or(Truncated)?;
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(Truncated);
            }
            v |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Truncated)
    }

    pub fn u8(&mut self) -> Result<u8, Truncated> {
        let b = *self.buf.get(self.pos).ok_or(Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    pub fn bytes(&mut self) -> Result<Bytes, Truncated> {
        let len = usize::try_from(self.varint()?).map_err(|_| Truncated)?;
        let end = self.pos.checked_add(len).ok_or(Truncated)?;
        if end > self.buf.len() {
            return Err(Truncated);
        }
        let b = self.buf.slice(self.pos..end);
        self.pos = end;
        Ok(b)
    }

    pub fn string(&mut self) -> Result<String, Truncated> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| Truncated)
    }

    pub fn rest(&mut self) -> Bytes {
        let b = self.buf.slice(self.pos.min(self.buf.len())..);
        self.pos = self.buf.len();
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varints_round_trip(v in any::<u64>()) {
            let mut out = BytesMut::new();
            put_varint(&mut out, v);
            prop_assert!(out.len() <= 10);
            prop_assert_eq!(Reader::new(out.freeze()).varint(), Ok(v));
        }

        #[test]
        fn readers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new(Bytes::from(bytes));
            let _ = r.varint();
            let _ = r.bytes();
            let _ = r.string();
        }
    }
}
