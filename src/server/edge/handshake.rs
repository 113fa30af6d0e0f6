//! A connection on the client listener, from its request head to its
//! WebSocket session: is it an upgrade to an actor path, can the actor be
//! reached and does its runner accept the connection; then 101 or a refusal.
//!
//! Protocol decisions live in the sans-IO `http` and `ws` modules; this file
//! moves bytes between them and the socket.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use crate::server::conn::stream::Stream;
use bytes::BytesMut;
use tracing::debug;

use super::authorize::authorize;
use super::connect::{connect_actor, open_request};
use super::session::ClientRole;
use super::EdgeSide;
use crate::config::HandshakeErrors;
use crate::http::credential::{TokenSource, TOKEN_PROTOCOL_PREFIX};
use crate::http::response::write_switching_protocols;
use crate::http::route::{route, ActorPath, Route};
use crate::http::{RequestHead, Status};
use crate::server::actors::{self, Unavailable};
use crate::server::conn::admission::Ticket;
use crate::server::conn::io::write_all_or_stall;
use crate::server::conn::reply::{refuse, send_then_linger, Refusal};
use crate::server::conn::session::Session;
use crate::ws::close::encode_close;
use crate::ws::handshake::{validate_upgrade, Upgrade};
use crate::ws::CloseCode;

/// The worker a client's request belongs on: its actor's home worker
/// (anything else is answered where it arrived).
pub(crate) fn home_worker(head: &RequestHead, this: usize, workers: usize) -> usize {
    if let Some(target) = super::http::http_target(head) {
        return actors::home_worker(&target.actor, workers);
    }
    match route(&head.target) {
        Ok(Route::Actor(actor)) => actors::home_worker(&actor, workers),
        _ => this,
    }
}

/// A client connection whose request head has been read.
pub(crate) struct Client {
    pub head: RequestHead,
    /// Its address, as accepted.
    pub peer: SocketAddr,
    /// Its place among `client.max_connections` (given back if it is refused).
    pub ticket: Option<Ticket>,
}

pub(crate) async fn serve_client(
    edge: Rc<EdgeSide>,
    mut stream: Stream,
    buf: BytesMut,
    client: Client,
) {
    if let Some(target) = super::http::http_target(&client.head) {
        // Its own task: nothing of the handshake's waits for it.
        monoio::spawn(super::http::serve_http(edge, stream, buf, client, target));
        return;
    }
    let Client { head, peer, ticket } = client;
    let env = &edge.env;
    let (actor, mut upgrade) = match precheck(&head) {
        Ok(x) => x,
        Err(r) => return turn_away(&edge, stream, buf, r).await,
    };
    let admitted = match authorize(&env.config(), &head, &actor) {
        Ok(a) => a,
        Err(r) => return turn_away(&edge, stream, buf, r).await,
    };
    // The gateway's token entries are not the runner's to see or choose.
    upgrade
        .protocols
        .retain(|p| !p.starts_with(TOKEN_PROTOCOL_PREFIX));
    // Waiting for the actor can take start_timeout: an empty read buffer
    // goes back to the pool meanwhile.
    let buf = if buf.is_empty() {
        env.pool.give_back(buf);
        BytesMut::new()
    } else {
        buf
    };
    let registration = env.registry.register(Instant::now());
    let control = registration.control.clone();
    let request = open_request(&head, &upgrade, peer, admitted.consumed_authorization());
    let (conn_id, protocol) = match connect_actor(&edge, &actor, request, control, ticket).await {
        Ok(ok) => ok,
        Err(u) => {
            drop(registration);
            debug!(actor = ?actor.name, key = ?actor.key, kind = u.kind(), reason = %u.reason(), "client refused");
            return refuse_unavailable(&edge, stream, buf, &upgrade, u).await;
        }
    };
    // A browser that offered subprotocols fails an upgrade that selects
    // none: a token offered as one is selected when the runner chose nothing.
    let protocol = protocol.or_else(|| {
        let c = admitted
            .credential
            .filter(|c| c.source() == TokenSource::Protocol)?;
        Some(format!("{TOKEN_PROTOCOL_PREFIX}{}", c.token()))
    });
    edge.stats.count_handshake(Status::SWITCHING_PROTOCOLS.0);
    let mut out = env.pool.take();
    write_switching_protocols(&mut out, &upgrade.accept_key, protocol.as_deref());
    match write_all_or_stall(&mut stream, out, edge.limits.get().send_timeout).await {
        Ok(out) => env.pool.give_back(out),
        Err(_) => {
            let reason = "connection lost during the handshake";
            return edge
                .actors
                .client_closed(conn_id, CloseCode::ABNORMAL, reason);
        }
    }
    debug!(actor = ?actor.name, key = ?actor.key, conn_id, "client connected");
    // The session is a task of its own so that nothing of the handshake
    // (head, parser, timer) stays allocated for the connection's lifetime.
    let role = ClientRole {
        conn_id,
        next_index: 0,
    };
    monoio::spawn(Session::new(edge.clone(), role).run(stream, buf, registration));
}

