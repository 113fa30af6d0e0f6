//! RFC 6455 frame headers: parsing, encoding and payload masking.

use bytes::{BufMut, BytesMut};

use super::close::{CloseCode, ProtocolError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    pub fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    pub opcode: OpCode,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
    /// Bytes the header itself occupies on the wire.
    pub header_len: usize,
}

/// Largest header: 2 fixed bytes, 8 length bytes, 4 mask bytes.
pub const MAX_HEADER_LEN: usize = 14;

/// Parses a frame header from the start of `buf`. `Ok(None)` means more bytes
/// are needed; nothing is consumed either way.
pub fn parse_header(buf: &[u8]) -> Result<Option<FrameHeader>, ProtocolError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(ProtocolError::new(
            CloseCode::PROTOCOL,
            "reserved bits set without a negotiated extension",
        ));
    }
    let opcode = OpCode::from_bits(b0 & 0x0F)
        .ok_or(ProtocolError::new(CloseCode::PROTOCOL, "reserved opcode"))?;
    let masked = b1 & 0x80 != 0;
    let (payload_len, mut pos) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut len = [0u8; 8];
            len.copy_from_slice(&buf[2..10]);
            let len = u64::from_be_bytes(len);
            if len >> 63 != 0 {
                return Err(ProtocolError::new(
                    CloseCode::PROTOCOL,
                    "payload length has its top bit set",
                ));
            }
            (len, 10)
        }
        n => (n as u64, 2),
    };
    let mask = if masked {
        if buf.len() < pos + 4 {
            return Ok(None);
        }
        let mut m = [0u8; 4];
        m.copy_from_slice(&buf[pos..pos + 4]);
        pos += 4;
        Some(m)
    } else {
        None
    };
    Ok(Some(FrameHeader {
        fin: b0 & 0x80 != 0,
        opcode,
        mask,
        payload_len,
        header_len: pos,
    }))
}

/// Appends an unmasked (server-to-client) frame header.
pub fn encode_header(out: &mut BytesMut, fin: bool, opcode: OpCode, payload_len: usize) {
    let b0 = if fin { 0x80 } else { 0 } | opcode.bits();
    out.put_u8(b0);
    if payload_len < 126 {
        out.put_u8(payload_len as u8);
    } else if payload_len <= u16::MAX as usize {
        out.put_u8(126);
        out.put_u16(payload_len as u16);
    } else {
        out.put_u8(127);
        out.put_u64(payload_len as u64);
    }
}

/// Appends a complete unmasked frame.
pub fn encode_frame(out: &mut BytesMut, opcode: OpCode, payload: &[u8]) {
    out.reserve(MAX_HEADER_LEN + payload.len());
    encode_header(out, true, opcode, payload.len());
    out.extend_from_slice(payload);
}

/// Appends a masked frame, as a client sends it. The gateway never sends
/// masked frames to clients; this exists for the runner side and for tests.
pub fn encode_masked_frame(
    out: &mut BytesMut,
    fin: bool,
    opcode: OpCode,
    mask: [u8; 4],
    payload: &[u8],
) {
    out.reserve(MAX_HEADER_LEN + payload.len());
    let start = out.len();
    encode_header(out, fin, opcode, payload.len());
    out[start + 1] |= 0x80;
    out.extend_from_slice(&mask);
    let body = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[body..], mask, 0);
}

/// XORs `data` with `mask`, where `data` starts `offset` bytes into the payload.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut key = [0u8; 8];
    for (i, k) in key.iter_mut().enumerate() {
        *k = mask[(offset + i) % 4];
    }
    let word = u64::from_ne_bytes(key);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes((&*chunk).try_into().unwrap_or([0; 8])) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lengths_round_trip() {
        for len in [0usize, 1, 125, 126, 65535, 65536, 1 << 24] {
            let mut out = BytesMut::new();
            encode_header(&mut out, true, OpCode::Binary, len);
            let h = parse_header(&out).unwrap().unwrap();
            assert_eq!(h.payload_len, len as u64);
            assert_eq!(h.header_len, out.len());
            assert_eq!(h.opcode, OpCode::Binary);
            assert!(h.fin && h.mask.is_none());
            for cut in 0..out.len() {
                assert_eq!(parse_header(&out[..cut]).unwrap(), None);
            }
        }
    }

    #[test]
    fn rejects_reserved_bits_and_opcodes() {
        assert!(parse_header(&[0x81 | 0x40, 0x80]).is_err());
        assert!(parse_header(&[0x83, 0x80]).is_err());
        assert!(parse_header(&[0x8B, 0x80]).is_err());
    }

    #[test]
    fn mask_is_its_own_inverse_at_any_offset() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let mask = [1, 2, 3, 4];
        for split in [0usize, 1, 3, 7, 8, 9, 500] {
            let mut d = data.clone();
            apply_mask(&mut d[..split], mask, 0);
            apply_mask(&mut d[split..], mask, split);
            let mut whole = data.clone();
            apply_mask(&mut whole, mask, 0);
            assert_eq!(d, whole);
            apply_mask(&mut d, mask, 0);
            assert_eq!(d, data);
        }
    }
}
