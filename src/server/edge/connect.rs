//! Getting a client's actor running and its runner to accept the client,
//! all within `actors.start_timeout` (for an actor of a serverless pool,
//! at least its pool's `start_timeout` and a margin: `Actors::start_wait`).

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

use super::EdgeSide;
use crate::http::credential::strip_token_query;
use crate::http::route::ActorPath;
use crate::http::RequestHead;
use crate::server::actors::{OpenAnswer, OpenRequest, Unavailable};
use crate::server::conn::admission::Ticket;
use crate::server::conn::control::ConnControl;
use crate::tunnel::codec::limits;
use crate::ws::handshake::Upgrade;

/// Headers passed on to the runner with a client connection. Not
/// `X-Forwarded-For` or `X-Real-IP`: a client sets them to whatever it
/// likes; the runner gets the address the gateway saw instead (`peer`).
const FORWARDED_HEADERS: &[&str] = &["origin", "user-agent", "cookie", "authorization"];

/// The connection id and the subprotocol the runner chose, or why not.
pub(super) async fn connect_actor(
    edge: &EdgeSide,
    actor: &ActorPath,
    request: OpenRequest,
    control: Rc<ConnControl>,
    ticket: Option<Ticket>,
) -> Result<(u64, Option<String>), Unavailable> {
    // actors.start_timeout, or a serverless pool's start_timeout and a margin.
    let deadline = Instant::now() + edge.actors.start_wait(&actor.ns, &actor.name);
    let creator = request.peer.ip();
    let instance = edge.actors.get_or_start(actor, creator)?;
    if let Some(ready) = edge.actors.when_ready(&instance) {
        match ready.wait_until(deadline).await {
            Some(Ok(())) => {}
            Some(Err(reason)) => return Err(Unavailable::StartFailed { reason }),
            None => return Err(Unavailable::StartTimeout),
        }
    }
    edge.actors.has_room(&instance)?;
    let (conn_id, answer) = edge.actors.open(&instance, control, request, ticket);
    match answer.wait_until(deadline).await {
        Some(OpenAnswer::Accepted { protocol }) => Ok((conn_id, protocol)),
        Some(OpenAnswer::Rejected { status, reason }) => {
            Err(Unavailable::Rejected { status, reason })
        }
        Some(OpenAnswer::Refused(why)) => Err(why),
        Some(OpenAnswer::GaveUp { reason }) => Err(Unavailable::StartFailed { reason }),
        None => {
            edge.actors.abandon_open(conn_id);
            Err(Unavailable::OpenTimeout)
        }
    }
}

/// What the runner is told about the connection.
/// `drop_authorization`: the header carried the gateway's own token.
pub(super) fn open_request(
    head: &RequestHead,
    upgrade: &Upgrade,
    peer: SocketAddr,
    drop_authorization: bool,
) -> OpenRequest {
    // A token in the query is the gateway's: the runner never sees it.
    let target = strip_token_query(&head.target);
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (target.clone().into_owned(), String::new()),
    };
    // Never more than a ConnOpen may carry (client.max_headers may be larger).
    let headers = head
        .headers
        .iter()
        .filter(|(n, _)| FORWARDED_HEADERS.iter().any(|f| n.eq_ignore_ascii_case(f)))
        .filter(|(n, _)| !(drop_authorization && n.eq_ignore_ascii_case("authorization")))
        .take(limits::HEADERS as usize)
        .map(|(n, v)| (n.to_ascii_lowercase(), Bytes::copy_from_slice(v)))
        .collect();
    OpenRequest {
        path,
        query,
        headers,
        protocols: upgrade.protocols.clone(),
        peer,
    }
}
