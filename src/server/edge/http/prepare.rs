//! A plain HTTP request to an actor, checked from its head alone before
//! anything starts (PROTOCOL §7b): the client's credential, the body's
//! framing and size, and the head within what a tunnel carries. What is
//! refused here is refused as a WebSocket would be (404/401/403), or 400,
//! 413, 431, 501 for what only a request with a body can get wrong.

use std::net::SocketAddr;

use crate::config::Config;
use crate::http::body::{request_framing, BodyLimits, Framing};
use crate::http::credential::strip_token_query;
use crate::http::forward::{expects_continue, keeps_alive, request_headers};
use crate::http::route::{ActorPath, HttpTarget};
use crate::http::{RequestHead, Status};
use crate::server::actors::HttpOpen;
use crate::server::conn::reply::Refusal;
use crate::server::edge::authorize::authorize;
use crate::tunnel::codec::limits;

/// A request that may go to its actor.
pub(super) struct Prepared {
    pub actor: ActorPath,
    pub open: HttpOpen,
    /// Its body's framing (`Length(0)`: none).
    pub framing: Framing,
    pub limits: BodyLimits,
    /// Answer `100 Continue` before reading the body.
    pub continue_first: bool,
    /// The connection may serve another request after this one.
    pub keep_alive: bool,
    pub head_request: bool,
    pub version: u8,
}

pub(super) fn prepare(
    config: &Config,
    head: &RequestHead,
    target: HttpTarget,
    peer: SocketAddr,
) -> Result<Prepared, Refusal> {
    let HttpTarget { actor, path } = target;
    let admitted = authorize(config, head, &actor)?;
    let framing = request_framing(head).map_err(|e| Refusal::new(e.status(), e.reason()))?;
    let max = config.client.max_request_body_bytes as u64;
    if matches!(framing, Framing::Length(n) if n > max) {
        let reason = "request body over client.max_request_body_bytes";
        return Err(Refusal::new(Status::PAYLOAD_TOO_LARGE, reason));
    }
    if head.method.len() > limits::HTTP_METHOD {
        return Err(Refusal::new(
            Status::NOT_IMPLEMENTED,
            "method not implemented",
        ));
    }
    let query = query_without_token(&actor);
    if path.len() > limits::HTTP_TARGET || query.len() > limits::HTTP_TARGET {
        let reason = "request target longer than an actor may receive";
        return Err(Refusal::new(Status::HEADER_FIELDS_TOO_LARGE, reason));
    }
    let headers = request_headers(head, admitted.consumed_authorization())
        .map_err(|r| Refusal::new(r.status, r.reason))?;
    let body = framing != Framing::Length(0);
    Ok(Prepared {
        open: HttpOpen {
            method: head.method.clone(),
            path,
            query,
            headers,
            peer,
            body,
        },
        actor,
        framing,
        limits: BodyLimits::with_max_body(max),
        continue_first: body && expects_continue(head),
        keep_alive: keeps_alive(head),
        head_request: head.method == "HEAD",
        version: head.version,
    })
}

/// The query the actor gets: a client token in it is the gateway's.
fn query_without_token(actor: &ActorPath) -> String {
    let Some(q) = actor.query.as_deref() else {
        return String::new();
    };
    let stripped = strip_token_query(&format!("/?{q}")).into_owned();
    stripped
        .split_once('?')
        .map(|(_, q)| q.to_owned())
        .unwrap_or_default()
}
