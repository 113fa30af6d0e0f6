//! Upgrade notes as read by the new process: decoding never panics, never
//! allocates past what the bytes hold, and every note that decodes encodes
//! back to the same note.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tether::handover::Note;

fuzz_target!(|data: &[u8]| {
    let Ok(note) = Note::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    assert_eq!(Note::decode(note.encode()).as_ref(), Ok(&note));
});
