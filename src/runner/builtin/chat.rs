//! `chat`: a room, over WebSockets, and over HTTP its history and a
//! Server-Sent Events stream of its messages.

use std::collections::{BTreeSet, HashMap, VecDeque};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::runner::actor::{Actor, ConnId, ConnInfo, Ctx, Message, OpenDecision};
use crate::runner::http::{HttpRequest, RequestId, ResponseBody};

/// Messages a chat room remembers.
pub const CHAT_HISTORY: usize = 32;

/// Longest message posted over HTTP (`POST /messages`).
const MAX_POSTED: usize = 64 * 1024;

/// Broadcasts every message to every connection of the same key, the sender
/// included, so all members see one order. Its connections hibernate. It
/// keeps the last `CHAT_HISTORY` text messages, numbered from 1, as its
/// durable state; a client sending `/history` gets them, one per line.
///
/// Over HTTP: `GET /history` answers them as JSON (`[{"id":…,"text":…}]`),
/// `POST /messages` sends its body as a message, and `GET /events` is a
/// Server-Sent Events stream of the room's messages (`id:` their number),
/// starting after the client's `Last-Event-ID` with what the room still
/// remembers.
#[derive(Default)]
pub struct Chat {
    history: VecDeque<(u64, String)>,
    /// The last message's number.
    seq: u64,
    /// Open `GET /events` streams.
    streams: BTreeSet<RequestId>,
    /// `POST /messages` bodies arriving.
    posts: HashMap<RequestId, Vec<u8>>,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    seq: u64,
    history: Vec<(u64, String)>,
}

#[derive(Serialize)]
struct Entry<'a> {
    id: u64,
    text: &'a str,
}

impl Chat {
    fn say(&mut self, ctx: &mut Ctx<'_>, text: String) {
        self.seq += 1;
        if self.history.len() == CHAT_HISTORY {
            self.history.pop_front();
        }
        let event = sse_event(self.seq, &text);
        self.history.push_back((self.seq, text.clone()));
        ctx.broadcast(&Message::Text(text));
        // A stream whose client stopped reading is cancelled by the write.
        self.streams
            .retain(|id| ctx.write_body(*id, event.as_bytes()));
    }

    fn events(&mut self, ctx: &mut Ctx<'_>, request: &HttpRequest) {
        let after = request
            .header("last-event-id")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let headers = vec![
            (
                "content-type".into(),
                Bytes::from_static(b"text/event-stream"),
            ),
            ("cache-control".into(), Bytes::from_static(b"no-cache")),
        ];
        ctx.respond(request.id, 200, headers, ResponseBody::Stream);
        let missed: String = self
            .history
            .iter()
            .filter(|(id, _)| *id > after)
            .map(|(id, text)| sse_event(*id, text))
            .collect();
        // A comment first, so that the client sees the stream open.
        if ctx.write_body(
            request.id,
            format!(": room at {}\n\n{missed}", self.seq).as_bytes(),
        ) {
            self.streams.insert(request.id);
        }
    }

    fn history_json(&self) -> Bytes {
        let entries: Vec<Entry<'_>> = self
            .history
            .iter()
            .map(|(id, text)| Entry { id: *id, text })
            .collect();
        Bytes::from(serde_json::to_vec(&entries).unwrap_or_default())
    }
}

/// One SSE event; a message's lines are `data:` lines of it. A line
/// ends at CRLF, CR or LF, as SSE reads it: a bare CR kept in a line
/// would let a message add fields (`retry:`, `id:`) to the event.
fn sse_event(id: u64, text: &str) -> String {
    let mut event = format!("id: {id}\n");
    for line in text.replace("\r\n", "\n").split(['\r', '\n']) {
        event.push_str("data: ");
        event.push_str(line);
        event.push('\n');
    }
    event.push('\n');
    event
}

