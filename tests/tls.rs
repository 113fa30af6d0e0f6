//! TLS on the client listener over real sockets: wss:// to an actor,
//! certificates chosen by SNI, hibernated wss sockets that wake, a reload
//! that keeps connections and refuses bad certificates, and handshakes that
//! never finish. Certificates are generated per test (tests/common/pki.rs).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use common::pki::Pki;
use common::wss::{echo, tls_to, wss, Wss};
use common::*;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use tether::config::TlsCertificate;
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

fn tls_config(certs: Vec<TlsCertificate>) -> tether::Config {
    let mut c = test_config();
    c.client.tls = certs;
    c
}

#[test]
fn a_wss_client_talks_to_its_actor() {
    let pki = Pki::new();
    let h = start(tls_config(vec![pki.leaf("gw", &["gw.test"])]));
    let mut ws = wss(h.client_addr, "gw.test", &pki.ca_path(), "/actors/echo/tls");
    assert_eq!(echo(&mut ws, "over tls"), "over tls");
    let big = "x".repeat(100_000); // several TLS records each way
    assert_eq!(echo(&mut ws, &big), big);
    ws.close(None).unwrap();
    h.shutdown();
}

#[test]
fn the_certificate_is_chosen_by_sni() {
    let pki = Pki::new();
    let certs = vec![pki.leaf("a", &["a.test"]), pki.leaf("b", &["*.b.test"])];
    let h = start(tls_config(certs));
    // Each name verifies only against its own certificate.
    assert!(tls_to(h.client_addr, "a.test", &pki.ca_path()).is_ok());
    assert!(tls_to(h.client_addr, "x.b.test", &pki.ca_path()).is_ok());
    // An unknown name gets the first (default) certificate, which does not name it.
    let err = tls_to(h.client_addr, "other.test", &pki.ca_path()).err();
    assert!(
        err.is_some_and(|e| e.contains("certificate")),
        "accepted a wrong name"
    );
    h.shutdown();
}

#[test]
fn a_hibernated_wss_socket_wakes_its_actor() {
    let pki = Pki::new();
    let mut c = tls_config(vec![pki.leaf("gw", &["gw.test"])]);
    c.actors.hibernatable = vec!["echo".into()];
    c.actors.idle_timeout = Duration::from_millis(300);
    let h = start(c);
    let mut ws = wss(
        h.client_addr,
        "gw.test",
        &pki.ca_path(),
        "/actors/echo/sleepy",
    );
    assert_eq!(echo(&mut ws, "before"), "before");
    wait_for("the wss socket to park", || h.stat(|s| &s.parked) == 1);
    assert_eq!(
        echo(&mut ws, "after"),
        "after",
        "woken, over the same TLS session"
    );
    h.shutdown();
}

#[test]
fn certificates_reload_without_dropping_connections_and_bad_ones_are_kept_out() {
    let pki = Pki::new();
    let first = pki.leaf("gw", &["old.test"]);
    let c = tls_config(vec![first.clone()]);
    let h = start(c.clone());
    let mut old = wss(h.client_addr, "old.test", &pki.ca_path(), "/actors/echo/r");
    // The same files now hold a certificate for another name.
    let second = pki.leaf("next", &["new.test"]);
    std::fs::copy(&second.chain, &first.chain).unwrap();
    std::fs::copy(&second.key, &first.key).unwrap();
    h.gateway().reload_tls(&c);
    assert!(
        tls_to(h.client_addr, "new.test", &pki.ca_path()).is_ok(),
        "new connections get the new one"
    );
    assert_eq!(
        echo(&mut old, "still here"),
        "still here",
        "old ones keep theirs"
    );
    // A broken file is refused; the last good certificate stays.
    std::fs::write(&first.key, "not a key").unwrap();
    h.gateway().reload_tls(&c);
    assert!(tls_to(h.client_addr, "new.test", &pki.ca_path()).is_ok());
    h.shutdown();
}

