//! Loading certificates: clear errors, reloads that keep what works, no
//! key material in `Debug`.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;

use super::pair::Pair;
use super::pki::{Pki, TLS13};
use crate::tls::{load_client_config, load_server_config, CertSpec};

fn load_error(spec: CertSpec) -> String {
    load_server_config(&[spec]).unwrap_err()
}

fn assert_mentions(error: &str, path: &Path, what: &str) {
    let path = path.display().to_string();
    assert!(error.contains(&path), "{error:?} should name {path}");
    assert!(error.contains(what), "{error:?} should say {what:?}");
}

#[test]
fn missing_file_is_named() {
    let pki = Pki::new();
    let mut spec = pki.leaf("site", &["site.test"]).spec;
    spec.chain = pki.dir().join("absent.crt");
    assert_mentions(&load_error(spec.clone()), &spec.chain, "cannot read");
}

#[test]
fn file_without_pem_is_named() {
    let pki = Pki::new();
    let mut spec = pki.leaf("site", &["site.test"]).spec;
    spec.chain = pki.write("junk.crt", "not a certificate\n");
    assert_mentions(&load_error(spec.clone()), &spec.chain, "no PEM section");
}

#[test]
fn key_file_holding_a_certificate_is_named() {
    let pki = Pki::new();
    let mut spec = pki.leaf("site", &["site.test"]).spec;
    spec.key = spec.chain.clone();
    assert_mentions(&load_error(spec.clone()), &spec.key, "private key");
}

#[test]
fn key_of_another_certificate_is_refused() {
    let pki = Pki::new();
    let mut spec = pki.leaf("site", &["site.test"]).spec;
    spec.key = pki.leaf("other", &["other.test"]).spec.key;
    let error = load_error(spec.clone());
    assert_mentions(&error, &spec.key, "does not match");
    assert_mentions(&error, &spec.chain, "does not match");
}

#[test]
fn names_must_be_covered_by_the_certificate() {
    let pki = Pki::new();
    let mut spec = pki.leaf("site", &["a.example.com", "*.w.example.com"]).spec;
    spec.names = vec!["a.example.com".into(), "*.w.example.com".into()];
    load_server_config(std::slice::from_ref(&spec)).unwrap();
    spec.names = vec!["*.example.com".into()];
    assert_mentions(
        &load_error(spec.clone()),
        &spec.chain,
        "not valid for *.example.com",
    );
    spec.names = vec!["b.example.com".into()];
    assert_mentions(
        &load_error(spec.clone()),
        &spec.chain,
        "not valid for b.example.com",
    );
}

#[test]
fn certificate_without_dns_names_needs_names() {
    let pki = Pki::new();
    let spec = pki.leaf("ip", &["127.0.0.1"]).spec;
    assert_mentions(&load_error(spec.clone()), &spec.chain, "no DNS names");
}

#[test]
fn no_certificate_at_all_is_an_error() {
    assert!(load_server_config(&[]).is_err());
}

#[test]
fn failed_reload_leaves_the_old_config_serving() {
    let pki = Pki::new();
    let first = pki.leaf("first", &["site.test"]);
    let config = load_server_config(std::slice::from_ref(&first.spec)).unwrap();
    let mut running = Pair::new(config.clone(), pki.client(TLS13), "site.test");
    running.handshake();

    let mut broken = pki.leaf("second", &["site.test"]).spec;
    broken.key = first.spec.key.clone();
    assert!(load_server_config(&[broken]).is_err());
    let mut new = Pair::new(config.clone(), pki.client(TLS13), "site.test");
    new.handshake();
    assert_eq!(new.client.peer_certificates().unwrap()[0], first.der);

    let second = pki.leaf("third", &["site.test"]);
    let reloaded = load_server_config(&[second.spec]).unwrap();
    let mut after = Pair::new(reloaded, pki.client(TLS13), "site.test");
    after.handshake();
    assert_eq!(after.client.peer_certificates().unwrap()[0], second.der);
    // The session from before both reloads is untouched.
    running.client_send(b"still here");
    running.pump().unwrap();
    assert_eq!(&running.plaintext[..], b"still here");
}

#[test]
fn debug_never_shows_the_key() {
    let pki = Pki::new();
    let spec = pki.leaf("site", &["site.test"]).spec;
    let config = load_server_config(std::slice::from_ref(&spec)).unwrap();
    let shown = format!("{config:?}");
    assert!(shown.contains("site.test"), "{shown}");
    let key = PrivateKeyDer::from_pem_file(&spec.key).unwrap();
    let der = key.secret_der();
    // The private scalar sits at the end of the PKCS#8 DER.
    let tail = &der[der.len() - 16..];
    for rendering in [format!("{tail:?}"), hex(tail), format!("{:?}", &tail[..8])] {
        let inner = rendering.trim_matches(|c| c == '[' || c == ']');
        assert!(!shown.contains(inner), "Debug shows key bytes");
    }
    let pem = std::fs::read_to_string(&spec.key).unwrap();
    let body = pem.lines().nth(1).unwrap();
    assert!(!shown.contains(body));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn runner_config_trusts_the_given_ca_only() {
    let pki = Pki::new();
    let leaf = pki.leaf("site", &["site.test"]);
    let server = load_server_config(&[leaf.spec]).unwrap();
    let client = load_client_config(Some(&pki.ca_path())).unwrap();
    let mut pair = Pair::new(server, client, "site.test");
    pair.handshake();
    assert_eq!(pair.client.alpn_protocol(), Some(&b"http/1.1"[..]));

    let absent = pki.dir().join("absent-ca.crt");
    assert_mentions(
        &load_client_config(Some(&absent)).unwrap_err(),
        &absent,
        "cannot read",
    );
}

#[test]
fn runner_config_from_system_roots_loads_or_says_why() {
    if let Err(error) = load_client_config(None) {
        assert!(error.contains("system root certificates"), "{error}");
    }
}
