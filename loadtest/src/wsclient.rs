//! The client side of WebSocket, sans-IO: the upgrade request, its answer,
//! masked frames out and server frames in. Frame headers are parsed by the
//! gateway's own `tether::ws::frame`; everything else here is independent.

use bytes::{Buf, Bytes, BytesMut};
use tether::ws::frame::{encode_masked_frame, parse_header, OpCode};

/// RFC 6455's sample key; servers must answer it with `s3pPLMBiTxaQ9kYGzzhZRbK+xOo=`.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

pub fn upgrade_request(authority: &str, path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The server answered, but not with 101 (its status).
    Refused(u16),
    Malformed(String),
}

/// Parses the answer to the upgrade; `Ok(Some(n))`: upgraded, the head took
/// `n` bytes (frames may follow in the same buffer).
pub fn parse_upgrade_response(buf: &[u8]) -> Result<Option<usize>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let n = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > 16 * 1024 => {
            return Err(HandshakeError::Malformed(
                "response head over 16 KiB".into(),
            ))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HandshakeError::Malformed(e.to_string())),
    };
    let status = response.code.unwrap_or(0);
    if status != 101 {
        return Err(HandshakeError::Refused(status));
    }
    let accept = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|h| h.value);
    if accept != Some(ACCEPT.as_bytes()) {
        return Err(HandshakeError::Malformed(
            "wrong Sec-WebSocket-Accept".into(),
        ));
    }
    Ok(Some(n))
}

/// A mask per frame, as RFC 6455 asks; not cryptographic (nothing here is
/// secret), just varying.
pub struct Masker(u32);

impl Masker {
    pub fn new(seed: u32) -> Self {
        Masker(seed | 1)
    }

    /// xorshift32.
    pub fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }

    fn next(&mut self) -> [u8; 4] {
        self.next_u32().to_ne_bytes()
    }

    pub fn encode(&mut self, out: &mut BytesMut, opcode: OpCode, payload: &[u8]) {
        let mask = self.next();
        encode_masked_frame(out, true, opcode, mask, payload);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    pub opcode: OpCode,
    pub payload: Bytes,
}

/// Takes one complete frame off the front of `buf`. Servers do not mask
/// and (ours) do not fragment; both are reported as errors.
pub fn decode_server_frame(buf: &mut BytesMut) -> Result<Option<ServerFrame>, String> {
    let Some(h) = parse_header(buf).map_err(|e| e.reason.to_string())? else {
        return Ok(None);
    };
    if h.mask.is_some() {
        return Err("the server sent a masked frame".into());
    }
    if !h.fin || h.opcode == OpCode::Continuation {
        return Err("the server sent a fragmented message".into());
    }
    let len = h.header_len + h.payload_len as usize;
    if buf.len() < len {
        buf.reserve(len - buf.len());
        return Ok(None);
    }
    buf.advance(h.header_len);
    let payload = buf.split_to(h.payload_len as usize).freeze();
    Ok(Some(ServerFrame {
        opcode: h.opcode,
        payload,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether::ws::frame::encode_frame;

    #[test]
    fn upgrade_answers() {
        let mut ok = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {ACCEPT}\r\n\r\n").into_bytes();
        ok.extend_from_slice(b"\x81\x02hi");
        let n = parse_upgrade_response(&ok).unwrap().unwrap();
        assert_eq!(&ok[n..], b"\x81\x02hi");
        assert_eq!(parse_upgrade_response(&ok[..20]), Ok(None));
        assert_eq!(
            parse_upgrade_response(b"HTTP/1.1 503 Service Unavailable\r\n\r\n"),
            Err(HandshakeError::Refused(503))
        );
        let wrong = "HTTP/1.1 101 x\r\nSec-WebSocket-Accept: nope\r\n\r\n";
        assert!(matches!(
            parse_upgrade_response(wrong.as_bytes()),
            Err(HandshakeError::Malformed(_))
        ));
    }

    #[test]
    fn frames_round_trip_in_pieces() {
        let mut wire = BytesMut::new();
        encode_frame(&mut wire, OpCode::Text, b"hello");
        encode_frame(&mut wire, OpCode::Binary, &vec![7u8; 70_000]);
        let all = wire.freeze();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for chunk in all.chunks(1000) {
            buf.extend_from_slice(chunk);
            while let Some(f) = decode_server_frame(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(&got[0].payload[..], b"hello");
        assert_eq!(got[1].payload.len(), 70_000);
        assert!(buf.is_empty());
    }

    #[test]
    fn masked_client_frames_decode_on_the_server_side() {
        let mut out = BytesMut::new();
        let mut m = Masker::new(42);
        m.encode(&mut out, OpCode::Text, b"abc");
        let mut d = tether::ws::decoder::Decoder::new(1024);
        match d.decode(&mut out).unwrap() {
            Some(tether::ws::decoder::Event::Text(payload)) => assert_eq!(&payload[..], b"abc"),
            other => panic!("{other:?}"),
        }
    }
}
