//! A TLS 1.3 session moved to another process (an upgrade): its keys are
//! taken from rustls and the record layer goes on in `ResumedSession`;
//! rustls's own client notices nothing.

use std::io::Write;
use std::sync::Arc;

use bytes::BytesMut;
use rustls::crypto::ring::cipher_suite;
use rustls::{ClientConfig, SupportedCipherSuite};

use super::pair::Pair;
use super::pki::{Pki, TLS12, TLS13};
use crate::tls::{load_server_config, ResumedSession, Suite, TlsServer};

/// A client offering only `suite` (TLS 1.3).
fn client_with(pki: &Pki, suite: SupportedCipherSuite) -> Arc<ClientConfig> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![suite];
    pki.client_with(TLS13, provider)
}

/// A pair past its handshake and one message each way.
fn established(pki: &Pki, client: Arc<ClientConfig>) -> Pair {
    let leaf = pki.leaf("site", &["site.test"]);
    let server = load_server_config(&[leaf.spec]).unwrap();
    let mut pair = Pair::new(server, client, "site.test");
    pair.handshake();
    pair.client_send(b"before");
    pair.pump().unwrap();
    pair.server_send(b"before, back");
    pair.pump().unwrap();
    assert_eq!(pair.client_received(), b"before, back");
    pair
}

/// Takes the server's session out of the pair, as an upgrade does.
fn move_server(pair: &mut Pair, pki: &Pki) -> (Suite, ResumedSession) {
    let leaf = pki.leaf("site", &["site.test"]);
    let fresh = TlsServer::new(load_server_config(&[leaf.spec]).unwrap()).unwrap();
    let old = std::mem::replace(&mut pair.server, fresh);
    assert!(old.can_move());
    let secrets = old.into_secrets().unwrap();
    (secrets.suite, ResumedSession::new(&secrets).unwrap())
}

fn client_bytes(pair: &mut Pair) -> BytesMut {
    let mut wire = Vec::new();
    while pair.client.wants_write() {
        pair.client.write_tls(&mut wire).unwrap();
    }
    BytesMut::from(&wire[..])
}

#[test]
fn every_tls13_suite_carries_on_both_ways_and_closes() {
    let suites = [
        (cipher_suite::TLS13_AES_128_GCM_SHA256, Suite::Aes128Gcm),
        (cipher_suite::TLS13_AES_256_GCM_SHA384, Suite::Aes256Gcm),
        (
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            Suite::Chacha20Poly1305,
        ),
    ];
    for (offered, expected) in suites {
        let pki = Pki::new();
        let mut pair = established(&pki, client_with(&pki, offered));
        let (suite, mut moved) = move_server(&mut pair, &pki);
        assert_eq!(suite, expected);
        // Client to server, in two records, one split across reads.
        pair.client.writer().write_all(b"after one").unwrap();
        pair.client.writer().write_all(&[7u8; 20_000]).unwrap();
        let mut wire = client_bytes(&mut pair);
        let (mut incoming, mut plain) = (wire.split_to(10), BytesMut::new());
        assert_eq!(
            moved.read_tls(&mut incoming, &mut plain).unwrap().plaintext,
            0
        );
        incoming.extend_from_slice(&wire);
        moved.read_tls(&mut incoming, &mut plain).unwrap();
        assert!(incoming.is_empty());
        assert_eq!(&plain[..9], b"after one");
        assert_eq!(plain.len(), 9 + 20_000);
        // Server to client, larger than one record.
        let mut out = BytesMut::new();
        moved.write_plain(&[9u8; 40_000], &mut out).unwrap();
        moved.write_plain(b"end", &mut out).unwrap();
        pair.client_read(&out).unwrap();
        let got = pair.client_received();
        assert_eq!(got.len(), 40_003);
        assert!(got.ends_with(b"end"));
        // Closing, both ways.
        pair.client.send_close_notify();
        let mut wire = client_bytes(&mut pair);
        assert!(moved.read_tls(&mut wire, &mut plain).unwrap().peer_closed);
        let mut out = BytesMut::new();
        moved.close_notify(&mut out);
        pair.client_read(&out).unwrap();
        assert!(pair.client_closed);
    }
}

#[test]
fn a_tampered_record_ends_the_moved_session() {
    let pki = Pki::new();
    let mut pair = established(&pki, pki.client(TLS13));
    let (_, mut moved) = move_server(&mut pair, &pki);
    pair.client_send(b"x");
    let mut wire = client_bytes(&mut pair);
    let last = wire.len() - 1;
    wire[last] ^= 1;
    assert!(moved.read_tls(&mut wire, &mut BytesMut::new()).is_err());
}

#[test]
fn a_key_update_ends_the_moved_session_cleanly() {
    let pki = Pki::new();
    let mut pair = established(&pki, pki.client(TLS13));
    let (_, mut moved) = move_server(&mut pair, &pki);
    pair.client.refresh_traffic_keys().unwrap();
    let mut wire = client_bytes(&mut pair);
    let err = moved
        .read_tls(&mut wire, &mut BytesMut::new())
        .err()
        .unwrap();
    assert!(err.reason().contains("key update"), "{}", err.reason());
}

#[test]
fn tls12_sessions_do_not_move() {
    let pki = Pki::new();
    let leaf = pki.leaf("site", &["site.test"]);
    let server = load_server_config(&[leaf.spec]).unwrap();
    let mut pair = Pair::new(server, pki.client(TLS12), "site.test");
    pair.handshake();
    assert!(!pair.server.can_move());
}

/// rustls answers a client's key update only in front of its next write:
/// the session writes once (a WebSocket pong, in the gateway) before it
/// moves, so the answer leaves under the old keys and the moved session
/// sends under the new ones, as the client expects.
#[test]
fn a_key_update_before_the_move_is_answered_before_it() {
    let pki = Pki::new();
    let mut pair = established(&pki, pki.client(TLS13));
    pair.client.refresh_traffic_keys().unwrap();
    pair.pump().unwrap();
    pair.server_send(&[0x8a, 0x00]);
    pair.pump().unwrap();
    assert_eq!(pair.client_received(), [0x8a, 0x00]);
    let (_, mut moved) = move_server(&mut pair, &pki);
    let mut out = BytesMut::new();
    moved.write_plain(b"after the move", &mut out).unwrap();
    pair.client_read(&out).unwrap();
    assert_eq!(pair.client_received(), b"after the move");
    pair.client_send(b"and back");
    let mut wire = client_bytes(&mut pair);
    let mut plain = BytesMut::new();
    moved.read_tls(&mut wire, &mut plain).unwrap();
    assert_eq!(&plain[..], b"and back");
}
