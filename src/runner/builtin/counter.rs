//! `counter`: a number, over WebSockets and HTTP.

use std::collections::HashSet;

use bytes::Bytes;

use crate::runner::actor::{Actor, ConnId, ConnInfo, Ctx, Message, OpenDecision};
use crate::runner::http::{HttpRequest, RequestId, ResponseBody};

/// Keeps a number: `inc` adds one and broadcasts the new value, `get` answers
/// the sender with it. Over HTTP, `GET` (or `HEAD`) answers the value and
/// `POST` adds one (once its body, if any, has arrived) and answers the new
/// value. The number is its durable state.
#[derive(Default)]
pub struct Counter {
    value: i64,
    /// POSTs whose body is still arriving.
    posts: HashSet<RequestId>,
}

impl Counter {
    fn increment(&mut self, ctx: &mut Ctx<'_>) {
        self.value += 1;
        ctx.broadcast(&Message::Text(self.value.to_string()));
    }

    fn answer(&self, ctx: &mut Ctx<'_>, request: RequestId) {
        let body = Bytes::from(format!("{}\n", self.value));
        ctx.respond(request, 200, text_plain(), ResponseBody::Full(body));
    }
}

fn text_plain() -> Vec<(String, Bytes)> {
    vec![("content-type".into(), Bytes::from_static(b"text/plain"))]
}

impl Actor for Counter {
    fn on_open(&mut self, _ctx: &mut Ctx<'_>, _conn: ConnId, _info: &ConnInfo) -> OpenDecision {
        OpenDecision::Accept {
            protocol: None,
            hibernatable: Some(true),
        }
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, message: Message) {
        match message {
            Message::Text(t) if t == "inc" => self.increment(ctx),
            Message::Text(t) if t == "get" => {
                ctx.send(conn, &Message::Text(self.value.to_string()))
            }
            _ => ctx.send(
                conn,
                &Message::Text("counter understands `inc` and `get`".into()),
            ),
        }
    }
    fn save_state(&self) -> Option<Vec<u8>> {
        Some(self.value.to_string().into_bytes())
    }
    fn load_state(&mut self, state: &[u8]) {
        self.value = std::str::from_utf8(state)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
    }

    fn on_request(&mut self, ctx: &mut Ctx<'_>, request: &HttpRequest) {
        if request.path != "/" {
            let body = ResponseBody::Full(Bytes::from_static(b"no such path\n"));
            ctx.respond(request.id, 404, text_plain(), body);
            return;
        }
        match request.method.as_str() {
            "GET" | "HEAD" => self.answer(ctx, request.id),
            "POST" if request.has_body => {
                self.posts.insert(request.id);
            }
            "POST" => {
                self.increment(ctx);
                self.answer(ctx, request.id);
            }
            _ => {
                let allow = vec![("allow".into(), Bytes::from_static(b"GET, HEAD, POST"))];
                ctx.respond(request.id, 405, allow, ResponseBody::Empty);
            }
        }
    }
    fn on_request_end(&mut self, ctx: &mut Ctx<'_>, request: RequestId) {
        if self.posts.remove(&request) {
            self.increment(ctx);
            self.answer(ctx, request);
        }
    }
    fn on_request_cancelled(&mut self, _ctx: &mut Ctx<'_>, request: RequestId) {
        self.posts.remove(&request);
    }
}
