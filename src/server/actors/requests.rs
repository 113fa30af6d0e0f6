//! HTTP requests to actors (PROTOCOL §7b), as the actor's worker tracks
//! them: opened by a client's task once the actor runs, their body
//! forwarded within the runner's credit (its first window kept, so that a
//! request that has to go to the actor's next runner can be sent again),
//! and what becomes of them when the actor moves or is given up.
//!
//! A request is replayed under a new `req_id` when its response had not
//! started: after a graceful move (the runner cancelled it unhandled) any
//! request, after a failover only idempotent ones (the dead instance may
//! have acted on it) — and only if its body is wholly held. Otherwise the
//! client gets 503 with `Retry-After` (not handled) or 502
//! `outcome_unknown` (maybe handled). A started response is cut.

use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};

use super::actor::{Actor, ActorState};
use super::exchange::{Exchange, Outcome};
use super::{Actors, Unavailable};
use crate::http::forward::is_idempotent;
use crate::server::conn::control::ConnControl;
use crate::server::tunnels::Tunnel;
use crate::tunnel::codec::limits;
use crate::tunnel::{Frame, HttpRequest};

/// The largest `HttpBody` piece sent, so one request does not hold up the
/// tunnel's other traffic.
pub(crate) const MAX_PIECE: usize = 64 * 1024;

/// What the runner is told about a client's request.
pub(crate) struct HttpOpen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, Bytes)>,
    pub peer: SocketAddr,
    /// A body follows (`HttpBody` frames, then `HttpEnd`).
    pub body: bool,
}

/// Where the actor's answer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    None,
    Final { body: bool, ended: bool },
}

/// A request in flight, by its current `req_id`.
pub(super) struct Flight {
    pub exchange: Rc<Exchange>,
    pub actor: Rc<Actor>,
    pub request: HttpOpen,
    /// The request body forwarded so far while it fits the initial credit
    /// (what a replay sends again); `None` once it does not, or no body.
    pub held: Option<BytesMut>,
    pub body_ended: bool,
    /// The tunnel it was sent to, under its current `req_id` (`None`:
    /// held for the actor's next runner). Its credit and cancel go there
    /// alone, and only while the actor is still behind it.
    pub sent_to: Option<Weak<Tunnel>>,
    pub answer: Answer,
    /// Response body bytes the runner sent, and the credit it was given.
    pub received: u64,
    pub granted: u64,
}

impl Flight {
    /// Whether it can be sent whole to another runner.
    fn replayable(&self) -> bool {
        !self.request.body || self.held.is_some()
    }

    /// Sent to a runner (not held for the next one).
    pub(super) fn sent(&self) -> bool {
        self.sent_to.is_some()
    }

    /// Whether it was sent to `tunnel`.
    pub(super) fn went_to(&self, tunnel: &Rc<Tunnel>) -> bool {
        self.sent_to
            .as_ref()
            .is_some_and(|t| std::ptr::eq(t.as_ptr(), Rc::as_ptr(tunnel)))
    }

    /// The tunnel its frames go to: the one it was sent to, while the actor
    /// is still behind it.
    pub(super) fn tunnel(&self) -> Option<Rc<Tunnel>> {
        let t = self.sent_to.as_ref()?.upgrade()?;
        self.actor.is_on(&t).then_some(t)
    }

    /// The actor's final response head arrived: the request will never be
    /// sent again, so the body kept for that goes.
    pub(super) fn answered(&mut self, body: bool) {
        self.answer = Answer::Final { body, ended: !body };
        self.held = None;
    }
}

