//! Tunnel frames: what they are, how they are encoded, and decoding that
//! never panics. Several frames may share one WebSocket binary message.
//!
//! A frame is `type: u8`, `body length: varint`, `body`. Field encodings are
//! in `wire.rs`; the layout of every body is in docs/PROTOCOL.md.

use bytes::{BufMut, Bytes, BytesMut};

use super::wire::{put_bytes, put_varint, Reader, Truncated};

mod http;

pub use http::{HttpRequest, HttpResponse};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Text,
    Binary,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello {
        version: u16,
        runner_key: String,
        pool: String,
        capacity: u32,
        tunnel_index: u32,
        actor_names: Vec<String>,
        /// What this runner may use (`features::*`); 0 from a runner that
        /// does not say (added in 1.2, at the end).
        features: u64,
    },
    Welcome {
        version: u16,
        workers: u32,
        tunnel_index: u32,
        ping_interval_ms: u64,
        /// What this gateway understands (`features::*`); 0 from a gateway
        /// that does not say: then the runner uses none (added in 1.2).
        features: u64,
    },
    StartActor {
        actor_id: u64,
        name: String,
        key: Vec<String>,
        input: Bytes,
        /// The last `OutputMark` the gateway received for this actor, plus
        /// one; 0: none, or a gateway that does not say (added in 1.3).
        output_seen: u64,
    },
    /// Runner → gateway, after an actor's output in a batch whose save
    /// wrote record `seq` (feature `OUTPUT_MARKS`, added in 1.3).
    OutputMark {
        actor_id: u64,
        seq: u64,
    },
    ActorReady {
        actor_id: u64,
    },
    ActorStopped {
        actor_id: u64,
        reason: String,
    },
    SleepRequest {
        actor_id: u64,
    },
    StopActor {
        actor_id: u64,
    },
    ConnOpen {
        conn_id: u64,
        actor_id: u64,
        path: String,
        query: String,
        headers: Vec<(String, Bytes)>,
        protocols: Vec<String>,
        /// The client's address as the gateway saw it (`ip:port`; empty
        /// from a gateway that does not say). Added in 1.1, at the end.
        peer: String,
    },
    ConnAccept {
        conn_id: u64,
        protocol: Option<String>,
        /// `None`: the gateway's default for this actor name (`actors.hibernatable`).
        hibernatable: Option<bool>,
    },
    /// A hibernated connection handed to a woken actor: not a new open.
    RestoreConn {
        conn_id: u64,
        actor_id: u64,
        path: String,
        query: String,
        headers: Vec<(String, Bytes)>,
        protocol: Option<String>,
        attachment: Bytes,
        /// The last client message index the actor acknowledged.
        last_index: u64,
        /// As in `ConnOpen`.
        peer: String,
        /// What the gateway holding this client received of the actor's
        /// saved output: its last `OutputMark`, plus one (feature
        /// `CONN_MARKS`, added in 1.5). 0: it does not know (the runner
        /// goes by `StartActor.output_seen`). Nodes of a cluster each see
        /// their own share of an actor's output, so this is per connection.
        output_seen: u64,
    },
    /// The actor's small per-connection state, kept by the gateway while it sleeps.
    SetAttachment {
        conn_id: u64,
        attachment: Bytes,
    },
    ConnReject {
        conn_id: u64,
        status: u16,
        reason: String,
    },
    Message {
        conn_id: u64,
        index: u64,
        kind: MessageKind,
        payload: Bytes,
    },
    /// Runner → gateway (`features::BROADCAST`): one message to several
    /// connections of one actor; the gateway encodes it once for all.
    Broadcast {
        actor_id: u64,
        kind: MessageKind,
        to: Recipients,
        payload: Bytes,
    },
    Ack {
        conn_id: u64,
        index: u64,
    },
    Close {
        conn_id: u64,
        code: u16,
        reason: String,
    },
    Keepalive {
        nonce: u64,
    },
    KeepaliveAck {
        nonce: u64,
    },
    Drain,
    /// Gateway → runner: nothing of yours runs on this tunnel any more and
    /// nothing new will be placed here; you may exit.
    Drained,
    /// Gateway → runner (`features::HTTP`): a client's HTTP request to an actor.
    HttpRequest(HttpRequest),
    /// Runner → gateway (`features::HTTP`): the head of the answer to one.
    HttpResponse(HttpResponse),
    /// Both ways: the next piece of a request's or response's body.
    HttpBody {
        req_id: u64,
        /// Never empty: an empty piece would say nothing and cost a frame.
        data: Bytes,
    },
    /// Both ways: that direction's body is complete.
    HttpEnd {
        req_id: u64,
    },
    /// Both ways: the request is abandoned; nothing more about it follows.
    HttpCancel {
        req_id: u64,
        reason: String,
    },
    /// Both ways: the receiver may send `bytes` more of body for `req_id`.
    HttpCredit {
        req_id: u64,
        bytes: u64,
    },
}

