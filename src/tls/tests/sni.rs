//! The certificate the client sees follows its SNI.

use std::sync::Arc;

use rustls::ServerConfig;

use super::pair::Pair;
use super::pki::{Leaf, Pki, TLS13};
use crate::tls::load_server_config;

struct Sites {
    pki: Pki,
    default: Leaf,
    exact: Leaf,
    wildcard: Leaf,
    config: Arc<ServerConfig>,
}

/// The default lists only `default.test` although its certificate also
/// covers names nobody configured, so that a client sent to the default
/// for those names still accepts it.
fn sites() -> Sites {
    let pki = Pki::new();
    let mut default = pki.leaf(
        "default",
        &["default.test", "unlisted.test", "deep.x.w.example.com"],
    );
    default.spec.names = vec!["default.test".to_owned()];
    let exact = pki.leaf("exact", &["a.example.com"]);
    let wildcard = pki.leaf("wildcard", &["*.w.example.com"]);
    let specs = [
        default.spec.clone(),
        exact.spec.clone(),
        wildcard.spec.clone(),
    ];
    let config = load_server_config(&specs).unwrap();
    Sites {
        pki,
        default,
        exact,
        wildcard,
        config,
    }
}

/// Connects with `sni` and returns the pair after the handshake.
fn connect(sites: &Sites, sni: &str) -> Pair {
    let mut pair = Pair::new(sites.config.clone(), sites.pki.client(TLS13), sni);
    pair.handshake();
    pair
}

fn seen(pair: &Pair) -> &[u8] {
    pair.client.peer_certificates().unwrap()[0].as_ref()
}

#[test]
fn exact_name_gets_its_certificate() {
    let sites = sites();
    let pair = connect(&sites, "a.example.com");
    assert_eq!(seen(&pair), sites.exact.der.as_ref());
    assert_eq!(pair.server.server_name(), Some("a.example.com"));
}

#[test]
fn names_match_whatever_their_case() {
    let sites = sites();
    let pair = connect(&sites, "A.Example.COM");
    assert_eq!(seen(&pair), sites.exact.der.as_ref());
}

#[test]
fn wildcard_covers_one_label() {
    let sites = sites();
    let pair = connect(&sites, "x.w.example.com");
    assert_eq!(seen(&pair), sites.wildcard.der.as_ref());
    let pair = connect(&sites, "deep.x.w.example.com");
    assert_eq!(seen(&pair), sites.default.der.as_ref());
}

#[test]
fn unknown_name_gets_the_default() {
    let sites = sites();
    let pair = connect(&sites, "unlisted.test");
    assert_eq!(seen(&pair), sites.default.der.as_ref());
    assert_eq!(pair.server.server_name(), Some("unlisted.test"));
}

#[test]
fn no_sni_gets_the_default() {
    let sites = sites();
    let mut client = (*sites.pki.client(TLS13)).clone();
    client.enable_sni = false;
    let mut pair = Pair::new(sites.config.clone(), Arc::new(client), "default.test");
    pair.handshake();
    assert_eq!(seen(&pair), sites.default.der.as_ref());
    assert_eq!(pair.server.server_name(), None);
}