impl Actors {
    /// Sends a client's request to its running actor; `NoHttp` if the
    /// actor's runner did not announce HTTP.
    pub fn http_open(
        &self,
        actor: &Rc<Actor>,
        request: HttpOpen,
        exchange: Rc<Exchange>,
    ) -> Result<(), Unavailable> {
        let tunnel = actor
            .tunnel()
            .filter(|_| actor.state() == ActorState::Running);
        let Some(tunnel) = tunnel else {
            return Err(Unavailable::StartFailed {
                reason: "the actor stopped before the request reached it".into(),
            });
        };
        if !tunnel.takes_http() {
            return Err(Unavailable::NoHttp);
        }
        let req_id = self.ids.fresh();
        exchange.set_req_id(req_id);
        exchange.reset_credit(limits::HTTP_INITIAL_CREDIT, 0);
        tunnel.send(&request_frame(req_id, actor, &request));
        actor.touch(self.clock.get());
        actor.add_request();
        let flight = Flight {
            held: request.body.then(BytesMut::new),
            exchange,
            actor: actor.clone(),
            request,
            body_ended: false,
            sent_to: Some(Rc::downgrade(&tunnel)),
            answer: Answer::None,
            received: 0,
            granted: limits::HTTP_INITIAL_CREDIT,
        };
        self.requests.borrow_mut().insert(req_id, flight);
        Ok(())
    }

    /// Forwards a piece of the request body (at most the credit left).
    pub fn http_body(&self, exchange: &Exchange, data: Bytes) {
        let mut requests = self.requests.borrow_mut();
        let Some(f) = requests.get_mut(&exchange.req_id()) else {
            return;
        };
        exchange.note_sent(data.len() as u64);
        self.stats
            .http_bytes_in
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        let fits = |h: &BytesMut| h.len() + data.len() <= limits::HTTP_INITIAL_CREDIT as usize;
        match f.held.as_mut() {
            Some(h) if fits(h) => h.extend_from_slice(&data),
            _ => f.held = None,
        }
        if let Some(t) = f.tunnel() {
            f.actor.touch(self.clock.get());
            send_body(&t, exchange.req_id(), &data);
        }
    }

    /// Whether the request's runner is congested (`runners.max_send_queue_bytes`
    /// queued for it): its body waits, and `control` is poked when it is not.
    pub fn http_congested(&self, exchange: &Exchange, control: &Rc<ConnControl>) -> bool {
        let requests = self.requests.borrow();
        let Some(t) = requests
            .get(&exchange.req_id())
            .and_then(|f| f.actor.tunnel())
        else {
            return false;
        };
        if !t.is_congested() {
            return false;
        }
        t.wait_until_uncongested(control);
        true
    }

    /// The request body is complete.
    pub fn http_end(&self, exchange: &Exchange) {
        let mut requests = self.requests.borrow_mut();
        if let Some(f) = requests.get_mut(&exchange.req_id()) {
            f.body_ended = true;
            if let Some(t) = f.tunnel() {
                t.send(&Frame::HttpEnd {
                    req_id: exchange.req_id(),
                });
            }
        }
    }

    /// The client took `n` more bytes of the response: the runner may send them.
    pub fn http_grant(&self, exchange: &Exchange, n: u64) {
        let mut requests = self.requests.borrow_mut();
        let Some(f) = requests.get_mut(&exchange.req_id()) else {
            return;
        };
        f.granted = f.granted.saturating_add(n);
        if let Some(t) = f.tunnel().filter(|_| n > 0) {
            t.send(&Frame::HttpCredit {
                req_id: exchange.req_id(),
                bytes: n,
            });
        }
    }

    /// The client's task is done with the request; `cancel`: the runner is
    /// told to stop working on it, and why.
    pub fn http_close(&self, exchange: &Exchange, cancel: Option<&str>) {
        let Some(f) = self.forget_request(exchange.req_id()) else {
            return;
        };
        if let (Some(reason), Some(t)) = (cancel, f.tunnel()) {
            t.send(&Frame::HttpCancel {
                req_id: exchange.req_id(),
                reason: reason.to_owned(),
            });
        }
    }

    pub(super) fn forget_request(&self, req_id: u64) -> Option<Flight> {
        let f = self.requests.borrow_mut().remove(&req_id)?;
        f.actor.remove_request();
        Some(f)
    }

    /// Ends a request with `outcome` (the client's task writes it).
    pub(super) fn end_request(&self, req_id: u64, outcome: Outcome) {
        if let Some(f) = self.forget_request(req_id) {
            f.exchange.finish_with(outcome);
        }
    }

    /// The ids of the requests to `actor`.
    fn requests_of(&self, actor: &Rc<Actor>) -> Vec<u64> {
        let requests = self.requests.borrow();
        let of = |(id, f): (&u64, &Flight)| Rc::ptr_eq(&f.actor, actor).then_some(*id);
        requests.iter().filter_map(of).collect()
    }

