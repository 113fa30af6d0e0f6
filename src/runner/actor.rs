//! What a runner's actors implement, and what they can do.

use std::collections::{BTreeSet, HashMap};

use bytes::{Bytes, BytesMut};

use super::http::{HttpRequest, RequestId, Requests, ResponseBody};
use crate::tunnel::{encode_frame, encode_message, Frame, MessageKind, Recipients};

/// A client connection's id, unique within the gateway.
pub type ConnId = u64;

/// A WebSocket message between an actor and a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Text(String),
    Binary(Bytes),
}

/// What the gateway tells an actor about a new client connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, Bytes)>,
    /// Subprotocols the client offered, in its order of preference.
    pub protocols: Vec<String>,
    /// The client's address as the gateway saw it (`None` from a gateway
    /// that does not say). Client-sent `X-Forwarded-For`/`X-Real-IP` never
    /// reach the actor: the gateway drops them.
    pub peer: Option<std::net::SocketAddr>,
}

/// An actor's answer to a connection: accept (optionally choosing one of the
/// offered subprotocols) or reject with an HTTP status the client will see.
pub enum OpenDecision {
    /// `hibernatable`: whether the gateway may keep this connection open
    /// while the actor sleeps (`None`: the gateway's `actors.hibernatable`).
    Accept {
        protocol: Option<String>,
        hibernatable: Option<bool>,
    },
    Reject {
        status: u16,
        reason: String,
    },
}