/// Answers a request that will not be upgraded, counting its status.
async fn turn_away(edge: &EdgeSide, stream: Stream, buf: BytesMut, r: Refusal) {
    edge.stats.count_handshake(r.status.0);
    refuse(&edge.env, stream, buf, r).await
}

/// Checks that a client request is a WebSocket upgrade to an actor path.
fn precheck(head: &RequestHead) -> Result<(ActorPath, Upgrade), Refusal> {
    let actor = match route(&head.target) {
        Err(bad) => return Err(Refusal::new(bad.status, bad.reason)),
        Ok(Route::Healthz) if head.method == "GET" => return Err(Refusal::new(Status::OK, "ok")),
        Ok(Route::Healthz) => return Err(Refusal::method_not_allowed("GET", "use GET")),
        Ok(Route::NotFound) => return Err(Refusal::new(Status::NOT_FOUND, "no such path")),
        Ok(Route::Actor(actor)) => actor,
    };
    if head.method != "GET" {
        let reason = "WebSocket endpoints accept GET only";
        return Err(Refusal::method_not_allowed("GET", reason));
    }
    let upgrade = validate_upgrade(head).map_err(Refusal::from)?;
    Ok((actor, upgrade))
}

/// The HTTP status that tells a client why its actor cannot be reached.
pub(super) fn status_of(u: &Unavailable) -> Status {
    match u {
        Unavailable::UnknownActor { .. } => Status::NOT_FOUND,
        Unavailable::TooManyNewActors => Status::TOO_MANY_REQUESTS,
        // A runner's status outside 400-599 is its error.
        Unavailable::Rejected { status, .. } if (400..600).contains(status) => Status(*status),
        Unavailable::Rejected { .. } => Status::INTERNAL_ERROR,
        Unavailable::NoHttp => Status::NOT_IMPLEMENTED,
        _ => Status::SERVICE_UNAVAILABLE,
    }
}

/// A refusal as the configuration wants it: an HTTP status, or (for
/// browsers, which see any failed handshake as 1006) an upgrade followed by
/// a close with 4000 + status.
async fn refuse_unavailable(
    edge: &EdgeSide,
    stream: Stream,
    buf: BytesMut,
    upgrade: &Upgrade,
    u: Unavailable,
) {
    let mut refusal = Refusal::new(status_of(&u), u.to_string());
    if matches!(u, Unavailable::Upgrading) {
        refusal.headers = &[("Retry-After", "1")];
    }
    match edge.env.config().client.handshake_errors {
        HandshakeErrors::Http => turn_away(edge, stream, buf, refusal).await,
        HandshakeErrors::Close => {
            // Counted as the refusal it stands for, not as an upgrade.
            edge.stats.count_handshake(refusal.status.0);
            let mut out = edge.env.pool.take();
            write_switching_protocols(&mut out, &upgrade.accept_key, None);
            let code = CloseCode::for_http_status(refusal.status.0);
            encode_close(&mut out, code, &refusal.reason);
            send_then_linger(&edge.env, stream, buf, out).await;
        }
    }
}
