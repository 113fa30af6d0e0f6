//! A client connection from accept to close: the HTTP head, the upgrade, then
//! the WebSocket session. Protocol decisions live in the sans-IO `http` and
//! `ws` modules; this file moves bytes between them and the socket.

use std::rc::Rc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use monoio::net::TcpStream;
use tracing::debug;

use super::io::{linger_close, read_before, write_all_or_stall, ReadOutcome};
use super::session::Session;
use super::worker::Worker;
use crate::http::response::{write_response, write_switching_protocols};
use crate::http::route::{route, Route};
use crate::http::{HeadReader, RequestHead, Status};
use crate::ws::handshake::validate_upgrade;

pub(crate) async fn serve_client(worker: Rc<Worker>, mut stream: TcpStream) {
    let cfg = &worker.config.client;
    let deadline = Instant::now() + cfg.handshake_timeout;
    let mut reader = HeadReader::new(cfg.max_header_bytes, cfg.max_headers);
    let mut buf = worker.pool.take();
    let (head, head_len) = loop {
        match reader.poll(&buf) {
            Ok(Some(done)) => break done,
            Ok(None) => {}
            Err(e) => {
                return reject(&worker, stream, buf, e.status(), e.reason()).await;
            }
        }
        let (outcome, b) = read_before(&mut stream, buf, 1024, deadline).await;
        buf = b;
        match outcome {
            ReadOutcome::Data(_) => {}
            ReadOutcome::TimedOut => {
                debug!("request head not complete within handshake_timeout");
                return reject(
                    &worker,
                    stream,
                    buf,
                    Status::REQUEST_TIMEOUT,
                    "request head timed out",
                )
                .await;
            }
            ReadOutcome::Eof | ReadOutcome::Failed(_) => return,
        }
    };
    // Bytes after the head are the client's first WebSocket frames: keep them.
    buf.advance(head_len);
    let mut out = worker.pool.take();
    let protocols = match answer(&head, &mut out) {
        Answer::Upgrade { protocols } => protocols,
        Answer::Refused => return send_then_linger(&worker, stream, buf, out).await,
    };
    match write_all_or_stall(&mut stream, out, cfg.send_timeout).await {
        Ok(out) => worker.pool.give_back(out),
        Err(_) => return,
    }
    // The session is a task of its own so that nothing of the handshake
    // (head, parser, timer) stays allocated for the connection's lifetime.
    monoio::spawn(Session::new(worker.clone(), protocols).run(stream, buf));
}

enum Answer {
    /// `out` holds the 101 response; the WebSocket session follows.
    Upgrade { protocols: Vec<String> },
    /// `out` holds a complete error or health response; the connection ends.
    Refused,
}

/// Decides what a request head gets and writes the response into `out`.
fn answer(head: &RequestHead, out: &mut BytesMut) -> Answer {
    let actor = match route(&head.target) {
        Err(bad) => return refuse(out, Status::BAD_REQUEST, &[], bad.0),
        Ok(Route::Healthz) if head.method == "GET" => return refuse(out, Status::OK, &[], "ok"),
        Ok(Route::Healthz) => {
            return refuse(
                out,
                Status::METHOD_NOT_ALLOWED,
                &[("Allow", "GET")],
                "use GET",
            )
        }
        Ok(Route::NotFound) => return refuse(out, Status::NOT_FOUND, &[], "no such path"),
        Ok(Route::Actor(actor)) => actor,
    };
    if head.method != "GET" {
        return refuse(
            out,
            Status::METHOD_NOT_ALLOWED,
            &[("Allow", "GET")],
            "WebSocket endpoints accept GET only",
        );
    }
    let upgrade = match validate_upgrade(head) {
        Ok(u) => u,
        Err(r) => return refuse(out, r.status, r.headers(), r.reason),
    };
    // Until runners exist, the built-in echo handler is the only actor.
    if actor.name != "echo" {
        return refuse(out, Status::NOT_FOUND, &[], "unknown actor");
    }
    debug!(actor = %actor.name, key = ?actor.key, protocols = ?upgrade.protocols, "websocket open");
    write_switching_protocols(out, &upgrade.accept_key, None);
    Answer::Upgrade {
        protocols: upgrade.protocols,
    }
}

fn refuse(out: &mut BytesMut, status: Status, headers: &[(&str, &str)], reason: &str) -> Answer {
    if status != Status::OK {
        debug!(status = status.0, reason, "refusing request");
    }
    write_response(out, status, headers, &format!("{reason}\n"));
    Answer::Refused
}

async fn reject(
    worker: &Rc<Worker>,
    stream: TcpStream,
    buf: BytesMut,
    status: Status,
    reason: &str,
) {
    let mut out = worker.pool.take();
    refuse(&mut out, status, &[], reason);
    send_then_linger(worker, stream, buf, out).await;
}

async fn send_then_linger(
    worker: &Rc<Worker>,
    mut stream: TcpStream,
    scratch: BytesMut,
    out: BytesMut,
) {
    let cfg = &worker.config.client;
    if let Ok(out) = write_all_or_stall(&mut stream, out, cfg.send_timeout).await {
        worker.pool.give_back(out);
        linger_close(stream, scratch, cfg.close_timeout).await;
    }
}
