//! RFC 6455 behaviour of client WebSockets, checked over loopback with a
//! hand-written raw client (for malformed input) and tokio-tungstenite (an
//! independent, widely used implementation) for normal traffic.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;

const TEXT: u8 = 1;
const BINARY: u8 = 2;
const CONT: u8 = 0;
const CLOSE: u8 = 8;
const PING: u8 = 9;
const PONG: u8 = 10;

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn echo_round_trips_text_and_binary_from_0_bytes_to_16_mib() {
    let gw = start_default();
    let url = format!("ws://{}/actors/echo/sizes", gw.client_addr);
    tokio().block_on(async {
        let mut cfg = WebSocketConfig::default();
        cfg.max_message_size = Some(32 << 20);
        cfg.max_frame_size = Some(32 << 20);
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(&url, Some(cfg), false)
            .await
            .unwrap();
        for size in [0usize, 1, 125, 126, 65535, 65536, 1 << 20, 16 << 20] {
            let text: String = "é€x".chars().cycle().take(size).collect::<String>();
            let text = text[..text.floor_char_boundary(size)].to_owned();
            ws.send(Message::text(text.clone())).await.unwrap();
            match ws.next().await.unwrap().unwrap() {
                Message::Text(t) => assert_eq!(t.as_str(), text, "text of {size} bytes"),
                other => panic!("expected text, got {other:?}"),
            }
            let bin: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            ws.send(Message::binary(bin.clone())).await.unwrap();
            match ws.next().await.unwrap().unwrap() {
                Message::Binary(b) => assert_eq!(b.as_ref(), &bin[..], "binary of {size} bytes"),
                other => panic!("expected binary, got {other:?}"),
            }
        }
        ws.close(None).await.unwrap();
    });
    gw.shutdown();
}

#[test]
fn fragmented_messages_with_interleaved_control_frames() {
    let gw = start_default();
    let mut ws = RawWs::connect(gw.client_addr, "/actors/echo/frag");
    // "κόσμε" split inside its multi-byte characters, with a ping in between.
    let text = "κόσμε".as_bytes();
    ws.send(false, TEXT, &text[..1]);
    ws.send(true, PING, b"mid");
    ws.send(false, CONT, &text[1..6]);
    ws.send(false, CONT, &[]);
    ws.send(true, CONT, &text[6..]);
    let pong = ws.recv().unwrap();
    assert_eq!((pong.opcode, pong.payload.as_slice()), (PONG, &b"mid"[..]));
    let echo = ws.recv().unwrap();
    assert_eq!((echo.opcode, echo.payload.as_slice()), (TEXT, text));
    gw.shutdown();
}

#[test]
fn ping_is_answered_with_the_same_payload() {
    let gw = start_default();
    let mut ws = RawWs::connect(gw.client_addr, "/actors/echo/ping");
    ws.send(true, PING, &[7u8; 125]);
    let f = ws.recv().unwrap();
    assert_eq!((f.opcode, f.payload), (PONG, vec![7u8; 125]));
    gw.shutdown();
}

#[test]
fn close_handshake_initiated_by_the_client() {
    let gw = start_default();
    let mut ws = RawWs::connect(gw.client_addr, "/actors/echo/close");
    let mut payload = 4321u16.to_be_bytes().to_vec();
    payload.extend_from_slice("bye".as_bytes());
    ws.send(true, CLOSE, &payload);
    let f = ws.recv().unwrap();
    assert_eq!(f.opcode, CLOSE);
    assert_eq!(f.close_code(), Some(4321), "the status code is echoed");
    assert!(ws.recv().is_none(), "the server closes the TCP connection");

    let mut ws = RawWs::connect(gw.client_addr, "/actors/echo/close-empty");
    ws.send(true, CLOSE, &[]);
    let f = ws.recv().unwrap();
    assert_eq!((f.opcode, f.payload.len()), (CLOSE, 0));
    gw.shutdown();
}