/// Which of an actor's connections a broadcast reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipients {
    All,
    AllBut(Vec<u64>),
    Only(Vec<u64>),
}

/// Optional protocol features, announced in `Hello` and `Welcome` (bits).
pub mod features {
    /// The `Broadcast` frame.
    pub const BROADCAST: u64 = 1;
    /// `OutputMark` frames, and `StartActor.output_seen`.
    pub const OUTPUT_MARKS: u64 = 2;
    /// The HTTP frames (`HttpRequest` … `HttpCredit`, PROTOCOL §7b).
    pub const HTTP: u64 = 4;
    /// `RestoreConn.output_seen`: what each connection's gateway received
    /// of the actor's saved output, which the runner resends by.
    pub const CONN_MARKS: u64 = 8;
    /// What this build of the gateway and of the runner library understand.
    pub const SUPPORTED: u64 = BROADCAST | OUTPUT_MARKS | HTTP | CONN_MARKS;
}

mod tag {
    pub const HELLO: u8 = 0x01;
    pub const WELCOME: u8 = 0x02;
    pub const START_ACTOR: u8 = 0x10;
    pub const ACTOR_READY: u8 = 0x11;
    pub const ACTOR_STOPPED: u8 = 0x12;
    pub const SLEEP_REQUEST: u8 = 0x13;
    pub const STOP_ACTOR: u8 = 0x14;
    pub const OUTPUT_MARK: u8 = 0x15;
    pub const CONN_OPEN: u8 = 0x20;
    pub const CONN_ACCEPT: u8 = 0x21;
    pub const CONN_REJECT: u8 = 0x22;
    pub const RESTORE_CONN: u8 = 0x23;
    pub const MESSAGE_TEXT: u8 = 0x30;
    pub const MESSAGE_BINARY: u8 = 0x31;
    pub const ACK: u8 = 0x32;
    pub const CLOSE: u8 = 0x33;
    pub const SET_ATTACHMENT: u8 = 0x34;
    pub const BROADCAST: u8 = 0x35;
    pub const KEEPALIVE: u8 = 0x40;
    pub const KEEPALIVE_ACK: u8 = 0x41;
    pub const DRAIN: u8 = 0x42;
    pub const DRAINED: u8 = 0x43;
    pub const HTTP_REQUEST: u8 = 0x50;
    pub const HTTP_RESPONSE: u8 = 0x51;
    pub const HTTP_BODY: u8 = 0x52;
    pub const HTTP_END: u8 = 0x53;
    pub const HTTP_CANCEL: u8 = 0x54;
    pub const HTTP_CREDIT: u8 = 0x55;
    /// Types from here up are optional extensions: unknown ones are skipped.
    pub const FIRST_IGNORABLE: u8 = 0x80;
}

/// A frame that cannot be decoded: the tunnel must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelError(pub &'static str);

impl From<Truncated> for TunnelError {
    fn from(_: Truncated) -> Self {
        TunnelError("truncated or malformed frame body")
    }
}

