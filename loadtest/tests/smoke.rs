//! The `smoke` scenario against a gateway started here and a reference
//! runner the load test starts itself; and proof that the checks can fail:
//! the same load test against servers that drop or repeat messages.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use bytes::BytesMut;
use tether::ws::decoder::{Decoder, Event};
use tether::ws::frame::{encode_frame, OpCode};

fn loadtest(args: &[&str], json: &std::path::Path) -> (i32, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .args(["--quiet", "--json"])
        .arg(json)
        .output()
        .expect("run loadtest");
    let stdout =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let report = std::fs::read_to_string(json)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), report, stdout)
}

fn temp_json(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "tether-loadtest-{name}-{}.json",
        std::process::id()
    ))
}

#[test]
fn smoke_scenario_through_the_gateway_loses_nothing() {
    let mut config = tether::Config::default();
    config.server.workers = 2;
    config.server.log_level = "warn".into();
    config.client.listen = "127.0.0.1:0".parse().unwrap();
    config.runners.listen = "127.0.0.1:0".parse().unwrap();
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    let gw = tether::Gateway::start(config).expect("gateway starts");
    let url = format!("ws://{}", gw.client_addr);
    let runner_url = format!("ws://{}", gw.runner_addr);
    let json = temp_json("smoke");
    for actor in ["echo", "chat", "counter"] {
        let (code, report, output) = loadtest(
            &[
                "--scenario",
                "smoke",
                "--url",
                &url,
                "--runner-url",
                &runner_url,
                "--actor",
                actor,
            ],
            &json,
        );
        assert_eq!(code, 0, "{actor}: {output}");
        assert_eq!(report["ok"], true, "{actor}: {output}");
        assert_eq!(report["connections"]["opened"], 20, "{output}");
        assert!(
            report["messages"]["received"].as_u64().unwrap() > 100,
            "{actor}: {output}"
        );
        assert!(report["round_trip_us"]["p99"].as_u64().unwrap() > 0);
    }
    let _ = std::fs::remove_file(json);
    gw.shutdown();
}

/// A WebSocket echo server that misbehaves on purpose: `drop_every` drops
/// every n-th message, `repeat_every` sends every n-th twice.
fn faulty_echo_server(drop_every: u64, repeat_every: u64) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || serve_faulty(stream, drop_every, repeat_every));
        }
    });
    addr
}

fn serve_faulty(mut s: TcpStream, drop_every: u64, repeat_every: u64) {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let _ = s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n");
    let mut decoder = Decoder::new(1 << 20);
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 4096];
    let mut n = 0u64;
    loop {
        while let Ok(Some(event)) = decoder.decode(&mut buf) {
            let mut out = BytesMut::new();
            match event {
                Event::Text(p) => {
                    n += 1;
                    if !n.is_multiple_of(drop_every) {
                        encode_frame(&mut out, OpCode::Text, &p);
                    }
                    if n.is_multiple_of(repeat_every) {
                        encode_frame(&mut out, OpCode::Text, &p);
                    }
                }
                Event::Close(_) => {
                    encode_frame(&mut out, OpCode::Close, &[3, 232]);
                    let _ = s.write_all(&out);
                    return;
                }
                _ => {}
            }
            if s.write_all(&out).is_err() {
                return;
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
}

#[test]
fn lost_and_duplicated_messages_fail_the_run() {
    let args = |addr: std::net::SocketAddr| {
        vec![
            "--url".to_string(),
            format!("ws://{addr}"),
            "--runners".into(),
            "0".into(),
            "--clients".into(),
            "4".into(),
            "--rate".into(),
            "200".into(),
            "--warmup".into(),
            "0s".into(),
            "--duration".into(),
            "1s".into(),
            "--drain-timeout".into(),
            "300ms".into(),
        ]
    };
    let json = temp_json("faulty");
    let lossy = args(faulty_echo_server(50, u64::MAX));
    let lossy: Vec<&str> = lossy.iter().map(String::as_str).collect();
    let (code, report, output) = loadtest(&lossy, &json);
    assert_eq!(code, 1, "{output}");
    assert!(report["errors"]["lost"].as_u64().unwrap() > 0, "{output}");
    assert_eq!(report["ok"], false);

    let repeating = args(faulty_echo_server(u64::MAX, 50));
    let repeating: Vec<&str> = repeating.iter().map(String::as_str).collect();
    let (code, report, output) = loadtest(&repeating, &json);
    assert_eq!(code, 1, "{output}");
    assert!(
        report["errors"]["duplicated"].as_u64().unwrap() > 0,
        "{output}"
    );
    assert_eq!(report["errors"]["lost"], 0, "{output}");
    let _ = std::fs::remove_file(json);
}

#[test]
fn a_wrong_scenario_is_a_usage_error() {
    let json = temp_json("usage");
    let (code, _, output) = loadtest(&["--scenario", "no-such-scenario"], &json);
    assert_eq!(code, 2);
    assert!(output.contains("shipped"), "{output}");
    let (code, _, output) = loadtest(&["--chaos", "kill:3@1s"], &json);
    assert_eq!(code, 2);
    assert!(output.contains("runner 3"), "{output}");
}
