//! The reference runner's actors: `echo`, `chat` and `counter`.

use std::collections::VecDeque;

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
            "chat" => Some(Box::new(Chat::default())),
            "counter" => Some(Box::new(Counter::default())),
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
/// included, so all members see one order. Its connections hibernate. It
/// keeps the last `CHAT_HISTORY` text messages as its durable state; a
/// client sending `/history` gets them, one per line.
#[derive(Default)]
pub struct Chat {
    history: VecDeque<String>,
}

/// Messages a chat room remembers.
pub const CHAT_HISTORY: usize = 32;

impl Actor for Chat {
    fn on_open(&mut self, _ctx: &mut Ctx<'_>, _conn: ConnId, _info: &ConnInfo) -> OpenDecision {
        OpenDecision::Accept {
            protocol: None,
            hibernatable: Some(true),
        }
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, message: Message) {
        match message {
            Message::Text(t) if t == "/history" => {
                let lines: Vec<&str> = self.history.iter().map(String::as_str).collect();
                ctx.send(conn, &Message::Text(lines.join("\n")));
            }
            Message::Text(t) => {
                if self.history.len() == CHAT_HISTORY {
                    self.history.pop_front();
                }
                self.history.push_back(t.clone());
                ctx.broadcast(&Message::Text(t));
            }
            binary => ctx.broadcast(&binary),
        }
    }
    fn save_state(&self) -> Option<Vec<u8>> {
        // Lines cannot contain the separator: a message with a newline is
        // stored as several lines, which only affects `/history`.
        let joined: Vec<&str> = self.history.iter().map(String::as_str).collect();
        Some(joined.join("\n").into_bytes())
    }
    fn load_state(&mut self, state: &[u8]) {
        self.history = String::from_utf8_lossy(state)
            .split('\n')
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        while self.history.len() > CHAT_HISTORY {
            self.history.pop_front();
        }
    }
}

/// Keeps a number: `inc` adds one and broadcasts the new value, `get` answers
/// the sender with it. The number is its durable state.
#[derive(Default)]
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
    fn save_state(&self) -> Option<Vec<u8>> {
        Some(self.value.to_string().into_bytes())
    }
    fn load_state(&mut self, state: &[u8]) {
        self.value = std::str::from_utf8(state)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
    }
}
