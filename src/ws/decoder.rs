//! Server-side WebSocket decoder: bytes from a client in, events out.
//!
//! Pure state over a caller-owned `BytesMut`. Whole small frames are taken out
//! of the read buffer without copying; frames that arrive in pieces are
//! unmasked and validated as they stream in, so an oversized or invalid
//! message is refused before the rest of it arrives.

use bytes::{Buf, Bytes, BytesMut};

use super::close::{parse_close_payload, CloseCode, CloseFrame, ProtocolError};
use super::frame::{apply_mask, parse_header, FrameHeader, OpCode};
use super::utf8::Utf8Validator;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete text message; the payload is valid UTF-8.
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    /// The peer started the closing handshake (`None`: no status code).
    Close(Option<CloseFrame>),
}

#[derive(Debug)]
struct Assembly {
    text: bool,
    data: BytesMut,
    utf8: Utf8Validator,
}

#[derive(Debug, Clone, Copy)]
struct StreamingFrame {
    fin: bool,
    mask: [u8; 4],
    offset: usize,
    remaining: u64,
}

#[derive(Debug)]
pub struct Decoder {
    /// At most 4 GiB (a larger setting is cut to it): 4 bytes, so the
    /// flag below keeps the decoder, inline in every session, at 24 bytes.
    max_message_bytes: u32,
    /// Boxed: absent on idle connections, which should stay small.
    message: Option<Box<Assembly>>,
    /// Boxed like `message`: only present while a frame arrives in pieces.
    frame: Option<Box<StreamingFrame>>,
    /// Frames need no mask: the other end is a Tether node (see `for_peer`).
    unmasked_ok: bool,
}

const UNMASKED: ProtocolError = ProtocolError::new(CloseCode::PROTOCOL, "client frame not masked");
const BROKEN: ProtocolError = ProtocolError::new(CloseCode::INTERNAL, "decoder state lost");
const TOO_BIG: ProtocolError = ProtocolError::new(CloseCode::TOO_BIG, "message too big");
const BAD_UTF8: ProtocolError = ProtocolError::new(
    CloseCode::INVALID_PAYLOAD,
    "text message is not valid UTF-8",
);

impl Decoder {
    pub fn new(max_message_bytes: usize) -> Self {
        Self {
            max_message_bytes: max_message_bytes.min(u32::MAX as usize) as u32,
            message: None,
            frame: None,
            unmasked_ok: false,
        }
    }

    /// For a node-to-node link (docs/ARCHITECTURE.md, "Cluster"): both
    /// ends are Tether nodes, so frames may come without a mask either way.
    /// Masking protects proxies from bytes a browser script chose; nothing
    /// of the kind sits between two nodes, and masking would copy every
    /// payload. Masked frames are still unmasked.
    pub fn for_peer(max_message_bytes: usize) -> Self {
        Self {
            unmasked_ok: true,
            ..Self::new(max_message_bytes)
        }
    }

    /// True while a message is partly received (its bytes are held here).
    pub fn is_mid_message(&self) -> bool {
        self.message.is_some()
    }

