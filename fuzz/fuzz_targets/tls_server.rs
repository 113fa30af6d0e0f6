//! The sans-IO TLS server fed arbitrary bytes as if from a client, in two
//! pieces: it never panics, never grows its output without bound, and
//! never yields plaintext before a handshake it could not have finished.
#![no_main]

use std::sync::{Arc, OnceLock};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tether::tls::TlsServer;

/// A self-signed certificate made once per process (rcgen), in a temp dir.
fn config() -> Arc<rustls::ServerConfig> {
    static CONFIG: OnceLock<Arc<rustls::ServerConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let cert = rcgen::generate_simple_self_signed(vec!["fuzz.test".into()]).unwrap();
            let dir = std::env::temp_dir().join(format!("tether-fuzz-tls-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let (chain, key) = (dir.join("c.pem"), dir.join("k.pem"));
            std::fs::write(&chain, cert.cert.pem()).unwrap();
            std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
            let spec = tether::tls::CertSpec { chain, key, names: vec![] };
            tether::tls::load_server_config(&[spec]).unwrap()
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let mut server = TlsServer::new(config()).unwrap();
    let cut = (split as usize).min(bytes.len());
    let (mut plain, mut out) = (BytesMut::new(), BytesMut::new());
    let mut incoming = BytesMut::from(&bytes[..cut]);
    if server.read_tls(&mut incoming, &mut plain, &mut out).is_ok() {
        incoming.extend_from_slice(&bytes[cut..]);
        let _ = server.read_tls(&mut incoming, &mut plain, &mut out);
    }
    assert!(plain.is_empty(), "plaintext from an unauthenticated peer");
    assert!(out.len() < 64 * 1024, "{} bytes of reply", out.len());
});
