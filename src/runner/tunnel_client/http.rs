//! HTTP frames from the gateway (PROTOCOL §7b) handed to the actors: a
//! request, its body (each piece handed over is credit given back: the
//! actor has read it), its end, a cancel, and credit for a response.

use bytes::BytesMut;

use super::TunnelState;
use crate::runner::actor::{Actor, Ctx};
use crate::runner::http::HttpRequest;
use crate::tunnel::{Frame, HttpRequest as RequestFrame};

impl TunnelState {
    pub(super) fn on_http_frame(&mut self, frame: Frame, out: &mut BytesMut) {
        if !self.http {
            return; // a gateway that did not offer HTTP sends none
        }
        match frame {
            Frame::HttpRequest(r) => self.on_http_request(r, out),
            Frame::HttpBody { req_id, data } => {
                let Some(actor_id) = self.io.requests.actor_of(req_id) else {
                    return;
                };
                self.with_actor(actor_id, out, |a, ctx| {
                    a.on_request_body(ctx, req_id, &data)
                });
                let bytes = data.len() as u64;
                crate::tunnel::encode_frame(out, &Frame::HttpCredit { req_id, bytes });
            }
            Frame::HttpEnd { req_id } => {
                if let Some(actor_id) = self.io.requests.actor_of(req_id) {
                    self.with_actor(actor_id, out, |a, ctx| a.on_request_end(ctx, req_id));
                }
            }
            Frame::HttpCancel { req_id, .. } => {
                let actor_id = self.io.requests.actor_of(req_id);
                if let Some(actor_id) = actor_id.filter(|_| self.io.requests.remove(req_id)) {
                    self.with_actor(actor_id, out, |a, ctx| a.on_request_cancelled(ctx, req_id));
                }
            }
            Frame::HttpCredit { req_id, bytes } => {
                let Some(actor_id) = self.io.requests.actor_of(req_id) else {
                    return;
                };
                if self.io.requests.credit(out, req_id, bytes) {
                    self.with_actor(actor_id, out, |a, ctx| a.on_response_writable(ctx, req_id));
                }
            }
            _ => {}
        }
    }

    fn on_http_request(&mut self, r: RequestFrame, out: &mut BytesMut) {
        let req_id = r.req_id;
        self.io.requests.insert(req_id, r.actor_id);
        if !self.actors.contains_key(&r.actor_id) {
            // Not (or no longer) here: the gateway sends it where it runs.
            return self
                .io
                .requests
                .cancel(out, req_id, "the actor is not running here");
        }
        let request = HttpRequest {
            id: req_id,
            method: r.method,
            path: r.path,
            query: r.query,
            headers: r.headers,
            peer: r.peer.parse().ok(),
            has_body: r.body,
        };
        self.with_actor(r.actor_id, out, |a, ctx| a.on_request(ctx, &request));
    }

    /// Runs a handler of actor `actor_id` (its state then needs saving).
    fn with_actor(
        &mut self,
        actor_id: u64,
        out: &mut BytesMut,
        f: impl FnOnce(&mut dyn Actor, &mut Ctx<'_>),
    ) {
        let Some(slot) = self.actors.get_mut(&actor_id) else {
            return;
        };
        let mut ctx = Ctx::new(actor_id, &slot.conns, out, &mut self.io);
        f(slot.actor.as_mut(), &mut ctx);
        self.dirty.insert(actor_id);
    }
}