    /// A request the runner gave back unhandled (its actor is stopping):
    /// held for the next runner if it can be sent whole, else 503.
    pub(super) fn hold_for_replay(&self, req_id: u64) {
        let mut requests = self.requests.borrow_mut();
        let Some(f) = requests.get_mut(&req_id) else {
            return;
        };
        if f.replayable() {
            f.sent_to = None;
            // No more body until it is sent again.
            let sent = f.held.as_ref().map_or(0, |h| h.len() as u64);
            f.exchange.reset_credit(sent, sent);
            return;
        }
        drop(requests);
        self.end_request(req_id, moved_unhandled());
    }

    /// The actor left its runner (failover, stop, lost tunnel): started
    /// responses are cut, unanswered requests replayed or answered.
    pub(super) fn requests_left_runner(&self, actor: &Rc<Actor>) {
        for req_id in self.requests_of(actor) {
            let (answer, sent, idempotent) = match self.requests.borrow().get(&req_id) {
                Some(f) => (f.answer, f.sent(), is_idempotent(&f.request.method)),
                None => continue,
            };
            match answer {
                Answer::Final { ended: true, .. } => {}
                Answer::Final { .. } => self.end_request(req_id, Outcome::Cut),
                Answer::None if !sent => {}
                // The dead instance may have acted on it.
                Answer::None if !idempotent => self.end_request(req_id, outcome_unknown()),
                Answer::None => self.hold_for_replay(req_id),
            }
        }
    }

