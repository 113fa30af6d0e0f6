//! One tunnel of a runner: a blocking WebSocket client on its own thread,
//! reconnecting with exponential backoff.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tracing::{debug, info, warn};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message as WsMessage, WebSocket};

use self::batch::load_record;
use self::transport::Transport;
use super::actor::{Actor, ActorIo, ConnId, ConnInfo, Ctx, Message, OpenDecision};
use super::Shared;
use crate::tunnel::{decode_frames, encode_frame, Frame, MessageKind, PROTOCOL_VERSION};

mod batch;
mod http;
mod kept;
mod members;
mod outbox;
mod resend;
mod transport;

/// The most tunnels a runner opens, whatever a gateway's welcome asks (one
/// per gateway worker; the gateway has at most 256).
const MAX_TUNNELS: u32 = 1024;

pub(crate) fn spawn_tunnel(shared: &Arc<Shared>, index: u32) {
    let s = shared.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("runner-tunnel-{index}"))
        .spawn(move || run_tunnel(s, index));
    match spawned {
        Ok(handle) => {
            if let Ok(mut threads) = shared.threads.lock() {
                threads.push(handle);
            }
        }
        // The tunnels already open go on; their actors are served.
        Err(e) => warn!(index, error = %e, "cannot start a tunnel thread"),
    }
}

fn run_tunnel(shared: Arc<Shared>, index: u32) {
    let mut backoff = Duration::from_millis(50);
    while !shared.stopped.load(Ordering::Acquire) {
        match connect(&shared, index) {
            Ok(ws) => {
                backoff = Duration::from_millis(50);
                let mut tunnel = TunnelState::default();
                let result = tunnel.serve(&shared, ws, index);
                if tunnel.welcomed {
                    shared.connected.fetch_sub(1, Ordering::AcqRel);
                }
                if tunnel.drained {
                    shared.drained.fetch_sub(1, Ordering::AcqRel);
                }
                shared
                    .running
                    .fetch_sub(tunnel.actors.len(), Ordering::AcqRel);
                match result {
                    Ok(()) => return,
                    Err(TunnelEnd::Replaced) => {
                        warn!(
                            tunnel = index,
                            "another runner connected with this runner's key: this tunnel stops"
                        );
                        return;
                    }
                    Err(TunnelEnd::Restarting) => {
                        info!(tunnel = index, "gateway upgrading: reconnecting");
                        continue;
                    }
                    Err(TunnelEnd::Lost(e)) => {
                        warn!(tunnel = index, error = %e, "tunnel lost; reconnecting")
                    }
                }
            }
            Err(e) => debug!(tunnel = index, error = %e, "cannot connect to the gateway"),
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(shared.options.max_backoff);
    }
}

type Ws = WebSocket<Transport>;

/// The gateway's close code for a tunnel replaced by a newer runner with the same key.
const REPLACED_CODE: u16 = 4409;
/// The gateway's close code when it hands over to a new process (an
/// upgrade): the new one is already listening.
const RESTART_CODE: u16 = 1012;

enum TunnelEnd {
    /// Another runner took this key: do not reconnect.
    Replaced,
    /// The gateway is upgrading: reconnect at once.
    Restarting,
    Lost(String),
}

fn connect(shared: &Shared, index: u32) -> Result<Ws, String> {
    let o = &shared.options;
    let url = format!("{}/runners/connect?tunnel={index}", o.gateway);
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| e.to_string())?;
    let auth = format!("Bearer {}", o.token)
        .parse()
        .map_err(|_| "token is not a valid header value".to_string())?;
    request.headers_mut().insert("authorization", auth);
    let host = request
        .uri()
        .host()
        .ok_or("gateway URL has no host")?
        .to_owned();
    let tls = request.uri().scheme_str() == Some("wss");
    let port = request
        .uri()
        .port_u16()
        .unwrap_or(if tls { 443 } else { 80 });
    let tls = match tls {
        true => Some(crate::tls::load_client_config(o.tls_ca.as_deref())?),
        false => None,
    };
    let stream = Transport::connect((&host, port), tls, shared.options.handshake_timeout)?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(256 << 20))
        .max_frame_size(Some(256 << 20));
    let (mut ws, _) = tungstenite::client::client_with_config(request, stream, Some(config))
        .map_err(|e| match e {
            tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r)) => {
                format!("gateway refused the tunnel: {}", r.status())
            }
            other => other.to_string(),
        })?;
    let mut hello = BytesMut::new();
    encode_frame(
        &mut hello,
        &Frame::Hello {
            version: PROTOCOL_VERSION,
            runner_key: o.key.clone(),
            pool: o.pool.clone(),
            capacity: o.capacity,
            tunnel_index: index,
            actor_names: shared.factory.actor_names(),
            features: crate::tunnel::features::SUPPORTED,
        },
    );
    ws.send(WsMessage::Binary(hello.freeze()))
        .map_err(|e| e.to_string())?;
    // Writes wait for the gateway as long as it takes (its backpressure),
    // as before the handshake's bound.
    ws.get_ref()
        .tcp()
        .set_write_timeout(None)
        .map_err(|e| e.to_string())?;
    // Short reads so the thread notices `stop` promptly.
    ws.get_ref()
        .tcp()
        .set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

