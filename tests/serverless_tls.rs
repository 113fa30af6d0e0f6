//! The gateway's function client over TLS (`https://` pools): a function
//! host behind rustls with a test CA (`TETHER_FUNCTION_CA`), reached by
//! host name (resolved off the worker), and refused when its certificate
//! does not name the host. Its own test binary: the CA is read from the
//! environment once per process.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

use common::functions::pool;
use common::pki::Pki;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS host answering every request with `meta` as the function's
/// metadata, written at once (so large answers arrive in full records).
fn tls_host(pki: &Pki, meta: String) -> u16 {
    let leaf = pki.leaf("function", &["localhost"]);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&leaf.chain)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&leaf.key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match tls.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{meta}\r\n0\r\n\r\n",
                meta.len()
            );
            let _ = tls.write_all(answer.as_bytes());
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    port
}

#[test]
fn an_https_function_is_asked_over_tls_and_its_certificate_must_name_it() {
    let pki = Pki::new();
    // SAFETY (of the process): this binary's only test sets it before
    // any thread reads the environment.
    std::env::set_var("TETHER_FUNCTION_CA", pki.ca_path());
    let meta = r#"{"protocol":"tether-serverless","version":1,"actor_names":["chat"]}"#;
    let port = tls_host(&pki, meta.to_owned());
    let by_name = pool(&format!("https://localhost:{port}/api"));
    let meta = tether::server::fetch_metadata_blocking(&by_name).expect("over TLS");
    assert_eq!(meta.actor_names, ["chat"]);
    let by_address = pool(&format!("https://127.0.0.1:{port}"));
    let err = tether::server::fetch_metadata_blocking(&by_address).unwrap_err();
    assert!(
        err.contains("bad answer") && err.contains("certificate"),
        "{err}"
    );
    // An answer of several full TLS records: one socket read brings more
    // than rustls takes in one call, and none of it may be lost.
    let names: Vec<String> = (0..600)
        .map(|i| format!("actor-with-a-long-name-{i:05}"))
        .collect();
    let large = serde_json::json!({
        "protocol": "tether-serverless",
        "version": 1,
        "actor_names": names,
    });
    let port = tls_host(&pki, large.to_string());
    let pool = pool(&format!("https://localhost:{port}"));
    let meta = tether::server::fetch_metadata_blocking(&pool).expect("a large answer over TLS");
    assert_eq!(meta.actor_names.len(), 600);
}