fn plain(ctx: &mut Ctx<'_>, request: RequestId, status: u16, text: &'static str) {
    let headers = vec![("content-type".into(), Bytes::from_static(b"text/plain"))];
    ctx.respond(
        request,
        status,
        headers,
        ResponseBody::Full(Bytes::from_static(text.as_bytes())),
    );
}

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
                let lines: Vec<&str> = self.history.iter().map(|(_, t)| t.as_str()).collect();
                ctx.send(conn, &Message::Text(lines.join("\n")));
            }
            Message::Text(t) => self.say(ctx, t),
            binary => ctx.broadcast(&binary),
        }
    }
    fn save_state(&self) -> Option<Vec<u8>> {
        let saved = Saved {
            seq: self.seq,
            history: self.history.iter().cloned().collect(),
        };
        serde_json::to_vec(&saved).ok()
    }
    fn load_state(&mut self, state: &[u8]) {
        let saved = serde_json::from_slice::<Saved>(state).unwrap_or_else(|_| older_state(state));
        self.seq = saved.seq;
        self.history = saved.history.into_iter().collect();
        while self.history.len() > CHAT_HISTORY {
            self.history.pop_front();
        }
    }

    fn on_request(&mut self, ctx: &mut Ctx<'_>, request: &HttpRequest) {
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/history") => {
                let headers = vec![(
                    "content-type".into(),
                    Bytes::from_static(b"application/json"),
                )];
                let body = ResponseBody::Full(self.history_json());
                ctx.respond(request.id, 200, headers, body);
            }
            ("GET", "/events") => self.events(ctx, request),
            ("POST", "/messages") if request.has_body => {
                self.posts.insert(request.id, Vec::new());
            }
            ("POST", "/messages") => plain(ctx, request.id, 400, "post the message as the body\n"),
            (_, "/history" | "/events" | "/messages") => {
                plain(ctx, request.id, 405, "method not allowed\n")
            }
            _ => plain(
                ctx,
                request.id,
                404,
                "chat serves /history, /events and /messages\n",
            ),
        }
    }
    fn on_request_body(&mut self, ctx: &mut Ctx<'_>, request: RequestId, data: &[u8]) {
        let Some(body) = self.posts.get_mut(&request) else {
            return;
        };
        if body.len() + data.len() > MAX_POSTED {
            self.posts.remove(&request);
            plain(ctx, request, 413, "a message is at most 64 KiB\n");
            return;
        }
        body.extend_from_slice(data);
    }
    fn on_request_end(&mut self, ctx: &mut Ctx<'_>, request: RequestId) {
        let Some(body) = self.posts.remove(&request) else {
            return;
        };
        let text = String::from_utf8_lossy(&body).into_owned();
        self.say(ctx, text);
        let id = Bytes::from(format!("{}\n", self.seq));
        ctx.respond(request, 201, Vec::new(), ResponseBody::Full(id));
    }
    fn on_request_cancelled(&mut self, _ctx: &mut Ctx<'_>, request: RequestId) {
        self.streams.remove(&request);
        self.posts.remove(&request);
    }
}

/// The state an earlier library saved: the texts, one per line, numbered
/// as if they were the room's first messages.
fn older_state(state: &[u8]) -> Saved {
    let history: Vec<(u64, String)> = String::from_utf8_lossy(state)
        .split('\n')
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.to_owned()))
        .collect();
    Saved {
        seq: history.len() as u64,
        history,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_their_number_and_every_line() {
        assert_eq!(sse_event(3, "a\nb"), "id: 3\ndata: a\ndata: b\n\n");
    }

    /// In SSE a bare CR ends a line too: a message must not add fields.
    #[test]
    fn every_kind_of_line_break_starts_a_data_line() {
        assert_eq!(
            sse_event(4, "hi\rretry: 2147483647"),
            "id: 4\ndata: hi\ndata: retry: 2147483647\n\n"
        );
        assert_eq!(
            sse_event(5, "a\r\nb\rid: 999999\nc\r"),
            "id: 5\ndata: a\ndata: b\ndata: id: 999999\ndata: c\ndata: \n\n"
        );
    }

    #[test]
    fn state_round_trips_and_older_records_still_load() {
        let mut chat = Chat::default();
        chat.load_state(b"one\ntwo\n");
        assert_eq!(chat.seq, 2);
        assert_eq!(chat.history.back(), Some(&(2, "two".to_string())));
        let saved = chat.save_state().unwrap();
        let mut again = Chat::default();
        again.load_state(&saved);
        assert_eq!((again.seq, again.history.len()), (2, 2));
    }
}
