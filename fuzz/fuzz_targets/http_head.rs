//! The request-head reader, fed the same bytes in arbitrary pieces, must
//! give one answer whatever the split, and never panic; whatever it accepts
//! then goes through routing and the upgrade rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::http::route::route;
use tether::http::HeadReader;
use tether::ws::handshake::validate_upgrade;

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let whole = HeadReader::new(8192, 64).poll(bytes);
    // The same bytes arriving in two pieces.
    let cut = (split as usize).min(bytes.len());
    let mut reader = HeadReader::new(8192, 64);
    let first = reader.poll(&bytes[..cut]);
    let pieces = match first {
        Ok(None) => reader.poll(bytes),
        done => done,
    };
    if let (Ok(Some((a, len_a))), Ok(Some((b, len_b)))) = (&whole, &pieces) {
        assert_eq!(len_a, len_b);
        assert_eq!(a.target, b.target);
    }
    if let Ok(Some((head, _))) = whole {
        let _ = route(&head.target);
        let _ = validate_upgrade(&head);
    }
});