#[test]
fn a_handshake_that_never_finishes_is_cut_at_handshake_timeout() {
    let pki = Pki::new();
    let h = start_bare(tls_config(vec![pki.leaf("gw", &["gw.test"])]));
    let mut tcp = TcpStream::connect(h.client_addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    // The start of a TLS record header, then silence.
    tcp.write_all(&[0x16, 0x03, 0x01]).unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = tcp.read_to_end(&mut rest);
    assert!(started.elapsed() < WAIT, "never closed");
    // Plain HTTP on the TLS port is not answered in plaintext.
    let answer = raw_exchange(h.client_addr, upgrade_request("/actors/echo/x").as_bytes());
    assert!(!answer.contains("HTTP/1.1"), "{answer}");
    wait_for("the failed handshake to be counted", || {
        h.stat(|s| &s.tls_failures) == 1
    });
    h.shutdown();
}

/// Memory of idle wss sockets is measured in the `hibernate` and
/// `idle_memory` benchmarks; here, only that many of them coexist.
#[test]
fn many_wss_clients_share_one_actor() {
    let pki = Pki::new();
    let h = start(tls_config(vec![pki.leaf("gw", &["gw.test"])]));
    let ca = Arc::new(pki.ca_path());
    let mut clients: Vec<Wss> = (0..20)
        .map(|_| wss(h.client_addr, "gw.test", &ca, "/actors/echo/shared"))
        .collect();
    for (i, ws) in clients.iter_mut().enumerate() {
        assert_eq!(echo(ws, &format!("m{i}")), format!("m{i}"));
    }
    h.shutdown();
}

#[test]
fn a_runner_dials_the_gateway_over_tls_and_verifies_it() {
    let pki = Pki::new();
    let mut c = tls_config(vec![pki.leaf("gw", &["localhost"])]);
    c.runners.tls = vec![pki.leaf("runners", &["localhost"])];
    let mut h = start_bare(c);
    let port = h.runner_addr.port();
    let mut o = h.runner_options();
    o.gateway = format!("wss://localhost:{port}");
    o.tls_ca = Some(pki.ca_path());
    h.add_runner(o, tether::runner::BuiltinActors);
    let mut ws = wss(h.client_addr, "localhost", &pki.ca_path(), "/actors/echo/t");
    assert_eq!(echo(&mut ws, "both legs encrypted"), "both legs encrypted");
    // A runner that does not trust the gateway's CA never connects.
    let other = Pki::new();
    let mut o = h.runner_options();
    o.gateway = format!("wss://localhost:{port}");
    o.tls_ca = Some(other.ca_path());
    let distrustful = tether::runner::Runner::start(o, tether::runner::BuiltinActors);
    assert_stays(
        "the untrusting runner stays out",
        Duration::from_millis(500),
        || distrustful.connected_tunnels() == 0,
    );
    distrustful.stop();
    h.shutdown();
}

#[test]
fn a_balancers_proxy_header_comes_before_the_tls_handshake() {
    let pki = Pki::new();
    let mut c = tls_config(vec![pki.leaf("gw", &["gw.test"])]);
    c.client.trusted_proxies = vec![tether::config::IpNet::parse("127.0.0.0/8").unwrap()];
    let h = start(c);
    let mut tcp = TcpStream::connect(h.client_addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // v2, TCP over IPv4, from 198.51.100.7:5000.
    let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    header.extend_from_slice(&[198, 51, 100, 7, 10, 0, 0, 1, 0x13, 0x88, 0x1f, 0x90]);
    let config = tether::tls::load_client_config(Some(&pki.ca_path())).unwrap();
    let name = ServerName::try_from("gw.test".to_owned()).unwrap();
    let mut conn = ClientConnection::new(config, name).unwrap();
    // The header and the ClientHello in one write: the gateway reads past
    // the header into the handshake, and must not wait for more.
    conn.write_tls(&mut header).unwrap();
    tcp.write_all(&header).unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    let request = "ws://gw.test/actors/echo/proxied"
        .into_client_request()
        .unwrap();
    let mut ws = tungstenite::client::client(request, tls)
        .expect("upgrade")
        .0;
    assert_eq!(
        echo(&mut ws, "through the balancer"),
        "through the balancer"
    );
    h.shutdown();
}

#[test]
fn a_tls_refusal_ends_with_close_notify() {
    let pki = Pki::new();
    let h = start_bare(tls_config(vec![pki.leaf("gw", &["gw.test"])]));
    let mut tls = tls_to(h.client_addr, "gw.test", &pki.ca_path()).unwrap();
    tls.write_all(upgrade_request("/nowhere").as_bytes())
        .unwrap();
    let mut answer = Vec::new();
    // Without close_notify, rustls reports an unexpected end of the stream:
    // the client could not tell a complete answer from a cut one.
    let read = tls.read_to_end(&mut answer);
    assert!(read.is_ok(), "{read:?}");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 404"));
    h.shutdown();
}

#[test]
fn data_that_arrives_with_close_notify_is_delivered() {
    let pki = Pki::new();
    let h = start(tls_config(vec![pki.leaf("gw", &["gw.test"])]));
    let mut listener = wss(
        h.client_addr,
        "gw.test",
        &pki.ca_path(),
        "/actors/chat/last",
    );
    let mut leaver = tls_to(h.client_addr, "gw.test", &pki.ca_path()).unwrap();
    leaver
        .write_all(upgrade_request("/actors/chat/last").as_bytes())
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        leaver.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    // A last message, a close frame and close_notify in one flight.
    let mut flight = client_frame(true, 1, b"last words");
    flight.extend(client_frame(true, 8, &1000u16.to_be_bytes()));
    leaver.conn.writer().write_all(&flight).unwrap();
    leaver.conn.send_close_notify();
    while leaver.conn.wants_write() {
        leaver.conn.write_tls(&mut leaver.sock).unwrap();
    }
    loop {
        match listener.read() {
            Ok(Message::Text(t)) => {
                assert_eq!(t.as_str(), "last words");
                break;
            }
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
                continue
            }
            Err(e) => panic!("the last words were lost: {e}"),
        }
    }
    h.shutdown();
}

#[test]
fn a_tls_connection_over_a_limit_is_closed_before_the_handshake() {
    let pki = Pki::new();
    let mut c = tls_config(vec![pki.leaf("gw", &["gw.test"])]);
    c.client.max_connections = 1;
    let h = start(c);
    let _first = wss(h.client_addr, "gw.test", &pki.ca_path(), "/actors/echo/one");
    let refused = tls_to(h.client_addr, "gw.test", &pki.ca_path());
    let err = refused.err().unwrap_or_default();
    // A clean close (end of stream), not a reset.
    assert!(!err.contains("reset"), "{err}");
    assert!(!err.is_empty(), "the handshake succeeded past the limit");
    wait_for("the refusal to be counted", || {
        h.stat(|s| &s.refused_max_connections) == 1
    });
    h.shutdown();
}