impl ActorSlot {
    /// The number its next saved record gets: past the gateway's last
    /// mark too, so that a store that lost its records (or never had
    /// them) does not number from 1 again.
    fn next_seq(&self) -> u64 {
        self.saved_seq
            .max(self.marks_seen.saturating_sub(1))
            .saturating_add(1)
    }
}

struct ActorSlot {
    name: String,
    key: Vec<String>,
    actor: Box<dyn Actor>,
    conns: BTreeSet<ConnId>,
    /// Handled indices from the saved record, for connections not restored yet.
    saved_handled: HashMap<ConnId, u64>,
    /// What the saved records' batches made the actor send, until a
    /// restore shows what reached the gateways (`kept.rs`, `outbox.rs`).
    kept: kept::Kept,
    /// Which saved records each connection was a member of (`members.rs`).
    members: members::Members,
    /// The saved record's sequence number.
    saved_seq: u64,
    /// The number of the record it started from.
    loaded_seq: u64,
    /// `StartActor.output_seen`: the last mark the gateway received, plus
    /// one; 0 if it does not know (then restores' indices tell).
    output_seen: u64,
    /// The highest mark plus one any gateway said it received (start or
    /// restores): records are numbered past it.
    marks_seen: u64,
}

/// The actors and connections of one tunnel.
#[derive(Default)]
struct TunnelState {
    welcomed: bool,
    /// The gateway takes `OutputMark` frames and says in `StartActor`
    /// which it received last.
    marks: bool,
    /// The gateway says per connection what it received
    /// (`RestoreConn.output_seen`) and waits for a restore's `Ack`.
    conn_marks: bool,
    actors: HashMap<u64, ActorSlot>,
    conn_actor: HashMap<ConnId, u64>,
    /// Highest message index handled per connection: replays are dropped.
    last_index: HashMap<ConnId, u64>,
    /// Output numbering, attachments and HTTP requests every actor's
    /// `Ctx` reaches; also whether the gateway takes `Broadcast` frames.
    io: ActorIo,
    /// Attachments set again by output sent again (`resend_lost_output`)
    /// this batch, for connections whose restore comes later in it.
    resent_attachments: HashMap<ConnId, Bytes>,
    /// Per actor, the highest record whose kept output went again this
    /// batch: its mark ends the batch, so the gateways know it arrived.
    resent_marks: HashMap<u64, u64>,
    /// Restores of this batch, answered together (`resend.rs`) before the
    /// batch's next other frame.
    queued_restores: Vec<(Frame, u32)>,
    /// Actors that handled something in this batch: saved before it is acknowledged.
    dirty: BTreeSet<u64>,
    drain_sent: bool,
    drained: bool,
    /// The gateway takes HTTP frames (its welcome said so).
    http: bool,
}

/// One received batch as it is handled: the answer being built, which
/// bytes of it each actor produced, and actors whose save failed.
#[derive(Default)]
struct Batch {
    out: BytesMut,
    touched: Vec<(u64, std::ops::Range<usize>)>,
    failed: Vec<(u64, String)>,
}

