//! HTTP frames from a runner (PROTOCOL §7b): the actor's response head,
//! body and end, its cancels and its credit for the request body. A frame
//! for a request the gateway does not know (finished or cancelled
//! meanwhile, or not behind this tunnel) is ignored; one the rules do not
//! allow for a request it knows closes the tunnel (1002).

use std::rc::Rc;

use bytes::Bytes;

use super::actor::ActorState;
use super::exchange::{Outcome, ResponseHead};
use super::requests::{Answer, Flight};
use super::Actors;
use crate::server::tunnels::Tunnel;
use crate::tunnel::{Frame, HttpResponse, TunnelError};

type Checked = Result<(), TunnelError>;

impl Actors {
    /// Handles an HTTP frame from `tunnel`'s runner.
    pub(super) fn on_http_frame(&self, tunnel: &Rc<Tunnel>, frame: Frame) -> Checked {
        if !tunnel.takes_http() {
            return Err(TunnelError(
                "HTTP frame from a runner that did not announce HTTP",
            ));
        }
        match frame {
            Frame::HttpResponse(r) => self.on_http_response(tunnel, r),
            Frame::HttpBody { req_id, data } => self.on_http_body(tunnel, req_id, data),
            Frame::HttpEnd { req_id } => self.on_http_end(tunnel, req_id),
            Frame::HttpCancel { req_id, reason } => {
                self.on_http_cancel(tunnel, req_id, reason);
                Ok(())
            }
            Frame::HttpCredit { req_id, bytes } => self.with_flight(tunnel, req_id, |f| {
                f.exchange.add_credit(bytes);
                Ok(())
            }),
            _ => Err(TunnelError("frame type not allowed from a runner")),
        }
    }

    /// Runs `f` on the request `req_id` if its actor is behind `tunnel`
    /// and it was sent there.
    fn with_flight(
        &self,
        tunnel: &Rc<Tunnel>,
        req_id: u64,
        f: impl FnOnce(&mut Flight) -> Checked,
    ) -> Checked {
        let mut requests = self.requests.borrow_mut();
        match requests.get_mut(&req_id) {
            Some(flight) if flight.went_to(tunnel) && flight.actor.is_on(tunnel) => {
                flight.actor.touch(self.clock.get());
                f(flight)
            }
            _ => Ok(()),
        }
    }

    fn on_http_response(&self, tunnel: &Rc<Tunnel>, r: HttpResponse) -> Checked {
        self.with_flight(tunnel, r.req_id, |f| {
            if f.answer != Answer::None {
                return Err(TunnelError("a second final HTTP response head"));
            }
            if (100..200).contains(&r.status) {
                // Interim: the gateway answers 100-continue itself, and the
                // others (103 hints) are not worth a client's round trip.
                return match r.body {
                    true => Err(TunnelError("an interim HTTP response with a body")),
                    false => Ok(()),
                };
            }
            f.answered(r.body);
            f.exchange.set_head(ResponseHead {
                status: r.status,
                headers: r.headers,
                body: r.body,
            });
            if !r.body {
                f.exchange.end();
            }
            Ok(())
        })
    }

    fn on_http_body(&self, tunnel: &Rc<Tunnel>, req_id: u64, data: Bytes) -> Checked {
        self.with_flight(tunnel, req_id, |f| {
            if f.answer
                != (Answer::Final {
                    body: true,
                    ended: false,
                })
            {
                return Err(TunnelError("HTTP body the response does not allow"));
            }
            f.received = f.received.saturating_add(data.len() as u64);
            if f.received > f.granted {
                return Err(TunnelError("HTTP body beyond its credit"));
            }
            f.exchange.push_piece(data);
            Ok(())
        })
    }

    fn on_http_end(&self, tunnel: &Rc<Tunnel>, req_id: u64) -> Checked {
        self.with_flight(tunnel, req_id, |f| {
            if f.answer
                != (Answer::Final {
                    body: true,
                    ended: false,
                })
            {
                return Err(TunnelError("HTTP end the response does not allow"));
            }
            f.answer = Answer::Final {
                body: true,
                ended: true,
            };
            f.exchange.end();
            Ok(())
        })
    }

    /// The runner gives a request up. Before a response head: while its
    /// actor stops (a graceful move) it was not handled and goes to the next
    /// runner; otherwise the client gets 502. After: the response is cut.
    fn on_http_cancel(&self, tunnel: &Rc<Tunnel>, req_id: u64, reason: String) {
        let (answer, stopping) = {
            let requests = self.requests.borrow();
            match requests.get(&req_id) {
                Some(f) if f.went_to(tunnel) && f.actor.is_on(tunnel) => {
                    (f.answer, matches!(f.actor.state(), ActorState::Stopping(_)))
                }
                _ => return,
            }
        };
        match answer {
            Answer::Final { ended: true, .. } => {}
            Answer::Final { .. } => self.end_request(req_id, Outcome::Cut),
            Answer::None if stopping => self.hold_for_replay(req_id),
            Answer::None => {
                let reason = super::dispatch::bounded(reason);
                let outcome = Outcome::Refused {
                    status: 502,
                    kind: "cancelled",
                    reason,
                    retry: false,
                };
                self.end_request(req_id, outcome);
            }
        }
    }
}
