//! A serverless function's side of a Tether serverless pool, mounted in a
//! plain blocking HTTP server (one thread per request): the runner
//! library's `ServerlessHandler` answers `{base}/metadata` and
//! `{base}/start`. README "Serverless pools" shows this code; building the
//! examples (`cargo test` does) keeps it compiling.
//!
//! `cargo run --example serverless_function -- 127.0.0.1:3000 /api/tether`
//! then point a pool's `url` at `http://127.0.0.1:3000/api/tether`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use tether::http::HeadReader;
use tether::runner::serverless::{ServerlessHandler, SSE_OPENING};
use tether::runner::{BuiltinActors, MemoryStore};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:3000".into());
    let base = args.next().unwrap_or_else(|| "/api/tether".into());
    // Your actors and where they keep state (a database the function's
    // instances share, in production).
    let handler = ServerlessHandler::new(
        Arc::new(BuiltinActors),
        Some(Arc::new(MemoryStore::default())),
    );
    // In production also `.allow_gateway("wss://tether.example.com:8443")`:
    // `/start` then dials no other gateway.
    let listener = std::net::TcpListener::bind(&addr)?;
    eprintln!("serving {base}/metadata and {base}/start on {addr}");
    for stream in listener.incoming() {
        let (s, handler, base) = (stream?, handler.clone(), base.clone());
        std::thread::spawn(move || serve(s, &handler, &base));
    }
    Ok(())
}

fn serve(mut s: TcpStream, handler: &ServerlessHandler, base: &str) {
    let (mut reader, mut buf) = (HeadReader::new(16 * 1024, 64), Vec::new());
    let head = loop {
        let mut chunk = [0u8; 1024];
        let n = s.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        match reader.poll(&buf) {
            Ok(Some((head, _))) => break head,
            Ok(None) => {}
            Err(_) => return,
        }
    };
    let route = head.target.strip_prefix(base).unwrap_or("");
    match route {
        "/metadata" => {
            let body = handler.metadata_json();
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
        }
        "/start" => match handler.start(&head) {
            Ok(mut run) => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n");
                let _ = s.write_all(SSE_OPENING);
                // Keepalives until the gateway drains the runner (`event:
                // end`); a failed write (the gateway went away) drops
                // `run`, which stops the runner.
                while let Some(event) = run.next_event() {
                    if s.write_all(event).and_then(|()| s.flush()).is_err() {
                        break;
                    }
                }
            }
            Err((status, why)) => {
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} Refused\r\ncontent-length: {}\r\n\r\n{why}",
                    why.len()
                );
            }
        },
        _ => {
            let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
        }
    }
}