    /// Takes the next event out of `buf`. `Ok(None)`: all of `buf` that could
    /// be used has been; read more. After an error the decoder must not be fed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, ProtocolError> {
        loop {
            if let Some(frame) = self.frame.as_deref().copied() {
                if let Some(event) = self.stream_payload(frame, buf)? {
                    return Ok(Some(event));
                }
                if self.frame.is_some() {
                    return Ok(None);
                }
                continue;
            }
            let Some(header) = parse_header(buf)? else {
                return Ok(None);
            };
            let mask = match header.mask {
                Some(mask) => mask,
                None if self.unmasked_ok => [0; 4],
                None => return Err(UNMASKED),
            };
            if header.opcode.is_control() {
                return self.control_frame(header, mask, buf);
            }
            self.start_data_frame(header)?;
            let total = header.header_len as u64 + header.payload_len;
            if self.message.is_none() && header.fin && (buf.len() as u64) >= total {
                // Fast path: a whole single-frame message is already here.
                buf.advance(header.header_len);
                let mut payload = buf.split_to(header.payload_len as usize);
                apply_mask(&mut payload, mask, 0);
                let payload = payload.freeze();
                return if header.opcode == OpCode::Text {
                    std::str::from_utf8(&payload).map_err(|_| BAD_UTF8)?;
                    Ok(Some(Event::Text(payload)))
                } else {
                    Ok(Some(Event::Binary(payload)))
                };
            }
            buf.advance(header.header_len);
            if self.message.is_none() {
                self.message = Some(Box::new(Assembly {
                    text: header.opcode == OpCode::Text,
                    data: BytesMut::new(),
                    utf8: Utf8Validator::new(),
                }));
            }
            self.frame = Some(Box::new(StreamingFrame {
                fin: header.fin,
                mask,
                offset: 0,
                remaining: header.payload_len,
            }));
        }
    }

    fn start_data_frame(&self, header: FrameHeader) -> Result<(), ProtocolError> {
        let held = match (&self.message, header.opcode) {
            (None, OpCode::Continuation) => {
                return Err(ProtocolError::new(
                    CloseCode::PROTOCOL,
                    "continuation frame without a message to continue",
                ))
            }
            (Some(_), OpCode::Text | OpCode::Binary) => {
                return Err(ProtocolError::new(
                    CloseCode::PROTOCOL,
                    "new message before the previous one finished",
                ))
            }
            (Some(m), _) => m.data.len() as u64,
            (None, _) => 0,
        };
        if held + header.payload_len > self.max_message_bytes as u64 {
            return Err(TOO_BIG);
        }
        Ok(())
    }

    fn stream_payload(
        &mut self,
        mut frame: StreamingFrame,
        buf: &mut BytesMut,
    ) -> Result<Option<Event>, ProtocolError> {
        let take = frame.remaining.min(buf.len() as u64) as usize;
        // A streaming frame always belongs to a message; should that ever not
        // hold, the connection fails instead of the gateway panicking.
        let message = self.message.as_mut().ok_or(BROKEN)?;
        if take > 0 {
            let start = message.data.len();
            message.data.extend_from_slice(&buf[..take]);
            buf.advance(take);
            let chunk = &mut message.data[start..];
            apply_mask(chunk, frame.mask, frame.offset);
            if message.text {
                message.utf8.feed(chunk).map_err(|_| BAD_UTF8)?;
            }
            frame.offset += take;
            frame.remaining -= take as u64;
        }
        if frame.remaining > 0 {
            self.frame = Some(Box::new(frame));
            return Ok(None);
        }
        self.frame = None;
        if !frame.fin {
            return Ok(None);
        }
        let message = *self.message.take().ok_or(BROKEN)?;
        let payload = message.data.freeze();
        if message.text {
            message.utf8.finish().map_err(|_| BAD_UTF8)?;
            Ok(Some(Event::Text(payload)))
        } else {
            Ok(Some(Event::Binary(payload)))
        }
    }

    fn control_frame(
        &mut self,
        header: FrameHeader,
        mask: [u8; 4],
        buf: &mut BytesMut,
    ) -> Result<Option<Event>, ProtocolError> {
        if !header.fin {
            return Err(ProtocolError::new(
                CloseCode::PROTOCOL,
                "fragmented control frame",
            ));
        }
        if header.payload_len > 125 {
            return Err(ProtocolError::new(
                CloseCode::PROTOCOL,
                "control frame payload over 125 bytes",
            ));
        }
        let total = header.header_len + header.payload_len as usize;
        if buf.len() < total {
            return Ok(None);
        }
        buf.advance(header.header_len);
        let mut payload = buf.split_to(header.payload_len as usize);
        apply_mask(&mut payload, mask, 0);
        let payload = payload.freeze();
        Ok(Some(match header.opcode {
            OpCode::Ping => Event::Ping(payload),
            OpCode::Pong => Event::Pong(payload),
            _ => Event::Close(parse_close_payload(payload)?),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame::encode_masked_frame;
    use super::*;
    use proptest::prelude::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn frame(fin: bool, op: OpCode, payload: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        encode_masked_frame(&mut out, fin, op, MASK, payload);
        out
    }

    fn decode_all(
        dec: &mut Decoder,
        bytes: &[u8],
        cuts: &[usize],
    ) -> Result<Vec<Event>, ProtocolError> {
        let mut buf = BytesMut::new();
        let mut events = Vec::new();
        let mut last = 0;
        let mut points: Vec<usize> = cuts.iter().map(|&c| c.min(bytes.len())).collect();
        points.sort_unstable();
        points.push(bytes.len());
        for p in points {
            buf.extend_from_slice(&bytes[last..p.max(last)]);
            last = p.max(last);
            while let Some(e) = dec.decode(&mut buf)? {
                events.push(e);
            }
        }
        Ok(events)
    }

    #[test]
    fn a_peer_link_takes_unmasked_frames_and_a_client_link_refuses_them() {
        let mut frame = BytesMut::new();
        super::super::frame::encode_frame(&mut frame, OpCode::Binary, b"node");
        let mut client = Decoder::new(1024);
        assert_eq!(client.decode(&mut frame.clone()), Err(UNMASKED));
        let mut peer = Decoder::for_peer(1024);
        let event = peer.decode(&mut frame).unwrap();
        assert_eq!(event, Some(Event::Binary(Bytes::from_static(b"node"))));
        let mut masked = BytesMut::new();
        super::super::frame::encode_masked_frame(
            &mut masked,
            true,
            OpCode::Text,
            [1, 2, 3, 4],
            b"hi",
        );
        let event = peer.decode(&mut masked).unwrap();
        assert_eq!(event, Some(Event::Text(Bytes::from_static(b"hi"))));
    }

    #[test]
    fn single_frame_messages() {
        let mut dec = Decoder::new(1024);
        let mut bytes = frame(true, OpCode::Text, b"hello");
        bytes.extend_from_slice(&frame(true, OpCode::Binary, &[0, 1, 2]));
        let events = decode_all(&mut dec, &bytes, &[]).unwrap();
        assert_eq!(
            events,
            vec![
                Event::Text(Bytes::from_static(b"hello")),
                Event::Binary(Bytes::from_static(&[0, 1, 2]))
            ]
        );
    }

    #[test]
    fn fragments_with_interleaved_ping() {
        let mut dec = Decoder::new(1024);
        let mut bytes = frame(false, OpCode::Text, "héllo ".as_bytes());
        bytes.extend_from_slice(&frame(true, OpCode::Ping, b"p"));
        bytes.extend_from_slice(&frame(false, OpCode::Continuation, b""));
        bytes.extend_from_slice(&frame(true, OpCode::Continuation, "wörld".as_bytes()));
        let events = decode_all(&mut dec, &bytes, &[]).unwrap();
        assert_eq!(
            events,
            vec![
                Event::Ping(Bytes::from_static(b"p")),
                Event::Text(Bytes::from("héllo wörld".as_bytes()))
            ]
        );
    }

    #[test]
    fn protocol_violations_get_their_close_codes() {
        let cases: Vec<(BytesMut, u16)> = vec![
            (
                {
                    let mut b = BytesMut::new();
                    crate::ws::frame::encode_frame(&mut b, OpCode::Text, b"x");
                    b
                },
                1002,
            ),
            (frame(true, OpCode::Continuation, b"x"), 1002),
            (
                {
                    let mut b = frame(false, OpCode::Text, b"x");
                    b.extend_from_slice(&frame(true, OpCode::Text, b"y"));
                    b
                },
                1002,
            ),
            (frame(false, OpCode::Ping, b""), 1002),
            (frame(true, OpCode::Ping, &[0u8; 126]), 1002),
            (frame(true, OpCode::Text, &[0xff]), 1007),
            (frame(true, OpCode::Binary, &[0u8; 2000]), 1009),
            (frame(true, OpCode::Close, &[0x03, 0xed]), 1002),
            (frame(true, OpCode::Close, &[0x03, 0xe8, 0xff]), 1007),
        ];
        for (i, (bytes, code)) in cases.into_iter().enumerate() {
            let mut dec = Decoder::new(1024);
            let err = decode_all(&mut dec, &bytes, &[]).unwrap_err();
            assert_eq!(err.code.0, code, "case {i}: {}", err.reason);
        }
    }

    #[test]
    fn invalid_utf8_fails_before_the_frame_ends() {
        let mut dec = Decoder::new(1 << 20);
        let payload: Vec<u8> = [b"ok".as_slice(), &[0xff], &vec![b'a'; 10_000]].concat();
        let bytes = frame(true, OpCode::Text, &payload);
        // Only the header and the first few payload bytes have arrived.
        let mut buf = BytesMut::from(&bytes[..20]);
        assert_eq!(dec.decode(&mut buf).unwrap_err().code.0, 1007);
    }

    #[test]
    fn oversized_message_fails_at_its_header() {
        let mut dec = Decoder::new(100);
        let mut buf = frame(false, OpCode::Binary, &[0u8; 60]);
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        // Only the second frame's header has arrived: refused before its payload.
        buf.extend_from_slice(&frame(true, OpCode::Continuation, &[0u8; 60])[..8]);
        assert_eq!(dec.decode(&mut buf).unwrap_err().code.0, 1009);
    }

    fn arb_frames() -> impl Strategy<Value = Vec<u8>> {
        let msg = (
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..300),
            1usize..4,
        );
        proptest::collection::vec(msg, 1..6).prop_map(|msgs| {
            let mut out = BytesMut::new();
            for (text, data, parts) in msgs {
                let data = if text {
                    String::from_utf8_lossy(&data).into_owned().into_bytes()
                } else {
                    data
                };
                let step = data.len().div_ceil(parts).max(1);
                let chunks: Vec<&[u8]> = if data.is_empty() {
                    vec![&[][..]]
                } else {
                    data.chunks(step).collect()
                };
                for (i, c) in chunks.iter().enumerate() {
                    let op = if i > 0 {
                        OpCode::Continuation
                    } else if text {
                        OpCode::Text
                    } else {
                        OpCode::Binary
                    };
                    encode_masked_frame(&mut out, i + 1 == chunks.len(), op, MASK, c);
                    if i == 0 {
                        encode_masked_frame(&mut out, true, OpCode::Ping, MASK, b"hi");
                    }
                }
            }
            out.to_vec()
        })
    }

    proptest! {
        #[test]
        fn any_split_decodes_the_same(bytes in arb_frames(), cuts in proptest::collection::vec(0usize..4000, 0..12)) {
            let whole = decode_all(&mut Decoder::new(1 << 20), &bytes, &[]).unwrap();
            let split = decode_all(&mut Decoder::new(1 << 20), &bytes, &cuts).unwrap();
            prop_assert_eq!(whole, split);
        }

        #[test]
        fn never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..512), cuts in proptest::collection::vec(0usize..512, 0..6)) {
            let _ = decode_all(&mut Decoder::new(4096), &bytes, &cuts);
        }
    }
}
