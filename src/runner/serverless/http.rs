//! A small HTTP/1.1 server for a function's two routes, for `tether runner
//! --serve-http` and tests: a thread per request, a bounded number of
//! them, `Connection: close` on every answer.
//!
//! `/start`'s stream notices that the gateway went away at its next write
//! (a keepalive), and then stops the runner.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{ServerlessHandler, SSE_OPENING};
use crate::http::{HeadReader, RequestHead};

/// Requests served at once; more get 503.
const MAX_REQUESTS: usize = 256;
const MAX_HEAD_BYTES: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
/// How long a request's head may take to arrive.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// A running server; stops accepting when dropped (requests in flight
/// finish on their own threads).
pub struct HttpServer {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl HttpServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Release);
        let _ = TcpStream::connect(self.addr); // wakes the blocked accept
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// Serves `handler` on `listener` from a thread of its own.
pub fn serve(listener: TcpListener, handler: ServerlessHandler) -> io::Result<HttpServer> {
    let addr = listener.local_addr()?;
    let stopping = Arc::new(AtomicBool::new(false));
    let flag = stopping.clone();
    let accept = std::thread::Builder::new()
        .name("serverless-http".into())
        .spawn(move || accept_loop(listener, handler, &flag))?;
    Ok(HttpServer {
        addr,
        stopping,
        accept: Some(accept),
    })
}

fn accept_loop(listener: TcpListener, handler: ServerlessHandler, stopping: &AtomicBool) {
    let busy = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if stopping.load(Ordering::Acquire) {
            return;
        }
        let Ok(mut stream) = stream else { continue };
        if busy.fetch_add(1, Ordering::AcqRel) >= MAX_REQUESTS {
            busy.fetch_sub(1, Ordering::AcqRel);
            let _ = answer(
                &mut stream,
                503,
                "text/plain",
                b"too many requests in flight\n",
            );
            continue;
        }
        let (handler, done) = (handler.clone(), busy.clone());
        let spawned = std::thread::Builder::new()
            .name("serverless-request".into())
            .spawn(move || {
                serve_one(stream, &handler);
                done.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            busy.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn serve_one(mut stream: TcpStream, handler: &ServerlessHandler) {
    let head = match read_head(&mut stream) {
        Ok(head) => head,
        Err(status) => {
            let why: &[u8] = match status {
                408 => b"request head not complete in time\n",
                _ => b"bad request head\n",
            };
            let _ = answer(&mut stream, status, "text/plain", why);
            return;
        }
    };
    let path = head.target.split('?').next().unwrap_or("");
    match (head.method.as_str(), path) {
        ("GET", "/metadata") => {
            let body = handler.metadata_json();
            let _ = answer(&mut stream, 200, "application/json", body.as_bytes());
        }
        ("GET", "/start") => start(stream, handler, &head),
        (_, "/metadata" | "/start") => {
            let _ = answer(&mut stream, 405, "text/plain", b"only GET\n");
        }
        _ => {
            let _ = answer(&mut stream, 404, "text/plain", b"not found\n");
        }
    }
}

/// Streams `/start`'s events until the runner is drained or the gateway
/// goes away.
fn start(mut stream: TcpStream, handler: &ServerlessHandler, head: &RequestHead) {
    let mut run = match handler.start(head) {
        Ok(run) => run,
        Err((status, why)) => {
            let _ = answer(&mut stream, status, "text/plain", why.as_bytes());
            return;
        }
    };
    let opening = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n";
    if stream.write_all(opening.as_bytes()).is_err() || stream.write_all(SSE_OPENING).is_err() {
        return; // `run` stops its runner when dropped
    }
    while let Some(event) = run.next_event() {
        if stream
            .write_all(event)
            .and_then(|()| stream.flush())
            .is_err()
        {
            return;
        }
    }
}

/// Reads a request head that must be whole within `HEAD_TIMEOUT` of the
/// first read (a deadline, not a per-read idle time: a byte every few
/// seconds must not hold a thread for hours).
fn read_head(stream: &mut TcpStream) -> Result<RequestHead, u16> {
    let deadline = Instant::now() + HEAD_TIMEOUT;
    let mut reader = HeadReader::new(MAX_HEAD_BYTES, MAX_HEADERS);
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        match reader.poll(&buf) {
            Ok(Some((head, _))) => return Ok(head),
            Ok(None) => {}
            Err(e) => return Err(e.status().0),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return Err(408);
        }
        match stream.read(&mut chunk) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(408)
            }
            Ok(0) | Err(_) => return Err(400),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn answer(stream: &mut TcpStream, status: u16, content_type: &str, body: &[u8]) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let allow = if status == 405 { "allow: GET\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n{allow}connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)
}
