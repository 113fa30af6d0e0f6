//! The client-frame decoder, with its fragmentation and UTF-8 state, fed
//! bytes in pieces whose sizes the input chooses: never panics, never
//! yields a message over its limit, and stops at the first protocol error.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tether::ws::{Decoder, Event};

const MAX_MESSAGE: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&piece, bytes)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece).max(1);
    let mut decoder = Decoder::new(MAX_MESSAGE);
    let mut buf = BytesMut::new();
    for chunk in bytes.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Event::Text(m))) => {
                    assert!(m.len() <= MAX_MESSAGE);
                    assert!(std::str::from_utf8(&m).is_ok());
                }
                Ok(Some(Event::Binary(m))) => assert!(m.len() <= MAX_MESSAGE),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
