//! Tunnel frames from a hostile peer: decoding never panics, and every
//! frame that decodes encodes back to bytes that decode to the same frame.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tether::tunnel::{decode_frames, encode_frame};

fuzz_target!(|data: &[u8]| {
    for frame in decode_frames(Bytes::copy_from_slice(data)) {
        let Ok(frame) = frame else {
            return;
        };
        let mut out = BytesMut::new();
        encode_frame(&mut out, &frame);
        let again: Vec<_> = decode_frames(out.freeze()).collect();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].as_ref().ok(), Some(&frame));
    }
});
