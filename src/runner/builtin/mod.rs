//! The reference runner's actors: `echo`, `chat` and `counter` (the last
//! two also answer HTTP requests, PROTOCOL §7b).

mod chat;
mod counter;

pub use chat::{Chat, CHAT_HISTORY};
pub use counter::Counter;

use super::actor::{Actor, ActorFactory, ConnId, Ctx, Message};
use super::http::{HttpRequest, RequestId, ResponseBody};

/// Runs the three built-in actors.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinActors;

impl ActorFactory for BuiltinActors {
    fn actor_names(&self) -> Vec<String> {
        vec!["echo".into(), "chat".into(), "counter".into()]
    }

    fn create(&self, name: &str, _key: &[String]) -> Option<Box<dyn Actor>> {
        match name {
            "echo" => Some(Box::new(Echo)),
            "chat" => Some(Box::new(Chat::default())),
            "counter" => Some(Box::new(Counter::default())),
            _ => None,
        }
    }
}

/// Sends every message back to its sender; text stays text, binary stays
/// binary. Over HTTP it answers 200 with the request's body, streamed back
/// as it is read (nothing for a request without one): the plain server
/// the HTTP benchmark compares against does the same.
pub struct Echo;

impl Actor for Echo {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, message: Message) {
        ctx.send(conn, &message);
    }
    fn on_request(&mut self, ctx: &mut Ctx<'_>, request: &HttpRequest) {
        let body = match request.has_body {
            true => ResponseBody::Stream,
            false => ResponseBody::Empty,
        };
        ctx.respond(request.id, 200, Vec::new(), body);
    }
    fn on_request_body(&mut self, ctx: &mut Ctx<'_>, request: RequestId, data: &[u8]) {
        ctx.write_body(request, data);
    }
    fn on_request_end(&mut self, ctx: &mut Ctx<'_>, request: RequestId) {
        ctx.end_body(request);
    }
}