fn is_timeout(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if matches!(io.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}

impl TunnelState {
    /// Serves the tunnel until it fails (`Err`) or the runner stops (`Ok`).
    fn serve(&mut self, shared: &Arc<Shared>, mut ws: Ws, index: u32) -> Result<(), TunnelEnd> {
        loop {
            if shared.killed.load(Ordering::Acquire) {
                {
                    die(&ws);
                    return Ok(());
                }
            }
            if shared.stopped.load(Ordering::Acquire) {
                let _ = ws.close(None);
                let _ = ws.flush();
                return Ok(());
            }
            if self.welcomed && shared.draining.load(Ordering::Acquire) && !self.drain_sent {
                self.drain_sent = true;
                let mut drain = BytesMut::new();
                encode_frame(&mut drain, &Frame::Drain);
                ws.send(WsMessage::Binary(drain.freeze()))
                    .map_err(|e| TunnelEnd::Lost(e.to_string()))?;
            }
            let message = match ws.read() {
                Ok(m) => m,
                Err(e) if is_timeout(&e) => continue,
                Err(e) => return Err(TunnelEnd::Lost(e.to_string())),
            };
            let batch_bytes = match message {
                WsMessage::Binary(b) => b,
                WsMessage::Close(Some(f)) if u16::from(f.code) == REPLACED_CODE => {
                    return Err(TunnelEnd::Replaced)
                }
                WsMessage::Close(Some(f)) if u16::from(f.code) == RESTART_CODE => {
                    return Err(TunnelEnd::Restarting)
                }
                WsMessage::Close(frame) => {
                    return Err(TunnelEnd::Lost(format!(
                        "gateway closed the tunnel: {frame:?}"
                    )))
                }
                _ => continue,
            };
            let mut batch = Batch::default();
            for frame in decode_frames(batch_bytes) {
                let frame = frame.map_err(|e| {
                    TunnelEnd::Lost(format!("malformed frame from the gateway: {e}"))
                })?;
                self.handle_in_batch(shared, frame, index, &mut batch);
            }
            if shared.killed.load(Ordering::Acquire) {
                {
                    die(&ws);
                    return Ok(());
                }
            }
            // Saved before `out` (which acknowledges what they handled) leaves.
            let out = self.finish_batch(shared, batch);
            if shared.killed.load(Ordering::Acquire) {
                // Killed between the save and the send, as kill -9 can be.
                die(&ws);
                return Ok(());
            }
            if !out.is_empty() {
                ws.send(WsMessage::Binary(out.freeze()))
                    .map_err(|e| TunnelEnd::Lost(e.to_string()))?;
            }
        }
    }

    fn handle(&mut self, shared: &Arc<Shared>, frame: Frame, index: u32, out: &mut BytesMut) {
        match frame {
            Frame::Welcome {
                workers, features, ..
            } => {
                self.io.broadcasts = features & crate::tunnel::features::BROADCAST != 0;
                self.marks = features & crate::tunnel::features::OUTPUT_MARKS != 0;
                self.conn_marks = features & crate::tunnel::features::CONN_MARKS != 0;
                self.http = features & crate::tunnel::features::HTTP != 0;
                self.on_welcome(shared, workers, index)
            }
            Frame::StartActor {
                actor_id,
                name,
                key,
                output_seen,
                ..
            } => self.on_start_actor(shared, actor_id, (name, key), output_seen, out),
            Frame::StopActor { actor_id } => self.on_stop_actor(shared, actor_id, out),
            Frame::ConnOpen {
                conn_id,
                actor_id,
                path,
                query,
                headers,
                protocols,
                peer,
            } => {
                let info = ConnInfo {
                    path,
                    query,
                    headers,
                    protocols,
                    peer: peer.parse().ok(),
                };
                self.on_conn_open(conn_id, actor_id, info, out)
            }
            Frame::Message {
                conn_id,
                index: msg_index,
                kind,
                payload,
            } => self.on_message(conn_id, msg_index, kind, payload, out),
            Frame::Close {
                conn_id,
                code,
                reason,
            } => self.on_close(conn_id, code, &reason, out),
            Frame::RestoreConn { .. } => self.restore(frame, out),
            Frame::HttpRequest(_)
            | Frame::HttpBody { .. }
            | Frame::HttpEnd { .. }
            | Frame::HttpCancel { .. }
            | Frame::HttpCredit { .. } => self.on_http_frame(frame, out),
            Frame::Keepalive { nonce } => encode_frame(out, &Frame::KeepaliveAck { nonce }),
            Frame::Drained if !self.drained => {
                self.drained = true;
                shared.drained.fetch_add(1, Ordering::AcqRel);
                info!(
                    tunnel = index,
                    "gateway: nothing runs on this tunnel any more"
                );
            }
            _ => {}
        }
    }

    fn on_welcome(&mut self, shared: &Arc<Shared>, workers: u32, index: u32) {
        if index == 0 {
            info!(workers, "connected to the gateway");
            // Tunnel 0 learns how many tunnels the gateway wants: one per worker.
            // Bounded: the count comes from whatever answered the dial.
            let workers = workers.min(MAX_TUNNELS);
            let have = shared.spawned.load(Ordering::Acquire) as u32;
            for i in have..workers {
                spawn_tunnel(shared, i);
            }
            shared
                .spawned
                .store(workers.max(1) as usize, Ordering::Release);
            shared.welcomed.store(true, Ordering::Release);
        }
        // A tunnel counts as connected once the gateway has welcomed it.
        if !self.welcomed {
            self.welcomed = true;
            shared.connected.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn on_start_actor(
        &mut self,
        shared: &Arc<Shared>,
        actor_id: u64,
        (name, key): (String, Vec<String>),
        output_seen: u64,
        out: &mut BytesMut,
    ) {
        let running = shared.running.fetch_add(1, Ordering::AcqRel);
        let created = if running as u32 >= shared.options.capacity {
            Err("runner at capacity")
        } else {
            shared
                .factory
                .create(&name, &key)
                .ok_or("unknown actor name")
        };
        let mut actor = match created {
            Ok(actor) => actor,
            Err(reason) => {
                shared.running.fetch_sub(1, Ordering::AcqRel);
                let reason = reason.into();
                return encode_frame(out, &Frame::ActorStopped { actor_id, reason });
            }
        };
        let record = load_record(shared, &name, &key);
        if !record.state.is_empty() {
            actor.load_state(&record.state);
        }
        let members = members::Members::load(record.seq, &record.handled, record.spans);
        let slot = ActorSlot {
            name,
            key,
            actor,
            conns: BTreeSet::new(),
            saved_handled: record.handled.into_iter().collect(),
            kept: record
                .earlier
                .into_iter()
                .chain((!record.outbox.is_empty()).then_some((record.seq, record.outbox)))
                .collect(),
            members,
            saved_seq: record.seq,
            loaded_seq: record.seq,
            output_seen: if self.marks { output_seen } else { 0 },
            marks_seen: if self.marks { output_seen } else { 0 },
        };
        self.actors.insert(actor_id, slot);
        encode_frame(out, &Frame::ActorReady { actor_id });
    }

    fn on_stop_actor(&mut self, shared: &Arc<Shared>, actor_id: u64, out: &mut BytesMut) {
        // Its requests are given back (or cut) before it is said stopped.
        self.io.requests.stop_actor(out, actor_id);
        if let Some(slot) = self.actors.remove(&actor_id) {
            shared.running.fetch_sub(1, Ordering::AcqRel);
            for c in slot.conns {
                self.forget_conn(c);
            }
        }
        // Everything before this frame was handled (and acknowledged
        // above it in `out`): the gateway may start the actor elsewhere.
        let reason = "stopped".into();
        encode_frame(out, &Frame::ActorStopped { actor_id, reason });
    }

    fn on_conn_open(&mut self, conn_id: u64, actor_id: u64, info: ConnInfo, out: &mut BytesMut) {
        let Some(slot) = self.actors.get_mut(&actor_id) else {
            let reason = "actor is not running here".to_owned();
            let status = 503;
            return encode_frame(
                out,
                &Frame::ConnReject {
                    conn_id,
                    status,
                    reason,
                },
            );
        };
        slot.conns.insert(conn_id);
        // What on_open sends goes after the decision, so the gateway
        // knows the connection when those messages arrive.
        let mut early = BytesMut::new();
        let mut ctx = Ctx::new(actor_id, &slot.conns, &mut early, &mut self.io);
        match slot.actor.on_open(&mut ctx, conn_id, &info) {
            OpenDecision::Accept {
                protocol,
                hibernatable,
            } => {
                let accept = Frame::ConnAccept {
                    conn_id,
                    protocol,
                    hibernatable,
                };
                encode_frame(out, &accept);
                out.extend_from_slice(&early);
                self.conn_actor.insert(conn_id, actor_id);
                slot.members.join(conn_id, slot.next_seq());
            }
            OpenDecision::Reject { status, reason } => {
                slot.conns.remove(&conn_id);
                encode_frame(
                    out,
                    &Frame::ConnReject {
                        conn_id,
                        status,
                        reason,
                    },
                );
            }
        }
    }

    fn on_message(
        &mut self,
        conn_id: u64,
        msg_index: u64,
        kind: MessageKind,
        payload: Bytes,
        out: &mut BytesMut,
    ) {
        let Some(&actor_id) = self.conn_actor.get(&conn_id) else {
            return;
        };
        let last = self.last_index.entry(conn_id).or_insert(0);
        if msg_index != 0 && msg_index <= *last {
            // A replay of something already handled: acknowledged
            // again so the gateway stops keeping it.
            let index = msg_index;
            return encode_frame(out, &Frame::Ack { conn_id, index });
        }
        *last = msg_index;
        let Some(slot) = self.actors.get_mut(&actor_id) else {
            return;
        };
        let message = match kind {
            MessageKind::Text => Message::Text(String::from_utf8_lossy(&payload).into_owned()),
            MessageKind::Binary => Message::Binary(payload),
        };
        let mut ctx = Ctx::new(actor_id, &slot.conns, &mut *out, &mut self.io);
        slot.actor.on_message(&mut ctx, conn_id, message);
        self.dirty.insert(actor_id);
        let index = msg_index;
        encode_frame(out, &Frame::Ack { conn_id, index });
    }

    fn on_close(&mut self, conn_id: u64, code: u16, reason: &str, out: &mut BytesMut) {
        let Some(actor_id) = self.conn_actor.get(&conn_id).copied() else {
            return;
        };
        if let Some(slot) = self.actors.get_mut(&actor_id) {
            slot.conns.remove(&conn_id);
            slot.members.leave(conn_id, slot.next_seq());
            // The actor may still read the connection's attachment here.
            let mut ctx = Ctx::new(actor_id, &slot.conns, &mut *out, &mut self.io);
            slot.actor.on_close(&mut ctx, conn_id, code, reason);
            self.dirty.insert(actor_id);
        }
        self.forget_conn(conn_id);
    }

    fn forget_conn(&mut self, conn_id: ConnId) {
        self.conn_actor.remove(&conn_id);
        self.last_index.remove(&conn_id);
        self.io.out_index.remove(&conn_id);
        self.io.attachments.remove(&conn_id);
    }

    /// A hibernated connection handed to this (woken) actor: no open event.
    fn restore(&mut self, frame: Frame, out: &mut BytesMut) {
        let Frame::RestoreConn {
            conn_id,
            actor_id,
            path,
            query,
            headers,
            protocol,
            attachment,
            last_index,
            peer,
            ..
        } = frame
        else {
            return;
        };
        let Some(slot) = self.actors.get_mut(&actor_id) else {
            return;
        };
        slot.conns.insert(conn_id);
        slot.members.join(conn_id, slot.next_seq());
        self.conn_actor.insert(conn_id, actor_id);
        // Messages up to what the gateway saw acknowledged were handled, and
        // so were those the saved state reflects (handled, saved, and then
        // the runner died before the acknowledgement left).
        let saved = slot.saved_handled.remove(&conn_id).unwrap_or(0);
        self.last_index.insert(conn_id, last_index.max(saved));
        let attachment = self
            .resent_attachments
            .remove(&conn_id)
            .unwrap_or(attachment);
        if !attachment.is_empty() {
            self.io.attachments.insert(conn_id, attachment);
        }
        let info = ConnInfo {
            path,
            query,
            headers,
            protocols: protocol.into_iter().collect(),
            peer: peer.parse().ok(),
        };
        if self.conn_marks {
            // Says the restore was handled: a gateway holds the actor's
            // broadcasts and marks back from it until then (what the actor
            // said before did not include it). Before `on_restore`: what it
            // says to all there includes this connection.
            let index = last_index.max(saved);
            encode_frame(out, &Frame::Ack { conn_id, index });
        }
        let mut ctx = Ctx::new(actor_id, &slot.conns, &mut *out, &mut self.io);
        slot.actor.on_restore(&mut ctx, conn_id, &info);
    }
}

/// Drops the tunnel like a dying process would: no close frame, no goodbye.
fn die(ws: &Ws) {
    let _ = ws.get_ref().tcp().shutdown(std::net::Shutdown::Both);
}

#[cfg(test)]
mod tests;