/// One actor instance: a name and key, state, and handlers. Handlers run on
/// the tunnel's thread one at a time, so an actor never needs a lock.
pub trait Actor: Send {
    fn on_open(&mut self, _ctx: &mut Ctx<'_>, _conn: ConnId, _info: &ConnInfo) -> OpenDecision {
        OpenDecision::Accept {
            protocol: None,
            hibernatable: None,
        }
    }
    /// A hibernated connection handed back after the actor woke. Not an
    /// open: the client never left. `ctx.attachment(conn)` holds what the
    /// actor stored with `ctx.set_attachment` before it slept.
    fn on_restore(&mut self, _ctx: &mut Ctx<'_>, _conn: ConnId, _info: &ConnInfo) {}
    fn on_message(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, message: Message);
    fn on_close(&mut self, _ctx: &mut Ctx<'_>, _conn: ConnId, _code: u16, _reason: &str) {}
    /// The actor's durable state, saved to the runner's state store after
    /// every batch of events that reached it and before they are
    /// acknowledged to the gateway. `None`: nothing to keep.
    fn save_state(&self) -> Option<Vec<u8>> {
        None
    }
    /// State an earlier instance saved (before it slept, moved or crashed),
    /// given right after the actor is created.
    fn load_state(&mut self, _state: &[u8]) {}

    /// A client's plain HTTP request (PROTOCOL §7b). Answer it with
    /// `ctx.respond`, now or later (once its body arrived, say). Its body
    /// comes as `on_request_body` calls and then `on_request_end`; each
    /// piece handed over counts as read (the gateway may send more). An
    /// actor that does not serve HTTP answers 404.
    ///
    /// When the actor stops (a move, a sleep), requests it has not answered
    /// are given back to the gateway, which sends them to its next
    /// instance: leave a request unanswered across handlers only while
    /// nothing of it has been acted on. A response still streaming ends
    /// there (the client sees it cut, and may ask again).
    fn on_request(&mut self, ctx: &mut Ctx<'_>, request: &HttpRequest) {
        let body = ResponseBody::Full(Bytes::from_static(b"this actor does not serve HTTP\n"));
        let headers = vec![("content-type".into(), Bytes::from_static(b"text/plain"))];
        ctx.respond(request.id, 404, headers, body);
    }
    fn on_request_body(&mut self, _ctx: &mut Ctx<'_>, _request: RequestId, _data: &[u8]) {}
    fn on_request_end(&mut self, _ctx: &mut Ctx<'_>, _request: RequestId) {}
    /// The request is over before its response was (the client went away,
    /// timed out, or the gateway gave up): nothing more can be sent.
    fn on_request_cancelled(&mut self, _ctx: &mut Ctx<'_>, _request: RequestId) {}
    /// A streamed response whose backlog waited for the client has sent it
    /// all: the actor may write more.
    fn on_response_writable(&mut self, _ctx: &mut Ctx<'_>, _request: RequestId) {}
}

/// Creates actors by name. Shared by all tunnels of a runner.
pub trait ActorFactory: Send + Sync + 'static {
    /// The actor names this runner can run (announced in its hello).
    fn actor_names(&self) -> Vec<String>;
    /// A new instance, or `None` if `name` is not one of ours.
    fn create(&self, name: &str, key: &[String]) -> Option<Box<dyn Actor>>;
}

/// What an actor can do from inside a handler. Everything it asks is sent to
/// the gateway when the handler returns, in order.
pub struct Ctx<'a> {
    pub(crate) actor_id: u64,
    pub(crate) conns: &'a BTreeSet<ConnId>,
    pub(crate) out: &'a mut BytesMut,
    pub(crate) io: &'a mut ActorIo,
}

/// What every actor's `Ctx` on one tunnel reaches: the tunnel's output
/// numbering, attachments, HTTP requests and what the gateway takes.
#[derive(Default)]
pub(crate) struct ActorIo {
    pub out_index: HashMap<ConnId, u64>,
    /// The gateway takes one `Broadcast` frame for many connections.
    pub broadcasts: bool,
    pub attachments: HashMap<ConnId, Bytes>,
    pub requests: Requests,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(
        actor_id: u64,
        conns: &'a BTreeSet<ConnId>,
        out: &'a mut BytesMut,
        io: &'a mut ActorIo,
    ) -> Self {
        Ctx {
            actor_id,
            conns,
            out,
            io,
        }
    }
}

impl Ctx<'_> {
    /// The actor's open connections.
    pub fn connections(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.conns.iter().copied()
    }

    pub fn send(&mut self, conn: ConnId, message: &Message) {
        let index = self.io.out_index.entry(conn).or_insert(0);
        *index += 1;
        let (kind, payload): (MessageKind, &[u8]) = match message {
            Message::Text(t) => (MessageKind::Text, t.as_bytes()),
            Message::Binary(b) => (MessageKind::Binary, b),
        };
        encode_message(self.out, conn, *index, kind, payload);
    }

    /// Sends `message` to every connection of this actor.
    pub fn broadcast(&mut self, message: &Message) {
        if !self.io.broadcasts {
            // An older gateway: one message per connection.
            let conns: Vec<ConnId> = self.conns.iter().copied().collect();
            for c in conns {
                self.send(c, message);
            }
            return;
        }
        // Each connection's count of messages goes on as if sent one by one.
        for c in self.conns.iter() {
            *self.io.out_index.entry(*c).or_insert(0) += 1;
        }
        let (kind, payload) = match message {
            Message::Text(t) => (MessageKind::Text, Bytes::copy_from_slice(t.as_bytes())),
            Message::Binary(b) => (MessageKind::Binary, Bytes::copy_from_slice(b)),
        };
        encode_frame(
            self.out,
            &Frame::Broadcast {
                actor_id: self.actor_id,
                kind,
                to: Recipients::All,
                payload,
            },
        );
    }

    pub fn close(&mut self, conn: ConnId, code: u16, reason: &str) {
        encode_frame(
            self.out,
            &Frame::Close {
                conn_id: conn,
                code,
                reason: reason.to_owned(),
            },
        );
    }

    /// Stores a small per-connection state at the gateway (at most
    /// `actors.max_attachment_bytes`); it survives the actor sleeping.
    pub fn set_attachment(&mut self, conn: ConnId, attachment: Bytes) {
        encode_frame(
            self.out,
            &Frame::SetAttachment {
                conn_id: conn,
                attachment: attachment.clone(),
            },
        );
        self.io.attachments.insert(conn, attachment);
    }

    pub fn attachment(&self, conn: ConnId) -> Option<&Bytes> {
        self.io.attachments.get(&conn)
    }

    /// Answers an HTTP request: status, headers (lower-case names are what
    /// is sent), and its body. False if the request is gone or answered.
    pub fn respond(
        &mut self,
        request: RequestId,
        status: u16,
        headers: Vec<(String, Bytes)>,
        body: ResponseBody,
    ) -> bool {
        self.io
            .requests
            .respond(self.out, request, (status, headers), body)
    }

    /// More of a streamed response body (`ResponseBody::Stream`). Sent as
    /// the client reads; at most `http::MAX_BACKLOG` may wait, past it the
    /// request is cancelled and this returns false.
    pub fn write_body(&mut self, request: RequestId, data: &[u8]) -> bool {
        self.io.requests.write(self.out, request, data)
    }

    /// Ends a streamed response body.
    pub fn end_body(&mut self, request: RequestId) {
        self.io.requests.end(self.out, request);
    }

    /// Bytes of a streamed response still waiting for the client.
    pub fn response_backlog(&self, request: RequestId) -> usize {
        self.io.requests.backlog(request)
    }

    /// Gives a request up (the client gets 502 if nothing was answered,
    /// else an incomplete response).
    pub fn cancel_request(&mut self, request: RequestId, reason: &str) {
        self.io.requests.cancel(self.out, request, reason);
    }

    /// Asks the gateway to put this actor to sleep.
    pub fn sleep(&mut self) {
        encode_frame(
            self.out,
            &Frame::SleepRequest {
                actor_id: self.actor_id,
            },
        );
    }
}
