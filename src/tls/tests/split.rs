//! Client bytes reaching the server in arbitrary pieces: one byte at a
//! time, handshake messages spread over many small records, random splits.

use std::sync::Arc;

use proptest::prelude::*;
use rustls::{ClientConfig, ServerConfig, SupportedProtocolVersion};

use super::pair::Pair;
use super::pki::{Pki, TLS12, TLS13};
use crate::tls::load_server_config;

fn setup(
    versions: &[&'static SupportedProtocolVersion],
) -> (Pki, Arc<ServerConfig>, Arc<ClientConfig>) {
    let pki = Pki::new();
    let server = load_server_config(&[pki.leaf("site", &["site.test"]).spec]).unwrap();
    let client = pki.client(versions);
    (pki, server, client)
}

/// Handshake and one message each way with deliveries cut by `chunk`.
fn converse(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    chunk: &mut dyn FnMut(usize) -> usize,
    message: &[u8],
) {
    let mut pair = Pair::new(server, client, "site.test");
    pair.pump_with(chunk).unwrap();
    assert!(!pair.server.is_handshaking());
    pair.client_send(message);
    pair.pump_with(chunk).unwrap();
    assert_eq!(&pair.plaintext[..], message);
    pair.server_send(message);
    pair.pump_with(chunk).unwrap();
    assert_eq!(pair.client_received(), message);
    pair.client.send_close_notify();
    pair.pump_with(chunk).unwrap();
    assert!(pair.peer_closed);
    assert!(pair.incoming.is_empty());
}

#[test]
fn one_byte_at_a_time() {
    for versions in [TLS13, TLS12] {
        let (_pki, server, client) = setup(versions);
        converse(server, client, &mut |_| 1, b"a message in many pieces");
    }
}

/// 64-byte records split the ClientHello and later messages over several
/// records, which rustls joins in place inside the caller's buffer.
#[test]
fn handshake_messages_over_many_records() {
    for versions in [TLS13, TLS12] {
        let (_pki, server, client) = setup(versions);
        let mut client = (*client).clone();
        client.max_fragment_size = Some(64);
        let client = Arc::new(client);
        converse(server.clone(), client.clone(), &mut |n| n, &[7; 300]);
        converse(server, client, &mut |_| 1, &[7; 300]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn random_splits(
        cuts in proptest::collection::vec(1usize..400, 1..20),
        len in 1usize..40_000,
        tls12 in any::<bool>(),
    ) {
        let (_pki, server, client) = setup(if tls12 { TLS12 } else { TLS13 });
        let message: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        let mut next = cuts.iter().cycle();
        converse(server, client, &mut |_| *next.next().unwrap(), &message);
    }
}
