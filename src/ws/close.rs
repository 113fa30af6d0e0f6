//! Close codes and close-frame payloads (RFC 6455 §5.5.1, §7.4).

use bytes::{BufMut, Bytes, BytesMut};

use super::frame::{encode_frame, OpCode};

/// A close status code. Associated constants name the ones the gateway uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    pub const NORMAL: CloseCode = CloseCode(1000);
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    pub const PROTOCOL: CloseCode = CloseCode(1002);
    /// A kind of data the endpoint does not accept (text on a binary channel).
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// Reported, never sent: the close frame carried no code.
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// Reported, never sent: the connection ended without a close frame.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    pub const POLICY: CloseCode = CloseCode(1008);
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    pub const INTERNAL: CloseCode = CloseCode(1011);
    /// The server restarts (an upgrade that cannot carry the connection).
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);

    /// Whether a peer may send this code in a close frame. 1004–1006 and 1015
    /// are reserved for local use; 1016–2999 are unassigned protocol codes;
    /// 3000–4999 belong to libraries and applications.
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }

    /// The application code that reports an HTTP status after an upgrade
    /// (browsers see a refused handshake only as 1006): 4000 + status.
    pub fn for_http_status(status: u16) -> CloseCode {
        CloseCode(4000 + status)
    }
}

/// A protocol violation: the connection must be failed with this code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolError {
    pub code: CloseCode,
    pub reason: &'static str,
}

impl ProtocolError {
    pub const fn new(code: CloseCode, reason: &'static str) -> Self {
        Self { code, reason }
    }
}

/// A received close frame's payload, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    pub code: CloseCode,
    /// UTF-8, at most 123 bytes.
    pub reason: Bytes,
}

/// Parses a close payload: empty (no status), or a valid code and a UTF-8 reason.
pub fn parse_close_payload(payload: Bytes) -> Result<Option<CloseFrame>, ProtocolError> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(ProtocolError::new(
            CloseCode::PROTOCOL,
            "close payload of one byte",
        )),
        _ => {
            let code = CloseCode(u16::from_be_bytes([payload[0], payload[1]]));
            if !code.is_sendable() {
                return Err(ProtocolError::new(
                    CloseCode::PROTOCOL,
                    "invalid close code",
                ));
            }
            let reason = payload.slice(2..);
            if std::str::from_utf8(&reason).is_err() {
                // RFC 6455 §8.1: invalid UTF-8 in text data, and a close
                // reason is text, fails the connection with 1007.
                return Err(ProtocolError::new(
                    CloseCode::INVALID_PAYLOAD,
                    "close reason is not UTF-8",
                ));
            }
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

/// Appends a close frame; the reason is cut at a char boundary to fit 123 bytes.
pub fn encode_close(out: &mut BytesMut, code: CloseCode, reason: &str) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = [0u8; 125];
    let mut w = &mut payload[..];
    w.put_u16(code.0);
    w.put_slice(&reason.as_bytes()[..end]);
    encode_frame(out, OpCode::Close, &payload[..2 + end]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_code_ranges() {
        for ok in [1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999] {
            assert!(CloseCode(ok).is_sendable(), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            assert!(!CloseCode(bad).is_sendable(), "{bad}");
        }
    }

    #[test]
    fn close_payload_rules() {
        assert_eq!(parse_close_payload(Bytes::new()), Ok(None));
        assert!(parse_close_payload(Bytes::from_static(&[3])).is_err());
        assert!(parse_close_payload(Bytes::from_static(&[3, 0xE8, 0xFF])).is_err());
        let ok = parse_close_payload(Bytes::from_static(b"\x03\xe8bye")).unwrap();
        assert_eq!(ok.unwrap().code, CloseCode::NORMAL);
    }

    #[test]
    fn long_reasons_are_cut_at_a_char_boundary() {
        let mut out = BytesMut::new();
        encode_close(&mut out, CloseCode::GOING_AWAY, &"é".repeat(100));
        assert_eq!(out[1] as usize, out.len() - 2);
        assert!(out.len() - 2 <= 125);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }
}
