//! `POST /actors/{name}/{key…}/publish`: the body, as one message, to every
//! open connection of the actor, without waking it.

use crate::server::conn::stream::Stream;
use bytes::BytesMut;
use serde::Serialize;
use tracing::info;

use super::body::read_body;
use super::handlers::Asker;
use super::AdminSide;
use crate::http::route::ActorPath;
use crate::http::{RequestHead, Status};
use crate::server::conn::reply::Refusal;
use crate::tunnel::MessageKind;

pub(super) async fn answer(
    side: &AdminSide,
    stream: &mut Stream,
    buf: &mut BytesMut,
    head: &RequestHead,
    actor: &ActorPath,
    by: &Asker<'_>,
) -> Option<Refusal> {
    let limit = side.env.config().client.max_message_bytes;
    let limit = (limit, "client.max_message_bytes");
    let body = match read_body(side, stream, buf, head, limit).await {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let Some(kind) = message_kind(head, &body) else {
        let reason = "a text message must be UTF-8 (send application/octet-stream for binary)";
        return Some(Refusal::new(Status::BAD_REQUEST, reason));
    };
    let only = only_conns(actor.query.as_deref().unwrap_or(""));
    let bytes = body.len();
    let delivered = side.actors.publish(actor, kind, body, &only);
    let (ns, name, key) = (&actor.ns, &actor.name, &actor.key);
    info!(by = %by.caller, peer = %by.peer, namespace = %ns, actor = %name, ?key, bytes, delivered, "admin: published to actor");
    #[derive(Serialize)]
    struct Delivered {
        delivered: usize,
    }
    Some(Refusal::json(Status::OK, &Delivered { delivered }))
}

/// `application/octet-stream` is binary; anything else must be UTF-8 text.
fn message_kind(head: &RequestHead, body: &[u8]) -> Option<MessageKind> {
    let binary = head
        .header("content-type")
        .is_some_and(|t| t.starts_with(b"application/octet-stream"));
    if binary {
        Some(MessageKind::Binary)
    } else {
        std::str::from_utf8(body)
            .is_ok()
            .then_some(MessageKind::Text)
    }
}

/// `conn=ID` entries of the query: publish to these connections only.
fn only_conns(query: &str) -> Vec<u64> {
    query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("conn="))
        .filter_map(|v| v.parse().ok())
        .collect()
}
