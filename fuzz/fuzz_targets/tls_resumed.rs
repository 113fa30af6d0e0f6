//! A TLS 1.3 session resumed after an upgrade, fed arbitrary bytes as if
//! from its client, in two pieces: it never panics, keeps only an
//! incomplete record, and yields plaintext only from records that
//! authenticate (so, from random bytes, essentially none).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tether::tls::{DirectionSecrets, ResumedSession, SessionSecrets, Suite};

fn session(suite_byte: u8) -> ResumedSession {
    let suite = Suite::from_code(1 + suite_byte % 3).unwrap();
    let len = if suite == Suite::Aes128Gcm { 16 } else { 32 };
    let direction = |b| DirectionSecrets {
        key: vec![b; len],
        iv: [b; 12],
        seq: u64::from(b),
    };
    let secrets = SessionSecrets {
        suite,
        tx: direction(1),
        rx: direction(2),
    };
    ResumedSession::new(&secrets).unwrap()
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, bytes)) = data.split_first() else {
        return;
    };
    let mut moved = session(head);
    let split = usize::from(head) % (bytes.len() + 1);
    let mut incoming = BytesMut::from(&bytes[..split]);
    let mut plain = BytesMut::new();
    if moved.read_tls(&mut incoming, &mut plain).is_err() {
        return;
    }
    incoming.extend_from_slice(&bytes[split..]);
    let _ = moved.read_tls(&mut incoming, &mut plain);
    assert!(incoming.len() <= 5 + (1 << 14) + 256);
    let mut out = BytesMut::new();
    moved.write_plain(&plain, &mut out).ok();
    moved.close_notify(&mut out);
});
