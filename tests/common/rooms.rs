//! A runner's actors for tests that need an actor to sleep on demand: a
//! `room` whose members name themselves with `?name=` (kept as their
//! attachment), hibernate, and hear every message; "sleep" asks the
//! gateway to put the room to sleep.

use bytes::Bytes;
use tether::runner::{Actor, ActorFactory, ConnId, ConnInfo, Ctx, Message, OpenDecision};

pub struct Room;

impl Actor for Room {
    fn on_open(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, info: &ConnInfo) -> OpenDecision {
        let name = info.query.strip_prefix("name=").unwrap_or("?").to_owned();
        ctx.set_attachment(conn, Bytes::from(name));
        OpenDecision::Accept {
            protocol: None,
            hibernatable: Some(true),
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, _conn: ConnId, message: Message) {
        match message {
            Message::Text(t) if t == "sleep" => ctx.sleep(),
            other => ctx.broadcast(&other),
        }
    }
}

/// Runs `room` actors.
#[derive(Clone, Copy)]
pub struct Rooms;

impl ActorFactory for Rooms {
    fn actor_names(&self) -> Vec<String> {
        vec!["room".into()]
    }

    fn create(&self, name: &str, _key: &[String]) -> Option<Box<dyn Actor>> {
        (name == "room").then(|| Box::new(Room) as Box<dyn Actor>)
    }
}
