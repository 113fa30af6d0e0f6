//! The admin listener: operator endpoints.
//!
//! - `GET /healthz` → 200.
//! - `POST /actors/{name}/{key…}/publish[?conn=ID…]` with
//!   `Authorization: Bearer <admin.token>`: delivers the body as one message
//!   to every open connection of that actor — running or hibernated — without
//!   starting it. Body `text/*` (or no type) is a text message (must be
//!   UTF-8); `application/octet-stream` a binary one. Answers
//!   `{"delivered":N}`. The request is served by the actor's home worker.

use std::rc::Rc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use monoio::net::TcpStream;

use super::client::{actor_home, refuse, Refusal};
use super::handoff::{Handoff, Listener};
use super::io::{detach_fd, read_before, ReadOutcome};
use super::worker::Worker;
use crate::http::route::{route, ActorPath, Route};
use crate::http::{RequestHead, Status};
use crate::tunnel::MessageKind;

/// Serves an admin request whose head has been read (possibly on another worker).
pub(crate) async fn admin_request(
    worker: Rc<Worker>,
    stream: TcpStream,
    buf: BytesMut,
    head: RequestHead,
) {
    let path = head
        .target
        .split_once('?')
        .map_or(head.target.as_str(), |(p, _)| p);
    if path == "/healthz" {
        return match head.method.as_str() {
            "GET" => answer(&worker, stream, buf, Status::OK, &[], "ok").await,
            _ => {
                answer(
                    &worker,
                    stream,
                    buf,
                    Status::METHOD_NOT_ALLOWED,
                    &[("Allow", "GET")],
                    "use GET",
                )
                .await
            }
        };
    }
    let Some(actor) = publish_target(&head.target) else {
        return answer(&worker, stream, buf, Status::NOT_FOUND, &[], "no such path").await;
    };
    if head.method != "POST" {
        return answer(
            &worker,
            stream,
            buf,
            Status::METHOD_NOT_ALLOWED,
            &[("Allow", "POST")],
            "use POST",
        )
        .await;
    }
    let token = &worker.config.admin.token;
    if token.is_empty() {
        return answer(
            &worker,
            stream,
            buf,
            Status(403),
            &[],
            "admin.token is not configured: publishing is disabled",
        )
        .await;
    }
    if !head.bearer_is(token) {
        let headers = &[("WWW-Authenticate", "Bearer")];
        return answer(
            &worker,
            stream,
            buf,
            Status::UNAUTHORIZED,
            headers,
            "missing or wrong admin token",
        )
        .await;
    }
    let home = actor_home(&actor, worker.worker_count);
    if home != worker.id {
        let Ok(fd) = detach_fd(stream) else { return };
        let handoff = Handoff {
            fd,
            head,
            leftover: buf,
            listener: Listener::Admin,
        };
        if let Err(back) = worker.handoffs.send(home, handoff) {
            if let Ok(stream) = TcpStream::from_std(std::net::TcpStream::from(back.fd)) {
                answer(
                    &worker,
                    stream,
                    back.leftover,
                    Status::SERVICE_UNAVAILABLE,
                    &[],
                    "gateway overloaded",
                )
                .await;
            }
        }
        return;
    }
    publish(worker, stream, buf, head, actor).await;
}

/// `/actors/{name}/{key…}/publish` → the actor path.
fn publish_target(target: &str) -> Option<ActorPath> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let actor_path = path.strip_suffix("/publish")?;
    let rebuilt = match query {
        Some(q) => format!("{actor_path}?{q}"),
        None => actor_path.to_owned(),
    };
    match route(&rebuilt) {
        Ok(Route::Actor(a)) => Some(a),
        _ => None,
    }
}

async fn publish(
    worker: Rc<Worker>,
    mut stream: TcpStream,
    mut buf: BytesMut,
    head: RequestHead,
    actor: ActorPath,
) {
    let Some(length) = head
        .header("content-length")
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<usize>().ok())
    else {
        return answer(
            &worker,
            stream,
            buf,
            Status(411),
            &[],
            "Content-Length required",
        )
        .await;
    };
    if length > worker.config.client.max_message_bytes {
        return answer(
            &worker,
            stream,
            buf,
            Status(413),
            &[],
            "body larger than client.max_message_bytes",
        )
        .await;
    }
    let deadline = Instant::now() + worker.config.client.handshake_timeout;
    while buf.len() < length {
        let room = length - buf.len();
        let (outcome, b) = read_before(&mut stream, buf, room, deadline).await;
        buf = b;
        match outcome {
            ReadOutcome::Data(_) => {}
            ReadOutcome::TimedOut => {
                return answer(
                    &worker,
                    stream,
                    buf,
                    Status::REQUEST_TIMEOUT,
                    &[],
                    "body timed out",
                )
                .await
            }
            ReadOutcome::Eof | ReadOutcome::Failed(_) => return,
        }
    }
    let body: Bytes = buf.split_to(length).freeze();
    let binary = head
        .header("content-type")
        .is_some_and(|t| t.starts_with(b"application/octet-stream"));
    let kind = if binary {
        MessageKind::Binary
    } else if std::str::from_utf8(&body).is_ok() {
        MessageKind::Text
    } else {
        return answer(
            &worker,
            stream,
            buf,
            Status::BAD_REQUEST,
            &[],
            "a text message must be UTF-8 (send application/octet-stream for binary)",
        )
        .await;
    };
    let only: Vec<u64> = actor
        .query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.strip_prefix("conn="))
        .filter_map(|v| v.parse().ok())
        .collect();
    let delivered = worker
        .mux
        .publish(&actor.name, &actor.key, kind, body, &only);
    let json = format!("{{\"delivered\":{delivered}}}");
    answer(
        &worker,
        stream,
        buf,
        Status::OK,
        &[("Content-Type", "application/json")],
        &json,
    )
    .await;
}

async fn answer(
    worker: &Rc<Worker>,
    stream: TcpStream,
    scratch: BytesMut,
    status: Status,
    headers: &'static [(&'static str, &'static str)],
    body: &str,
) {
    refuse(
        worker,
        stream,
        scratch,
        Refusal {
            status,
            headers,
            reason: body.to_owned(),
        },
    )
    .await;
}
