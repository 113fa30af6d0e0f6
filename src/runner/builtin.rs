//! The reference runner's actors: `echo`, `chat` and `counter`.

use super::actor::{Actor, ActorFactory, ConnId, ConnInfo, Ctx, Message, OpenDecision};

/// Runs the three built-in actors.
pub struct BuiltinActors;

impl ActorFactory for BuiltinActors {
    fn actor_names(&self) -> Vec<String> {
        vec!["echo".into(), "chat".into(), "counter".into()]
    }

    fn create(&self, name: &str, _key: &[String]) -> Option<Box<dyn Actor>> {
        match name {
            "echo" => Some(Box::new(Echo)),
            "chat" => Some(Box::new(Chat)),
            "counter" => Some(Box::new(Counter { value: 0 })),
            _ => None,
        }
    }
}

/// Sends every message back to its sender; text stays text, binary stays binary.
pub struct Echo;

impl Actor for Echo {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, message: Message) {
        ctx.send(conn, &message);
    }
}

/// Broadcasts every message to every connection of the same key, the sender
/// included, so all members see one order. Its connections hibernate.
pub struct Chat;

impl Actor for Chat {
    fn on_open(&mut self, _ctx: &mut Ctx<'_>, _conn: ConnId, _info: &ConnInfo) -> OpenDecision {
        OpenDecision::Accept {
            protocol: None,
            hibernatable: Some(true),
        }
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_>, _conn: ConnId, message: Message) {
        ctx.broadcast(&message);
    }
}

/// Keeps a number: `inc` adds one and broadcasts the new value, `get` answers
/// the sender with it.
pub struct Counter {
    value: i64,
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
            Message::Text(t) if t == "inc" => {
                self.value += 1;
                ctx.broadcast(&Message::Text(self.value.to_string()));
            }
            Message::Text(t) if t == "get" => {
                ctx.send(conn, &Message::Text(self.value.to_string()))
            }
            _ => ctx.send(
                conn,
                &Message::Text("counter understands `inc` and `get`".into()),
            ),
        }
    }
}