/// Each malformed input gets the close code RFC 6455 asks for, and a
/// connection opened beside it keeps working.
#[test]
fn protocol_violations_close_with_the_right_code() {
    let gw = start_default();
    let unmasked = {
        let mut f = client_frame(true, TEXT, b"hi");
        f[1] &= 0x7F;
        f.drain(2..6);
        for (i, b) in f[2..].iter_mut().enumerate() {
            *b ^= [0xA1u8, 0x5B, 0x07, 0xE2][i % 4];
        }
        f
    };
    let rsv = {
        let mut f = client_frame(true, TEXT, b"hi");
        f[0] |= 0x40;
        f
    };
    let too_big: Vec<u8> = client_frame(true, BINARY, &vec![0u8; 1 << 16]);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked frame", unmasked, 1002),
        ("RSV1 without extension", rsv, 1002),
        ("reserved data opcode", client_frame(true, 3, b""), 1002),
        (
            "reserved control opcode",
            client_frame(true, 0xB, b""),
            1002,
        ),
        (
            "control frame over 125 bytes",
            client_frame(true, PING, &[0u8; 126]),
            1002,
        ),
        (
            "fragmented control frame",
            client_frame(false, PING, b"x"),
            1002,
        ),
        (
            "continuation without start",
            client_frame(true, CONT, b"x"),
            1002,
        ),
        (
            "new message inside a fragmented one",
            [
                client_frame(false, TEXT, b"a"),
                client_frame(true, TEXT, b"b"),
            ]
            .concat(),
            1002,
        ),
        (
            "invalid UTF-8",
            client_frame(true, TEXT, &[0xCE, 0xBA, 0xFF]),
            1007,
        ),
        (
            "invalid UTF-8 across fragments",
            [
                client_frame(false, TEXT, &[0xCE]),
                client_frame(true, CONT, &[0x41]),
            ]
            .concat(),
            1007,
        ),
        (
            "truncated code point at message end",
            client_frame(true, TEXT, &[0xE2, 0x82]),
            1007,
        ),
        ("message over max_message_bytes", too_big, 1009),
        (
            "invalid close code",
            client_frame(true, CLOSE, &1005u16.to_be_bytes()),
            1002,
        ),
        (
            "close payload of one byte",
            client_frame(true, CLOSE, &[3]),
            1002,
        ),
        (
            "close reason not UTF-8",
            client_frame(true, CLOSE, &[0x03, 0xE8, 0xFF, 0xFE]),
            1007, // RFC 6455 §8.1 and §7.4.1 (issue 12: was 1002)
        ),
    ];
    let mut config = test_config();
    config.client.max_message_bytes = 60_000;
    let gw2 = start(config);
    let mut bystander = RawWs::connect(gw2.client_addr, "/actors/echo/bystander");
    for (what, bytes, code) in cases {
        let mut ws = RawWs::connect(gw2.client_addr, "/actors/echo/bad");
        ws.send_raw(&bytes);
        assert_eq!(ws.expect_close(), code, "{what}");
        assert!(
            ws.recv().is_none(),
            "{what}: TCP closed after the close frame"
        );
        bystander.send(true, TEXT, what.as_bytes());
        assert_eq!(
            bystander.recv().unwrap().payload,
            what.as_bytes(),
            "bystander after {what}"
        );
    }
    gw2.shutdown();
    gw.shutdown();
}

#[test]
fn invalid_utf8_fails_fast_inside_a_frame() {
    let gw = start_default();
    let mut ws = RawWs::connect(gw.client_addr, "/actors/echo/fast");
    // Announce a 1 MiB text frame but send only its first bytes, the bad one among them.
    let mut payload = vec![b'a'; 1 << 20];
    payload[10] = 0xFF;
    let frame = client_frame(true, TEXT, &payload);
    ws.send_raw(&frame[..100]);
    assert_eq!(ws.expect_close(), 1007);
    gw.shutdown();
}

#[test]
fn gateway_pings_idle_clients_and_drops_silent_ones() {
    let mut c = test_config();
    c.client.ping_interval = Duration::from_millis(200);
    c.client.ping_timeout = Duration::from_millis(300);
    let gw = start(c);
    // A client that answers pings stays connected through several intervals.
    let url = format!("ws://{}/actors/echo/alive", gw.client_addr);
    let rt = tokio();
    let alive = rt.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let mut pings = 0;
        let until = tokio::time::Instant::now() + Duration::from_millis(1200);
        while let Ok(Some(msg)) = tokio::time::timeout_at(until, ws.next()).await {
            if let Message::Ping(_) = msg.unwrap() {
                pings += 1; // tungstenite queues the pong; the next read flushes it
            }
        }
        ws.send(Message::text("still open")).await.unwrap();
        let reply = ws.next().await.unwrap().unwrap();
        (pings, reply)
    });
    assert!(alive.0 >= 3, "expected pings, saw {}", alive.0);
    assert_eq!(alive.1, Message::text("still open"));

    // A client that never answers is dropped after ping_interval + ping_timeout.
    let mut silent = RawWs::connect(gw.client_addr, "/actors/echo/silent");
    let started = Instant::now();
    let first = silent.recv().unwrap();
    assert_eq!(first.opcode, PING);
    let mut saw_close = false;
    while let Some(f) = silent.recv() {
        saw_close |= f.opcode == CLOSE;
    }
    let elapsed = started.elapsed();
    assert!(saw_close, "a close frame precedes the drop");
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    gw.shutdown();
}

#[test]
fn tungstenite_close_handshake_from_client() {
    let gw = start_default();
    let url = format!("ws://{}/actors/echo/t", gw.client_addr);
    tokio().block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        ws.send(Message::Close(Some(
            tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "done".into(),
            },
        )))
        .await
        .unwrap();
        match ws.next().await {
            Some(Ok(Message::Close(Some(f)))) => assert_eq!(f.code, CloseCode::Normal),
            other => panic!("expected the close echo, got {other:?}"),
        }
        assert!(ws.next().await.is_none());
    });
    gw.shutdown();
}
