//! A real browser (Debian's headless Chromium) opens wss:// to the
//! gateway, trusting exactly the test certificate's key, and talks to an
//! actor: once in the open default namespace, once in a namespace that
//! wants a token, given the browser way (a `tether-token.*` subprotocol).
//!
//! Chromium comes from `scripts/install-chromium` (run here if missing,
//! `common::chromium`); where it cannot be installed the test says so and
//! passes without a browser.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};

use base64::Engine;
use common::chromium::{self, CHROMIUM};
use common::pki::Pki;
use common::*;
use tether::config::{NamespaceConfig, NamespaceRunner};

const ACME_RUNNER: &str = "runner-acme-0123456789abcdef";

/// base64(SHA-256(SubjectPublicKeyInfo)) of the certificate in `pem`:
/// what `--ignore-certificate-errors-spki-list` trusts.
fn spki_hash(pem: &Path) -> String {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_file(pem).unwrap();
    let spki = spki_of(&der);
    let digest = ring::digest::digest(&ring::digest::SHA256, spki);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// The SubjectPublicKeyInfo inside a DER certificate: the 7th element of
/// TBSCertificate (version [0], serial, signature, issuer, validity,
/// subject, spki).
fn spki_of(cert: &[u8]) -> &[u8] {
    fn element(b: &[u8]) -> (usize, usize) {
        // (header length, content length) of the DER element at b[0].
        let len = b[1] as usize;
        if len < 0x80 {
            return (2, len);
        }
        let n = len & 0x7f;
        let content = b[2..2 + n]
            .iter()
            .fold(0usize, |a, &x| (a << 8) | x as usize);
        (2 + n, content)
    }
    let (h, _) = element(cert); // Certificate SEQUENCE
    let tbs = &cert[h..];
    let (h, _) = element(tbs); // TBSCertificate SEQUENCE
    let mut rest = &tbs[h..];
    for _ in 0..6 {
        let (h, len) = element(rest);
        rest = &rest[h + len..];
    }
    let (h, len) = element(rest);
    &rest[..h + len]
}

/// A page whose script opens `url` (with `protocols`), sends a message,
/// and reports what came back (or how it failed) to `report` on loopback.
fn page(dir: &Path, url: &str, protocols: &str, report: u16) -> std::path::PathBuf {
    let html = format!(
        r#"<!doctype html><html><body><script>
const report = (t) => fetch("http://127.0.0.1:{report}/?" + encodeURIComponent(t), {{mode: "no-cors"}});
const ws = new WebSocket("{url}", {protocols});
let done = false;
ws.onopen = () => ws.send("hello from chromium");
ws.onmessage = (e) => {{ done = true; report("echo:" + e.data + " protocol:" + ws.protocol); ws.close(); }};
ws.onclose = (e) => {{ if (!done) report("closed:" + e.code); }};
</script></body></html>"#
    );
    let path = dir.join(format!("page-{report}.html"));
    std::fs::write(&path, html).unwrap();
    path
}

/// Opens `page` in headless Chromium and returns what the page reported.
fn run_page(dir: &Path, url: &str, protocols: &str, spki: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let page = page(dir, url, protocols, listener.local_addr().unwrap().port());
    let mut browser = Command::new(CHROMIUM)
        .args(chromium::FLAGS)
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("--ignore-certificate-errors-spki-list={spki}"))
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let report = read_report(&listener);
    let _ = browser.kill();
    let _ = browser.wait();
    report
}

/// The query of the first request to `listener` (percent-decoded), within WAIT.
fn read_report(listener: &TcpListener) -> String {
    listener.set_nonblocking(true).unwrap();
    let mut stream = None;
    wait_for("the page to report", || {
        stream = listener.accept().ok().map(|(s, _)| s);
        stream.is_some()
    });
    let mut stream = stream.unwrap();
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
        head.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&head);
    let query = line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .trim_start_matches("/?");
    tether::http::route::percent_decode(query).unwrap_or_default()
}

#[test]
fn chromium_talks_to_an_actor_over_wss() {
    if !chromium::available() {
        return;
    }
    let pki = Pki::new();
    let cert = pki.leaf("gw", &["localhost"]);
    let spki = spki_hash(&cert.chain);
    let mut c = test_config();
    c.client.tls = vec![cert];
    c.namespaces = vec![NamespaceConfig {
        name: "acme".into(),
        open: false,
        publishable_tokens: vec!["pk-browser-0123456789abcdef".into()],
        runners: vec![NamespaceRunner {
            name: "browser-test".into(),
            token: ACME_RUNNER.into(),
            pools: vec![],
            key_prefix: String::new(),
        }],
        ..NamespaceConfig::implicit_default()
    }];
    let mut h = start(c);
    let mut o = h.runner_options();
    o.token = ACME_RUNNER.into();
    h.add_runner(o, tether::runner::BuiltinActors);
    let port = h.client_addr.port();
    let url = format!("wss://localhost:{port}/actors/echo/browser");
    let shown = run_page(pki.dir(), &url, "[]", &spki);
    assert!(shown.contains("echo:hello from chromium"), "{shown}");
    // The token as a subprotocol: the runner chose none, so the gateway
    // selected the token entry, which the browser requires.
    let url = format!("wss://localhost:{port}/ns/acme/actors/echo/browser");
    let token = "[\"tether-token.pk-browser-0123456789abcdef\"]";
    let shown = run_page(pki.dir(), &url, token, &spki);
    assert!(
        shown.contains("echo:hello from chromium protocol:tether-token."),
        "{shown}"
    );
    h.shutdown();
}