    /// The actor runs on a new runner: held requests go to it, each under
    /// a new `req_id`, with the body kept so far.
    pub(super) fn resend_requests(&self, actor: &Rc<Actor>) {
        let Some(tunnel) = actor.tunnel() else { return };
        if !tunnel.takes_http() {
            // Its new runner takes no HTTP: the held requests cannot follow.
            for req_id in self.requests_of(actor) {
                let held = self
                    .requests
                    .borrow()
                    .get(&req_id)
                    .is_some_and(|f| !f.sent());
                if held {
                    self.end_request(req_id, no_http());
                }
            }
            return;
        }
        for old in self.requests_of(actor) {
            let mut requests = self.requests.borrow_mut();
            // Only held requests move; the others (a response the old
            // runner sent whole, still being written) stay as they are.
            if requests.get(&old).is_none_or(Flight::sent) {
                continue;
            }
            let Some(mut f) = requests.remove(&old) else {
                continue;
            };
            let req_id = self.ids.fresh();
            f.exchange.set_req_id(req_id);
            f.sent_to = Some(Rc::downgrade(&tunnel));
            f.answer = Answer::None;
            (f.received, f.granted) = (0, limits::HTTP_INITIAL_CREDIT);
            tunnel.send(&request_frame(req_id, actor, &f.request));
            let held = f.held.as_ref().map_or(0, |h| h.len() as u64);
            if let Some(h) = &f.held {
                send_body(&tunnel, req_id, h);
            }
            if f.body_ended {
                tunnel.send(&Frame::HttpEnd { req_id });
            }
            f.exchange.reset_credit(limits::HTTP_INITIAL_CREDIT, held);
            requests.insert(req_id, f);
            self.stats.http_replays.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The actor was given up: its requests end, with `reason` if no
    /// response had started.
    pub(super) fn abort_requests(&self, actor: &Rc<Actor>, reason: &str) {
        for req_id in self.requests_of(actor) {
            let started = self
                .requests
                .borrow()
                .get(&req_id)
                .is_some_and(|f| f.answer != Answer::None);
            let outcome = match started {
                true => Outcome::Cut,
                false => Outcome::Refused {
                    status: 503,
                    kind: "start_failed",
                    reason: reason.to_owned(),
                    retry: false,
                },
            };
            self.end_request(req_id, outcome);
        }
    }
}

/// Not handled, and could not be sent again whole: the client may retry.
fn moved_unhandled() -> Outcome {
    Outcome::Refused {
        status: 503,
        kind: "moved",
        reason: "the actor moved before answering; the request was not handled".into(),
        retry: true,
    }
}

/// The actor moved to a runner that does not take HTTP.
fn no_http() -> Outcome {
    Outcome::Refused {
        status: 501,
        kind: "no_http",
        reason: "the actor's runner does not take HTTP requests".into(),
        retry: false,
    }
}

/// Maybe handled by an instance that died: a 503 would say it was not.
fn outcome_unknown() -> Outcome {
    Outcome::Refused {
        status: 502,
        kind: "outcome_unknown",
        reason: "the actor's runner failed while handling the request".into(),
        retry: false,
    }
}

fn request_frame(req_id: u64, actor: &Actor, r: &HttpOpen) -> Frame {
    Frame::HttpRequest(HttpRequest {
        req_id,
        actor_id: actor.id(),
        method: r.method.clone(),
        path: r.path.clone(),
        query: r.query.clone(),
        headers: r.headers.clone(),
        peer: r.peer.to_string(),
        body: r.body,
    })
}

/// `data` as `HttpBody` frames of at most `MAX_PIECE` bytes.
fn send_body(tunnel: &crate::server::tunnels::Tunnel, req_id: u64, data: &[u8]) {
    for piece in data.chunks(MAX_PIECE) {
        tunnel.send_http_body(req_id, piece);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flight() -> Flight {
        let actor = Actor::new(
            "default",
            "chat",
            &["lobby".into()],
            "default".into(),
            std::time::Instant::now(),
            1024,
            Default::default(),
        );
        Flight {
            exchange: Rc::new(Exchange::new()),
            actor: Rc::new(actor),
            request: HttpOpen {
                method: "POST".into(),
                path: "/".into(),
                query: String::new(),
                headers: vec![],
                peer: "127.0.0.1:1".parse().unwrap(),
                body: true,
            },
            held: Some(BytesMut::from(&b"kept for a replay"[..])),
            body_ended: false,
            sent_to: None,
            answer: Answer::None,
            received: 0,
            granted: limits::HTTP_INITIAL_CREDIT,
        }
    }

    fn tunnel(key: &str) -> Rc<Tunnel> {
        use crate::server::conn::registry::Registry;
        use crate::server::tunnels::load::RunnerLoad;
        let registry = Rc::new(Registry::new(Rc::default()));
        let control = registry.register(std::time::Instant::now()).control.clone();
        let load = std::sync::Arc::new(RunnerLoad::new(10));
        let names = vec!["chat".into()];
        Rc::new(Tunnel::new(
            key.into(),
            "default".into(),
            names,
            control,
            1 << 20,
            load,
        ))
    }

    fn start_on(f: &Flight, t: &Rc<Tunnel>) {
        let now = std::time::Instant::now();
        let slot = crate::server::tunnels::Reserved::on(t).expect("room");
        f.actor.begin_starting(1, slot, now, now);
        f.actor.mark_running(now);
    }

    /// A request kept across a move (its response sent whole) has nothing
    /// to say to the actor's next runner: that one never had it.
    #[test]
    fn a_request_speaks_only_to_the_tunnel_it_went_to() {
        let (a, b) = (tunnel("a"), tunnel("b"));
        let mut f = flight();
        assert!(f.tunnel().is_none(), "held: nowhere");
        start_on(&f, &a);
        f.sent_to = Some(Rc::downgrade(&a));
        assert!(f.tunnel().is_some_and(|t| Rc::ptr_eq(&t, &a)));
        assert!(f.went_to(&a) && !f.went_to(&b));
        start_on(&f, &b);
        assert!(f.tunnel().is_none(), "the actor moved on to b");
    }

    #[test]
    fn the_body_kept_for_a_replay_goes_once_the_response_head_arrives() {
        let mut f = flight();
        assert!(f.replayable());
        f.answered(true);
        assert_eq!(
            f.answer,
            Answer::Final {
                body: true,
                ended: false
            }
        );
        assert!(f.held.is_none(), "no replay is possible any more");
        let mut f = flight();
        f.answered(false);
        assert_eq!(
            f.answer,
            Answer::Final {
                body: false,
                ended: true
            }
        );
        assert!(f.held.is_none());
    }
}
