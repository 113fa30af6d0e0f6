//! The admin listener: operator endpoints. For now only `GET /healthz`.

use std::rc::Rc;
use std::time::Instant;

use monoio::net::TcpStream;

use super::io::{linger_close, read_before, write_all_or_stall, ReadOutcome};
use super::worker::Worker;
use crate::http::response::write_response;
use crate::http::{HeadReader, Status};

pub(crate) async fn serve_admin(worker: Rc<Worker>, mut stream: TcpStream) {
    let cfg = &worker.config.client;
    let deadline = Instant::now() + cfg.handshake_timeout;
    let mut reader = HeadReader::new(cfg.max_header_bytes, cfg.max_headers);
    let mut buf = worker.pool.take();
    let mut out = worker.pool.take();
    loop {
        match reader.poll(&buf) {
            Ok(Some((head, _))) => {
                let (status, allow, body) = match (head.method.as_str(), head.target.as_str()) {
                    ("GET", "/healthz") => (Status::OK, None, "ok\n"),
                    (_, "/healthz") => (
                        Status::METHOD_NOT_ALLOWED,
                        Some(("Allow", "GET")),
                        "use GET\n",
                    ),
                    _ => (Status::NOT_FOUND, None, "no such path\n"),
                };
                write_response(&mut out, status, allow.as_slice(), body);
                break;
            }
            Ok(None) => {}
            Err(e) => {
                write_response(&mut out, e.status(), &[], e.reason());
                break;
            }
        }
        let (outcome, b) = read_before(&mut stream, buf, 1024, deadline).await;
        buf = b;
        match outcome {
            ReadOutcome::Data(_) => {}
            ReadOutcome::TimedOut => {
                write_response(
                    &mut out,
                    Status::REQUEST_TIMEOUT,
                    &[],
                    "request head timed out\n",
                );
                break;
            }
            ReadOutcome::Eof | ReadOutcome::Failed(_) => return,
        }
    }
    if let Ok(out) = write_all_or_stall(&mut stream, out, cfg.send_timeout).await {
        worker.pool.give_back(out);
        linger_close(stream, buf, cfg.close_timeout).await;
    }
}
