//! Failed sessions: an alert for the peer when rustls has one, a short
//! reason, and no further use.

use bytes::BytesMut;

use super::pair::{Failure, Pair};
use super::pki::{Pki, TLS13};
use crate::tls::{load_server_config, TlsServer};

const ALERT: u8 = 21;

#[test]
fn garbage_gets_an_alert_and_a_reason() {
    let pki = Pki::new();
    let config = load_server_config(&[pki.leaf("site", &["site.test"]).spec]).unwrap();
    let mut server = TlsServer::new(config).unwrap();
    let mut incoming = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n"[..]);
    let (mut plain, mut out) = (BytesMut::new(), BytesMut::new());
    let error = server
        .read_tls(&mut incoming, &mut plain, &mut out)
        .unwrap_err();
    assert_eq!(error.reason(), "bad record");
    assert_eq!(out.first(), Some(&ALERT));
    assert!(incoming.is_empty());
    let again = server
        .read_tls(&mut incoming, &mut plain, &mut out)
        .unwrap_err();
    assert_eq!(again.reason(), "session already failed");
}

#[test]
fn client_rejecting_the_certificate_is_a_peer_alert() {
    let pki = Pki::new();
    let config = load_server_config(&[pki.leaf("site", &["site.test"]).spec]).unwrap();
    let stranger = Pki::new();
    let mut pair = Pair::new(config, stranger.client(TLS13), "site.test");
    assert!(matches!(pair.pump(), Err(Failure::Client(_))));
    assert_eq!(pair.server_error.unwrap().reason(), "peer alert");
}

#[test]
fn bytes_taken_from_under_rustls_fail_cleanly() {
    let pki = Pki::new();
    let config = load_server_config(&[pki.leaf("site", &["site.test"]).spec]).unwrap();
    let mut client = (*pki.client(TLS13)).clone();
    client.max_fragment_size = Some(64);
    let mut pair = Pair::new(config, client.into(), "site.test");
    pair.flush_client();
    // Whole records of a ClientHello that is not complete yet.
    pair.deliver(64 + 5).unwrap();
    assert_eq!(pair.incoming.len(), 64 + 5, "rustls keeps the fragment");
    pair.incoming.clear();
    let Err(Failure::Server(error)) = pair.deliver(1) else {
        panic!("must fail, not panic");
    };
    assert_eq!(error.reason(), "incoming lost bytes rustls holds");
}
