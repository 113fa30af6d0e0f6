//! Full handshakes against rustls's own client, data both ways, closing.

use rustls::{ProtocolVersion, SupportedProtocolVersion};

use super::pair::{Failure, Pair};
use super::pki::{Pki, TLS12, TLS13};
use crate::tls::load_server_config;

fn pair(versions: &[&'static SupportedProtocolVersion]) -> (Pki, Pair) {
    let pki = Pki::new();
    let leaf = pki.leaf("site", &["site.test"]);
    let server = load_server_config(&[leaf.spec]).unwrap();
    let pair = Pair::new(server, pki.client(versions), "site.test");
    (pki, pair)
}

fn exchange(pair: &mut Pair) {
    pair.client_send(b"hello from the client");
    pair.pump().unwrap();
    assert_eq!(&pair.plaintext[..], b"hello from the client");
    pair.server_send(b"hello from the server");
    pair.pump().unwrap();
    assert_eq!(pair.client_received(), b"hello from the server");
}

#[test]
fn tls13_handshake_alpn_and_data_both_ways() {
    let (_pki, mut pair) = pair(TLS13);
    pair.handshake();
    assert_eq!(
        pair.server.protocol_version(),
        Some(ProtocolVersion::TLSv1_3)
    );
    assert_eq!(pair.server.alpn(), Some(&b"http/1.1"[..]));
    assert_eq!(pair.client.alpn_protocol(), Some(&b"http/1.1"[..]));
    exchange(&mut pair);
    assert!(pair.incoming.is_empty());
}

#[test]
fn tls12_handshake_alpn_and_data_both_ways() {
    let (_pki, mut pair) = pair(TLS12);
    pair.handshake();
    assert_eq!(
        pair.server.protocol_version(),
        Some(ProtocolVersion::TLSv1_2)
    );
    assert_eq!(pair.server.alpn(), Some(&b"http/1.1"[..]));
    exchange(&mut pair);
}

#[test]
fn data_in_the_same_read_as_the_client_finished() {
    let (_pki, mut pair) = pair(TLS13);
    pair.flush_client(); // ClientHello
    pair.deliver(usize::MAX).unwrap();
    pair.flush_server().unwrap(); // ServerHello .. Finished
    assert!(!pair.client.is_handshaking());
    pair.client_send(b"early");
    pair.flush_client(); // Finished, then the data
    pair.deliver(usize::MAX).unwrap();
    assert_eq!(pair.plaintext_with_finished, Some(5));
    assert_eq!(&pair.plaintext[..], b"early");
}

#[test]
fn client_close_notify_is_reported_once() {
    let (_pki, mut pair) = pair(TLS13);
    pair.handshake();
    pair.client.send_close_notify();
    pair.pump().unwrap();
    assert!(pair.peer_closed);
    // The server may still answer, then close.
    pair.server_send(b"bye");
    pair.server.close_notify(&mut pair.outgoing);
    pair.pump().unwrap();
    assert_eq!(pair.client_received(), b"bye");
}

#[test]
fn server_close_notify_reaches_the_client_and_ends_writes() {
    let (_pki, mut pair) = pair(TLS12);
    pair.handshake();
    pair.server.close_notify(&mut pair.outgoing);
    assert!(!pair.outgoing.is_empty());
    pair.pump().unwrap();
    assert!(pair.client_closed);
    let error = pair
        .server
        .write_plain(b"late", &mut pair.outgoing)
        .unwrap_err();
    assert_eq!(error.reason(), "session closed");
}

#[test]
fn large_writes_become_records_of_at_most_16_kib() {
    let (_pki, mut pair) = pair(TLS13);
    pair.handshake();
    let message: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
    pair.server_send(&message);
    let mut records = &pair.outgoing[..];
    let mut count = 0;
    while !records.is_empty() {
        let len = usize::from(u16::from_be_bytes([records[3], records[4]]));
        assert!(len <= 16_384 + 256, "record of {len} bytes");
        records = &records[5 + len..];
        count += 1;
    }
    assert_eq!(count, 3);
    pair.pump().unwrap();
    assert_eq!(pair.client_received(), message);
}

#[test]
fn writing_before_the_handshake_is_refused() {
    let (_pki, mut pair) = pair(TLS13);
    let error = pair
        .server
        .write_plain(b"x", &mut pair.outgoing)
        .unwrap_err();
    assert_eq!(error.reason(), "handshake not complete");
    pair.server.close_notify(&mut pair.outgoing);
    assert!(pair.outgoing.is_empty());
}

#[test]
fn client_key_update_is_answered() {
    let (_pki, mut pair) = pair(TLS13);
    pair.handshake();
    pair.client.refresh_traffic_keys().unwrap();
    exchange(&mut pair);
    pair.plaintext.clear();
    exchange(&mut pair);
}

#[test]
fn client_without_alpn_still_connects() {
    let pki = Pki::new();
    let leaf = pki.leaf("site", &["site.test"]);
    let server = load_server_config(&[leaf.spec]).unwrap();
    let mut client = (*pki.client(TLS13)).clone();
    client.alpn_protocols.clear();
    let mut pair = Pair::new(server, client.into(), "site.test");
    pair.handshake();
    assert_eq!(pair.server.alpn(), None);
}

#[test]
fn client_offering_only_h2_is_refused_with_an_alert() {
    let pki = Pki::new();
    let leaf = pki.leaf("site", &["site.test"]);
    let server = load_server_config(&[leaf.spec]).unwrap();
    let mut client = (*pki.client(TLS13)).clone();
    client.alpn_protocols = vec![b"h2".to_vec()];
    let mut pair = Pair::new(server, client.into(), "site.test");
    let Err(Failure::Server(error)) = pair.pump() else {
        panic!("the server must refuse");
    };
    assert_eq!(error.reason(), "no common ALPN protocol");
    let alert = pair.outgoing.split();
    match pair.client_read(&alert) {
        Err(Failure::Client(rustls::Error::AlertReceived(alert))) => {
            assert_eq!(alert, rustls::AlertDescription::NoApplicationProtocol);
        }
        other => panic!("expected the server's alert, got {other:?}"),
    }
}
