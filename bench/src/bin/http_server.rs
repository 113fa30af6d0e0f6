//! A plain HTTP/1.1 server: the backend of the HTTP comparison (direct,
//! nginx and HAProxy in front of it; Tether's side is the reference
//! runner's `echo` actor, which does the same). Thread-per-core on monoio,
//! one SO_REUSEPORT listener per thread, keep-alive and pipelining.
//!
//! Every request is answered 200 with its body (Content-Length bodies;
//! none: an empty answer), as `echo` answers through the tunnel.
//!
//!     cargo run --release -p tether-bench --bin http_server -- --listen 127.0.0.1:9200 --threads 2

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use clap::Parser;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use tether::http::body::{request_framing, Framing};
use tether::http::HeadReader;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Largest request body answered (larger ones close the connection).
const MAX_BODY: u64 = 1 << 20;
const READ_ROOM: usize = 16 * 1024;

#[derive(Parser)]
#[command(about = "Plain HTTP echo server for proxy comparisons")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9200")]
    listen: SocketAddr,
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() {
    let args = Args::parse();
    let threads = args.threads.max(1);
    let uring = monoio::utils::detect_uring();
    let listeners =
        match tether::server::listener::bind_shared(args.listen, threads, !uring, "http_server") {
            Ok(l) => l,
            Err(e) => {
                eprintln!("http_server: {e}");
                std::process::exit(1);
            }
        };
    let handles: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(id, listener)| {
            std::thread::Builder::new()
                .name(format!("http-{id}"))
                .spawn(move || run_thread(listener))
                .expect("spawn thread")
        })
        .collect();
    println!(
        "http_server listening on {} ({threads} threads)",
        args.listen
    );
    let _ = std::io::stdout().flush();
    for h in handles {
        let _ = h.join();
    }
}

fn run_thread(listener: std::net::TcpListener) {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .expect("monoio runtime");
    rt.block_on(async move {
        let listener = TcpListener::from_std(listener).expect("listener into monoio");
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    monoio::spawn(serve(stream));
                }
                Err(e) => {
                    eprintln!("http_server: accept: {e}");
                    monoio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    });
}

async fn read_more(s: &mut TcpStream, mut buf: BytesMut) -> (usize, BytesMut) {
    if buf.capacity() - buf.len() < READ_ROOM {
        buf.reserve(READ_ROOM);
    }
    let (len, cap) = (buf.len(), buf.capacity());
    let (res, slice) = s.read(buf.slice_mut(len..cap)).await;
    (res.unwrap_or(0), slice.into_inner())
}

/// Answers requests until the client closes; every answer of a batch of
/// pipelined requests goes out in one write.
async fn serve(mut stream: TcpStream) {
    let mut buf = BytesMut::with_capacity(READ_ROOM);
    let mut out = BytesMut::with_capacity(READ_ROOM);
    loop {
        loop {
            let mut reader = HeadReader::new(8192, 64);
            let (head, len) = match reader.poll(&buf) {
                Ok(Some(done)) => done,
                Ok(None) => break,
                Err(_) => return,
            };
            let body = match request_framing(&head) {
                Ok(Framing::Length(n)) if n <= MAX_BODY => n as usize,
                _ => return,
            };
            if buf.len() < len + body {
                break; // the rest of its body comes with the next read
            }
            buf.advance(len);
            let body = buf.split_to(body);
            out.extend_from_slice(
                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).as_bytes(),
            );
            out.extend_from_slice(&body);
        }
        if !out.is_empty() {
            let (r, o) = stream.write_all(out).await;
            if r.is_err() {
                return;
            }
            out = o;
            out.clear();
        }
        let n;
        (n, buf) = read_more(&mut stream, buf).await;
        if n == 0 {
            return;
        }
    }
}
