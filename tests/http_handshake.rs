//! The client listener's HTTP side: every refusal gets its status.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn healthz_on_client_and_admin_listeners() {
    let gw = start_default();
    let r = raw_exchange(gw.client_addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_of(&r), 200, "{r}");
    assert!(r.ends_with("ok\n"));
    let r = raw_exchange(gw.admin_addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_of(&r), 200, "{r}");
    let r = raw_exchange(gw.admin_addr, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_of(&r), 404, "{r}");
    gw.shutdown();
}

#[test]
fn each_bad_request_gets_its_status() {
    let gw = start_default();
    let good = upgrade_request("/actors/echo/x");
    let cases: Vec<(String, u16)> = vec![
        ("GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n".into(), 404),
        ("GET /actors/echo HTTP/1.1\r\nHost: x\r\n\r\n".into(), 404),
        (
            "GET /actors/echo/%zz HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            400,
        ),
        (good.replace("GET", "POST"), 405),
        (good.replace("Upgrade: websocket\r\n", ""), 400),
        (good.replace("Upgrade: websocket", "Upgrade: h2c"), 400),
        (
            good.replace("Connection: Upgrade", "Connection: keep-alive"),
            400,
        ),
        (good.replace(KEY, "not-a-key"), 400),
        (
            good.replace(&format!("Sec-WebSocket-Key: {KEY}\r\n"), ""),
            400,
        ),
        (good.replace("HTTP/1.1", "HTTP/1.0"), 400),
        ("GARBAGE\x01\x02 / HTTP/1.1\r\n\r\n".into(), 400),
        ("GET / HTTP/1.1\r\nNo colon here\r\n\r\n".into(), 400),
        (good.replace("/actors/echo/x", "/actors/nosuchactor/x"), 404),
    ];
    for (req, expected) in cases {
        let r = raw_exchange(gw.client_addr, req.as_bytes());
        assert_eq!(status_of(&r), expected, "request {req:?} got {r:?}");
        assert!(r.contains("Connection: close"), "{r}");
    }
    let r = raw_exchange(
        gw.client_addr,
        good.replace("Version: 13", "Version: 8").as_bytes(),
    );
    assert_eq!(status_of(&r), 426, "{r}");
    assert!(r.contains("Sec-WebSocket-Version: 13\r\n"), "{r}");
    let r = raw_exchange(gw.client_addr, good.replace("GET", "PUT").as_bytes());
    assert!(r.contains("Allow: GET\r\n"), "{r}");
    gw.shutdown();
}

#[test]
fn oversized_heads_get_431() {
    let mut c = test_config();
    c.client.max_header_bytes = 1024;
    c.client.max_headers = 8;
    let gw = start(c);
    let big = upgrade_request("/actors/echo/x").replace(
        "Host: test",
        &format!("Host: test\r\nX-Big: {}", "a".repeat(2000)),
    );
    assert_eq!(
        status_of(&raw_exchange(gw.client_addr, big.as_bytes())),
        431
    );
    // A head that never ends is refused once it passes the limit, not at the timeout.
    let endless = format!("GET / HTTP/1.1\r\nX: {}", "b".repeat(1500));
    assert_eq!(
        status_of(&raw_exchange(gw.client_addr, endless.as_bytes())),
        431
    );
    let many: String = (0..20).map(|i| format!("X-{i}: v\r\n")).collect();
    let req = upgrade_request("/actors/echo/x")
        .replace("Host: test\r\n", &format!("Host: test\r\n{many}"));
    assert_eq!(
        status_of(&raw_exchange(gw.client_addr, req.as_bytes())),
        431
    );
    gw.shutdown();
}

#[test]
fn slowloris_gets_408_without_affecting_others() {
    let mut c = test_config();
    c.client.handshake_timeout = Duration::from_millis(300);
    let gw = start(c);
    let mut slow = TcpStream::connect(gw.client_addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    slow.write_all(b"GET /actors/echo/x HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = Instant::now();
    // Meanwhile another client is served normally.
    let mut other = RawWs::connect(gw.client_addr, "/actors/echo/other");
    other.send(true, 1, b"still here");
    assert_eq!(other.recv().unwrap().payload, b"still here");
    let mut out = String::new();
    slow.read_to_string(&mut out).unwrap();
    assert_eq!(status_of(&out), 408, "{out}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    gw.shutdown();
}

#[test]
fn a_head_split_into_single_bytes_works() {
    let gw = start_default();
    let mut s = TcpStream::connect(gw.client_addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The first WebSocket frame is pipelined right behind the head.
    let mut bytes = upgrade_request("/actors/echo/split").into_bytes();
    bytes.extend_from_slice(&client_frame(true, 1, b"pipelined"));
    for b in &bytes {
        s.write_all(&[*b]).unwrap();
        // Pacing, so that the bytes arrive one by one (the scenario).
        std::thread::sleep(Duration::from_micros(200));
    }
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    while !got.ends_with(b"pipelined") {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&chunk[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
    gw.shutdown();
}

#[test]
fn subprotocols_are_accepted_and_deflate_is_declined() {
    let gw = start_default();
    let req = upgrade_request("/actors/echo/x").replace(
        "Host: test\r\n",
        "Host: test\r\nSec-WebSocket-Protocol: chat, v2.json\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
    );
    let mut s = TcpStream::connect(gw.client_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut head = vec![0u8; 1024];
    let n = s.read(&mut head).unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");
    // No runner chooses a subprotocol yet, so none is selected.
    assert!(!head.contains("Sec-WebSocket-Protocol"), "{head}");
    gw.shutdown();
}