impl std::fmt::Display for TunnelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Appends one frame to `out`. (Control frames only: messages, the hot
/// path, use [`encode_message`], which builds nothing on the heap.)
pub fn encode_frame(out: &mut BytesMut, frame: &Frame) {
    let mut body = BytesMut::new();
    let t = write_body(&mut body, frame);
    out.put_u8(t);
    put_varint(out, body.len() as u64);
    out.put_slice(&body);
}

/// Appends a message frame without building a `Frame` (the hot path).
pub fn encode_message(
    out: &mut BytesMut,
    conn_id: u64,
    index: u64,
    kind: MessageKind,
    payload: &[u8],
) {
    let (ids, n) = varints([conn_id, index]);
    out.reserve(1 + 10 + n + payload.len());
    out.put_u8(match kind {
        MessageKind::Text => tag::MESSAGE_TEXT,
        MessageKind::Binary => tag::MESSAGE_BINARY,
    });
    put_varint(out, (n + payload.len()) as u64);
    out.put_slice(&ids[..n]);
    out.put_slice(payload);
}

/// Appends an `HttpBody` frame without building a `Frame` (request and
/// response bodies, a hot path like messages).
pub fn encode_http_body(out: &mut BytesMut, req_id: u64, data: &[u8]) {
    let (id, n) = varints([req_id]);
    out.reserve(1 + 10 + n + data.len());
    out.put_u8(tag::HTTP_BODY);
    put_varint(out, (n + data.len()) as u64);
    out.put_slice(&id[..n]);
    out.put_slice(data);
}

/// Up to two varints side by side on the stack, and their length.
fn varints<const N: usize>(values: [u64; N]) -> ([u8; 20], usize) {
    let mut out = [0u8; 20];
    let mut n = 0;
    for mut v in values {
        while v >= 0x80 {
            out[n] = (v as u8) | 0x80;
            v >>= 7;
            n += 1;
        }
        out[n] = v as u8;
        n += 1;
    }
    (out, n)
}

fn put_str(out: &mut BytesMut, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_strs(out: &mut BytesMut, list: &[String]) {
    put_varint(out, list.len() as u64);
    for s in list {
        put_str(out, s);
    }
}

fn put_headers(out: &mut BytesMut, headers: &[(String, Bytes)]) {
    put_varint(out, headers.len() as u64);
    for (name, value) in headers {
        put_str(out, name);
        put_bytes(out, value);
    }
}

/// Most entries a list in a frame may have, by what it lists. A count is
/// also checked against the bytes left (every entry takes at least one
/// byte per field) before anything is allocated.
pub mod limits {
    /// Actor names a runner offers in its hello.
    pub const ACTOR_NAMES: u64 = 1024;
    /// Segments of an actor key (as `http::route` allows).
    pub const KEY_PARTS: u64 = 16;
    /// Headers passed with a connection.
    pub const HEADERS: u64 = 128;
    /// Subprotocols a client offers.
    pub const PROTOCOLS: u64 = 64;
    /// Connections a broadcast lists (an actor's connections are bounded
    /// by `actors.max_connections_per_actor`).
    pub const BROADCAST_CONNS: u64 = 1 << 20;
    /// Bytes of an HTTP method (a token; the longest registered is 17 but
    /// none a gateway forwards is over 7).
    pub const HTTP_METHOD: usize = 16;
    /// Bytes of an HTTP request's path, and of its query.
    pub const HTTP_TARGET: usize = 8 * 1024;
    /// Bytes of an HTTP message's header names and values together (what
    /// a proxy commonly allows before 431, with room for large cookies).
    pub const HTTP_HEADER_BYTES: usize = 64 * 1024;
    /// Bytes of an `HttpCancel` reason (as much as is logged of a runner's).
    pub const HTTP_REASON: usize = 256;
    /// Body bytes either side may send for one request before the other
    /// grants more with `HttpCredit`: a window, so that an upload or a
    /// stream passes at the reader's pace without being held whole.
    pub const HTTP_INITIAL_CREDIT: u64 = 256 * 1024;
}

/// A list's entry count, checked against `max` and the bytes left.
fn count(r: &mut Reader, max: u64, min_entry_bytes: usize) -> Result<usize, TunnelError> {
    let n = r.varint()?;
    if n > max {
        return Err(TunnelError("list longer than the protocol allows"));
    }
    let n = n as usize;
    if n.saturating_mul(min_entry_bytes) > r.remaining() {
        return Err(TunnelError("list count exceeds the frame"));
    }
    Ok(n)
}

fn headers(r: &mut Reader) -> Result<Vec<(String, Bytes)>, TunnelError> {
    let n = count(r, limits::HEADERS, 2)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push((r.string()?, r.bytes()?));
    }
    Ok(v)
}

/// A string a later minor version added at the end of a body: empty when
/// an older peer did not send it.
fn trailing_string(r: &mut Reader) -> Result<String, TunnelError> {
    if r.is_empty() {
        Ok(String::new())
    } else {
        Ok(r.string()?)
    }
}

/// A number a later minor version added at the end of a body: 0 when an
/// older peer did not send it.
fn trailing_varint(r: &mut Reader) -> Result<u64, TunnelError> {
    if r.is_empty() {
        Ok(0)
    } else {
        Ok(r.varint()?)
    }
}

fn broadcast(r: &mut Reader) -> Result<Frame, TunnelError> {
    let actor_id = r.varint()?;
    let kind = match r.u8()? {
        0 => MessageKind::Text,
        1 => MessageKind::Binary,
        _ => return Err(TunnelError("unknown message kind")),
    };
    let mode = r.u8()?;
    let n = count(r, limits::BROADCAST_CONNS, 1)?;
    let mut list = Vec::with_capacity(n);
    for _ in 0..n {
        list.push(r.varint()?);
    }
    let to = match mode {
        0 if list.is_empty() => Recipients::All,
        1 => Recipients::AllBut(list),
        2 => Recipients::Only(list),
        _ => return Err(TunnelError("unknown broadcast recipients")),
    };
    let payload = r.rest();
    if kind == MessageKind::Text && std::str::from_utf8(&payload).is_err() {
        return Err(TunnelError("text message is not UTF-8"));
    }
    Ok(Frame::Broadcast {
        actor_id,
        kind,
        to,
        payload,
    })
}

fn optional(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn write_body(out: &mut BytesMut, frame: &Frame) -> u8 {
    match frame {
        Frame::Hello {
            version,
            runner_key,
            pool,
            capacity,
            tunnel_index,
            actor_names,
            features,
        } => {
            put_varint(out, u64::from(*version));
            put_str(out, runner_key);
            put_str(out, pool);
            put_varint(out, u64::from(*capacity));
            put_varint(out, u64::from(*tunnel_index));
            put_strs(out, actor_names);
            put_varint(out, *features);
            tag::HELLO
        }
        Frame::Welcome {
            version,
            workers,
            tunnel_index,
            ping_interval_ms,
            features,
        } => {
            put_varint(out, u64::from(*version));
            put_varint(out, u64::from(*workers));
            put_varint(out, u64::from(*tunnel_index));
            put_varint(out, *ping_interval_ms);
            put_varint(out, *features);
            tag::WELCOME
        }
        Frame::StartActor {
            actor_id,
            name,
            key,
            input,
            output_seen,
        } => {
            put_varint(out, *actor_id);
            put_str(out, name);
            put_strs(out, key);
            put_bytes(out, input);
            put_varint(out, *output_seen);
            tag::START_ACTOR
        }
        Frame::OutputMark { actor_id, seq } => {
            put_varint(out, *actor_id);
            put_varint(out, *seq);
            tag::OUTPUT_MARK
        }
        Frame::ActorReady { actor_id } => {
            put_varint(out, *actor_id);
            tag::ACTOR_READY
        }
        Frame::ActorStopped { actor_id, reason } => {
            put_varint(out, *actor_id);
            put_str(out, reason);
            tag::ACTOR_STOPPED
        }
        Frame::SleepRequest { actor_id } => {
            put_varint(out, *actor_id);
            tag::SLEEP_REQUEST
        }
        Frame::StopActor { actor_id } => {
            put_varint(out, *actor_id);
            tag::STOP_ACTOR
        }
        Frame::ConnOpen {
            conn_id,
            actor_id,
            path,
            query,
            headers,
            protocols,
            peer,
        } => {
            put_varint(out, *conn_id);
            put_varint(out, *actor_id);
            put_str(out, path);
            put_str(out, query);
            put_headers(out, headers);
            put_strs(out, protocols);
            put_str(out, peer);
            tag::CONN_OPEN
        }
        Frame::ConnAccept {
            conn_id,
            protocol,
            hibernatable,
        } => {
            put_varint(out, *conn_id);
            put_str(out, protocol.as_deref().unwrap_or(""));
            out.put_u8(match hibernatable {
                Some(false) => 0,
                Some(true) => 1,
                None => 2,
            });
            tag::CONN_ACCEPT
        }
        Frame::RestoreConn {
            conn_id,
            actor_id,
            path,
            query,
            headers,
            protocol,
            attachment,
            last_index,
            peer,
            output_seen,
        } => {
            put_varint(out, *conn_id);
            put_varint(out, *actor_id);
            put_str(out, path);
            put_str(out, query);
            put_headers(out, headers);
            put_str(out, protocol.as_deref().unwrap_or(""));
            put_bytes(out, attachment);
            put_varint(out, *last_index);
            put_str(out, peer);
            put_varint(out, *output_seen);
            tag::RESTORE_CONN
        }
        Frame::SetAttachment {
            conn_id,
            attachment,
        } => {
            put_varint(out, *conn_id);
            put_bytes(out, attachment);
            tag::SET_ATTACHMENT
        }
        Frame::ConnReject {
            conn_id,
            status,
            reason,
        } => {
            put_varint(out, *conn_id);
            put_varint(out, u64::from(*status));
            put_str(out, reason);
            tag::CONN_REJECT
        }
        Frame::Message {
            conn_id,
            index,
            kind,
            payload,
        } => {
            put_varint(out, *conn_id);
            put_varint(out, *index);
            out.put_slice(payload);
            match kind {
                MessageKind::Text => tag::MESSAGE_TEXT,
                MessageKind::Binary => tag::MESSAGE_BINARY,
            }
        }
        Frame::Broadcast {
            actor_id,
            kind,
            to,
            payload,
        } => {
            put_varint(out, *actor_id);
            out.put_u8(match kind {
                MessageKind::Text => 0,
                MessageKind::Binary => 1,
            });
            let (mode, list): (u8, &[u64]) = match to {
                Recipients::All => (0, &[]),
                Recipients::AllBut(l) => (1, l),
                Recipients::Only(l) => (2, l),
            };
            out.put_u8(mode);
            put_varint(out, list.len() as u64);
            list.iter().for_each(|c| put_varint(out, *c));
            out.put_slice(payload);
            tag::BROADCAST
        }
        Frame::Ack { conn_id, index } => {
            put_varint(out, *conn_id);
            put_varint(out, *index);
            tag::ACK
        }
        Frame::Close {
            conn_id,
            code,
            reason,
        } => {
            put_varint(out, *conn_id);
            put_varint(out, u64::from(*code));
            put_str(out, reason);
            tag::CLOSE
        }
        Frame::Keepalive { nonce } => {
            put_varint(out, *nonce);
            tag::KEEPALIVE
        }
        Frame::KeepaliveAck { nonce } => {
            put_varint(out, *nonce);
            tag::KEEPALIVE_ACK
        }
        Frame::Drain => tag::DRAIN,
        Frame::Drained => tag::DRAINED,
        Frame::HttpRequest(req) => http::put_request(out, req),
        Frame::HttpResponse(resp) => http::put_response(out, resp),
        Frame::HttpBody { req_id, data } => http::put_body(out, *req_id, data),
        Frame::HttpEnd { req_id } => http::put_end(out, *req_id),
        Frame::HttpCancel { req_id, reason } => http::put_cancel(out, *req_id, reason),
        Frame::HttpCredit { req_id, bytes } => http::put_credit(out, *req_id, *bytes),
    }
}

/// Decodes every frame of one WebSocket message, in order.
pub fn decode_frames(message: Bytes) -> FrameIter {
    FrameIter {
        reader: Reader::new(message),
        failed: false,
    }
}

pub struct FrameIter {
    reader: Reader,
    failed: bool,
}

impl Iterator for FrameIter {
    type Item = Result<Frame, TunnelError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed || self.reader.is_empty() {
                return None;
            }
            let result = self.next_frame();
            match result {
                Ok(Some(frame)) => return Some(Ok(frame)),
                Ok(None) => continue, // an ignorable extension frame
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

impl FrameIter {
    fn next_frame(&mut self) -> Result<Option<Frame>, TunnelError> {
        let t = self.reader.u8()?;
        let body = self.reader.bytes()?;
        if t >= tag::FIRST_IGNORABLE {
            return Ok(None);
        }
        decode_body(t, Reader::new(body)).map(Some)
    }
}

fn u16_field(r: &mut Reader) -> Result<u16, TunnelError> {
    u16::try_from(r.varint()?).map_err(|_| TunnelError("field out of range"))
}

fn u32_field(r: &mut Reader) -> Result<u32, TunnelError> {
    u32::try_from(r.varint()?).map_err(|_| TunnelError("field out of range"))
}

fn strings(r: &mut Reader, max: u64) -> Result<Vec<String>, TunnelError> {
    let n = count(r, max, 1)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(r.string()?);
    }
    Ok(v)
}

fn decode_body(t: u8, mut r: Reader) -> Result<Frame, TunnelError> {
    let r = &mut r;
    // Fields added at the end of a body by a later minor version are ignored.
    Ok(match t {
        tag::HELLO => Frame::Hello {
            version: u16_field(r)?,
            runner_key: r.string()?,
            pool: r.string()?,
            capacity: u32_field(r)?,
            tunnel_index: u32_field(r)?,
            actor_names: strings(r, limits::ACTOR_NAMES)?,
            features: trailing_varint(r)?,
        },
        tag::WELCOME => Frame::Welcome {
            version: u16_field(r)?,
            workers: u32_field(r)?,
            tunnel_index: u32_field(r)?,
            ping_interval_ms: r.varint()?,
            features: trailing_varint(r)?,
        },
        tag::BROADCAST => broadcast(r)?,
        tag::START_ACTOR => Frame::StartActor {
            actor_id: r.varint()?,
            name: r.string()?,
            key: strings(r, limits::KEY_PARTS)?,
            input: r.bytes()?,
            output_seen: trailing_varint(r)?,
        },
        tag::OUTPUT_MARK => Frame::OutputMark {
            actor_id: r.varint()?,
            seq: r.varint()?,
        },
        tag::ACTOR_READY => Frame::ActorReady {
            actor_id: r.varint()?,
        },
        tag::ACTOR_STOPPED => Frame::ActorStopped {
            actor_id: r.varint()?,
            reason: r.string()?,
        },
        tag::SLEEP_REQUEST => Frame::SleepRequest {
            actor_id: r.varint()?,
        },
        tag::STOP_ACTOR => Frame::StopActor {
            actor_id: r.varint()?,
        },
        tag::CONN_OPEN => {
            let conn_id = r.varint()?;
            let actor_id = r.varint()?;
            let path = r.string()?;
            let query = r.string()?;
            let headers = headers(r)?;
            Frame::ConnOpen {
                conn_id,
                actor_id,
                path,
                query,
                headers,
                protocols: strings(r, limits::PROTOCOLS)?,
                peer: trailing_string(r)?,
            }
        }
        tag::CONN_ACCEPT => Frame::ConnAccept {
            conn_id: r.varint()?,
            protocol: optional(r.string()?),
            hibernatable: match r.u8()? {
                0 => Some(false),
                1 => Some(true),
                _ => None,
            },
        },
        tag::RESTORE_CONN => Frame::RestoreConn {
            conn_id: r.varint()?,
            actor_id: r.varint()?,
            path: r.string()?,
            query: r.string()?,
            headers: headers(r)?,
            protocol: optional(r.string()?),
            attachment: r.bytes()?,
            last_index: r.varint()?,
            peer: trailing_string(r)?,
            output_seen: trailing_varint(r)?,
        },
        tag::SET_ATTACHMENT => Frame::SetAttachment {
            conn_id: r.varint()?,
            attachment: r.bytes()?,
        },
        tag::CONN_REJECT => Frame::ConnReject {
            conn_id: r.varint()?,
            status: u16_field(r)?,
            reason: r.string()?,
        },
        tag::MESSAGE_TEXT | tag::MESSAGE_BINARY => {
            let conn_id = r.varint()?;
            let index = r.varint()?;
            let payload = r.rest();
            let kind = if t == tag::MESSAGE_TEXT {
                if std::str::from_utf8(&payload).is_err() {
                    return Err(TunnelError("text message is not UTF-8"));
                }
                MessageKind::Text
            } else {
                MessageKind::Binary
            };
            Frame::Message {
                conn_id,
                index,
                kind,
                payload,
            }
        }
        tag::ACK => Frame::Ack {
            conn_id: r.varint()?,
            index: r.varint()?,
        },
        tag::CLOSE => Frame::Close {
            conn_id: r.varint()?,
            code: u16_field(r)?,
            reason: r.string()?,
        },
        tag::KEEPALIVE => Frame::Keepalive { nonce: r.varint()? },
        tag::KEEPALIVE_ACK => Frame::KeepaliveAck { nonce: r.varint()? },
        tag::DRAIN => Frame::Drain,
        tag::DRAINED => Frame::Drained,
        tag::HTTP_REQUEST..=tag::HTTP_CREDIT => http::decode(t, r)?,
        _ => return Err(TunnelError("unknown frame type")),
    })
}

#[cfg(test)]
mod tests;
