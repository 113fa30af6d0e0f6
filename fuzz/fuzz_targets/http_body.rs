//! The body decoder fed hostile bytes in pieces of a size the input chooses:
//! it never panics, gives one verdict and leaves one rest whatever the
//! pieces, never hands out more than its limit, and a chunked body it
//! accepts, framed again by the encoder, decodes to the same bytes.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tether::http::body::{
    request_framing, BodyDecoder, BodyEncoder, BodyError, BodyEvent, BodyLimits, Framing,
};
use tether::http::HeadReader;

const LIMITS: BodyLimits = BodyLimits {
    max_body_bytes: 4096,
    max_chunk_line_bytes: 64,
    max_extension_bytes: 256,
    max_trailer_bytes: 256,
};

struct Outcome {
    pieces: Vec<Bytes>,
    end: Result<bool, BodyError>,
    rest: Vec<u8>,
}

fn run(framing: Framing, input: &[u8], piece: usize) -> Outcome {
    let mut dec = match BodyDecoder::new(framing, LIMITS) {
        Ok(dec) => dec,
        Err(e) => {
            return Outcome {
                pieces: vec![],
                end: Err(e),
                rest: vec![],
            }
        }
    };
    let (mut buf, mut pieces, mut fed) = (BytesMut::new(), Vec::new(), 0);
    while fed < input.len() || fed == 0 {
        let to = (fed + piece).min(input.len());
        buf.extend_from_slice(&input[fed..to]);
        fed = to;
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(BodyEvent::Data(d))) => {
                    assert!(!d.is_empty());
                    pieces.push(d);
                }
                Ok(Some(BodyEvent::End)) => {
                    let rest = [&buf[..], &input[fed..]].concat();
                    return Outcome {
                        pieces,
                        end: Ok(true),
                        rest,
                    };
                }
                Ok(None) => break,
                Err(e) => {
                    return Outcome {
                        pieces,
                        end: Err(e),
                        rest: vec![],
                    }
                }
            }
        }
        if fed == input.len() {
            break;
        }
    }
    let end = match dec.at_eof() {
        Ok(Some(BodyEvent::End)) => Ok(true),
        Ok(_) => Ok(false),
        Err(e) => Err(e),
    };
    Outcome {
        pieces,
        end,
        rest: buf.to_vec(),
    }
}

fn body(o: &Outcome) -> Vec<u8> {
    o.pieces.concat()
}

fn check(framing: Framing, input: &[u8], piece: usize) {
    let whole = run(framing, input, input.len().max(1));
    let split = run(framing, input, piece);
    assert_eq!(whole.end, split.end);
    assert_eq!(whole.rest, split.rest);
    let (a, b) = (body(&whole), body(&split));
    assert!(a.starts_with(&b) || b.starts_with(&a));
    assert!(a.len() as u64 <= LIMITS.max_body_bytes && b.len() as u64 <= LIMITS.max_body_bytes);
    if whole.end == Ok(true) {
        assert_eq!(a, b);
        assert!(input.ends_with(&whole.rest));
        if framing == Framing::Chunked {
            reencode(&split.pieces, &a);
        }
    }
}

/// The decoded pieces framed again decode to the same body, nothing left over.
fn reencode(pieces: &[Bytes], expected: &[u8]) {
    let mut enc = BodyEncoder::new(Framing::Chunked);
    let mut wire = Vec::new();
    for p in pieces {
        let f = enc.encode(p.clone()).unwrap().unwrap();
        wire.extend_from_slice(f.head.as_bytes());
        wire.extend_from_slice(&f.payload);
        wire.extend_from_slice(f.tail);
    }
    wire.extend_from_slice(enc.finish().unwrap());
    let again = run(Framing::Chunked, &wire, wire.len().max(1));
    assert_eq!(again.end, Ok(true));
    assert_eq!(body(&again), expected);
    assert!(again.rest.is_empty());
}

fuzz_target!(|data: &[u8]| {
    let [piece, mode, input @ ..] = data else {
        return;
    };
    let piece = usize::from(*piece) + 1;
    match mode & 3 {
        0 => check(Framing::Chunked, input, piece),
        1 => check(Framing::Length(u64::from(mode >> 2) * 97), input, piece),
        2 => check(Framing::UntilClose, input, piece),
        _ => {
            // A whole request: the head decides the body's framing.
            if let Ok(Some((head, len))) = HeadReader::new(8192, 64).poll(input) {
                if let Ok(framing) = request_framing(&head) {
                    check(framing, &input[len..], piece);
                }
            }
        }
    }
});
