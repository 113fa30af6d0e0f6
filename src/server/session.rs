//! A WebSocket session after the upgrade: the read/keepalive/close loop,
//! for both kinds of WebSocket the gateway terminates: a client of an actor,
//! and a runner's tunnel.
//!
//! One task per connection. While idle it waits for readability or a signal
//! from its worker (queued frames, timer sweep, close request), holding no
//! buffer and no timer: read and write buffers are borrowed from the
//! worker's pool only while bytes are in flight.

use std::io;
use std::rc::Rc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use monoio::net::TcpStream;
use tracing::{debug, warn};

use super::io::{linger_close, read_into, ReadOutcome};
use super::mux::{LinkView, Tunnel};
use super::outbox::Outbox;
use super::registry::{ConnControl, Registration, Signal};
use super::worker::Worker;
use crate::tunnel::{decode_frames, Frame, MessageKind, PROTOCOL_VERSION};
use crate::ws::keepalive::{Keepalive, KeepaliveAction};
use crate::ws::{CloseCode, Decoder, Event, OpCode, ProtocolError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// We sent a close frame and wait for the peer's, until the deadline.
    Closing {
        deadline: Instant,
    },
    /// Say nothing more; close politely (shutdown, then drain input).
    Finished,
    /// The peer is gone or unresponsive: just drop the socket.
    Abandoned,
}

/// What the session's messages are for.
pub(crate) enum Handler {
    /// A client of an actor: its messages go to the actor's runner.
    Client { conn_id: u64, next_index: u64 },
    /// A runner's tunnel, before (`tunnel: None`) and after its hello.
    Tunnel {
        control: Rc<ConnControl>,
        tunnel: Option<Rc<Tunnel>>,
    },
}

pub(crate) struct Session {
    worker: Rc<Worker>,
    handler: Handler,
    decoder: Decoder,
    keepalive: Keepalive,
    outbox: Outbox,
    state: State,
    /// The close code and reason the peer sent, reported to the runner.
    peer_close: Option<Box<(u16, String)>>,
    /// Resumed because the socket is readable: read before parking again.
    input_expected: bool,
}

/// A client session while its connection is parked.
pub(crate) struct ParkedSession {
    conn_id: u64,
    next_index: u64,
    keepalive: Keepalive,
}

enum Wake {
    Readable(io::Result<()>),
    Signal(Signal),
}

impl Session {
    pub fn new(worker: Rc<Worker>, handler: Handler) -> Self {
        let max_message = match handler {
            Handler::Client { .. } => worker.config.client.max_message_bytes,
            Handler::Tunnel { .. } => worker.config.runners.max_message_bytes,
        };
        Session {
            decoder: Decoder::new(max_message),
            keepalive: Keepalive::new(Instant::now()),
            outbox: Outbox::default(),
            state: State::Open,
            handler,
            worker,
            peer_close: None,
            input_expected: false,
        }
    }

    pub fn expect_input(&mut self) {
        self.input_expected = true;
    }

    /// What a parked connection keeps of its session: everything else is
    /// idle state that is rebuilt on resume.
    pub fn into_parked(self) -> ParkedSession {
        let (conn_id, next_index) = match self.handler {
            Handler::Client {
                conn_id,
                next_index,
            } => (conn_id, next_index),
            Handler::Tunnel { .. } => (0, 0), // never parked (see `parkable`)
        };
        ParkedSession {
            conn_id,
            next_index,
            keepalive: self.keepalive,
        }
    }

    pub fn from_parked(worker: Rc<Worker>, parked: ParkedSession) -> Self {
        let mut s = Session::new(
            worker,
            Handler::Client {
                conn_id: parked.conn_id,
                next_index: parked.next_index,
            },
        );
        s.keepalive = parked.keepalive;
        s
    }

    pub async fn run(
        mut self,
        mut stream: TcpStream,
        first_bytes: BytesMut,
        registration: Registration,
    ) {
        let worker = self.worker.clone();
        let control = &registration.control;
        let pool = &worker.pool;
        let cfg = &worker.config.client;

        let mut read_buf = None;
        let mut parking = None;
        if first_bytes.is_empty() {
            pool.give_back(first_bytes);
        } else {
            read_buf = self.consume(first_bytes);
        }
        loop {
            if !self.outbox.is_empty() {
                control.set_deadline(Instant::now() + cfg.send_timeout);
                // Boxed: the flush and read futures are large and only live
                // while bytes move; inline they would be part of every idle
                // connection's footprint (see docs/ARCHITECTURE.md).
                let flush = Box::pin(self.outbox.flush(&mut stream, pool, control));
                if flush.await.is_err() {
                    self.state = State::Abandoned;
                }
                if let Handler::Tunnel {
                    tunnel: Some(tunnel),
                    ..
                } = &self.handler
                {
                    tunnel.flushed();
                }
            }
            if matches!(self.state, State::Finished | State::Abandoned) {
                break;
            }
            control.set_deadline(self.deadline());
            let link = match self.handler {
                Handler::Client { conn_id, .. } => worker.mux.link_view(conn_id),
                Handler::Tunnel { .. } => LinkView::Gone,
            };
            if read_buf.is_none() && self.parkable(&link) && !control.has_pending() {
                if let Some(parker) = worker.parker.clone() {
                    parking = Some(parker);
                    break;
                }
            }
            let wake = if self.must_not_read(&link, &registration) {
                Wake::Signal(control.next_signal().await)
            } else {
                monoio::select! {
                    r = stream.readable(false) => Wake::Readable(r),
                    signal = control.next_signal() => Wake::Signal(signal),
                }
            };
            match wake {
                Wake::Readable(Err(_)) => self.state = State::Abandoned,
                Wake::Readable(Ok(())) => {
                    self.input_expected = false;
                    let buf = read_buf.take().unwrap_or_else(|| pool.take());
                    match Box::pin(read_into(&mut stream, buf, pool.buffer_bytes())).await {
                        (ReadOutcome::Data(_), buf) => {
                            self.keepalive.heard_from_peer(Instant::now());
                            read_buf = self.consume(buf);
                        }
                        (outcome, _) => {
                            debug!(?outcome, "peer went away without a close frame");
                            self.state = State::Abandoned;
                        }
                    }
                }
                Wake::Signal(Signal::Close(code, reason)) => self.close(code, &reason),
                Wake::Signal(Signal::Outbound) => self.collect_outbound(&registration),
                Wake::Signal(Signal::Timer) => self.on_timer(Instant::now()),
            }
        }
        if let Some(parker) = parking {
            // The task ends here; the parker watches the socket (no task,
            // no buffer, no timer) until something needs this connection.
            return parker.park(stream, self, registration);
        }
        self.ended();
        drop(registration);
        if self.state == State::Finished {
            // A task of its own, so its timer is not part of every idle session.
            let scratch = read_buf.take().unwrap_or_default();
            monoio::spawn(linger_close(stream, scratch, cfg.close_timeout));
        }
    }

    /// Idle, with nothing half-read or unsent, and its actor asleep.
    fn parkable(&self, link: &LinkView) -> bool {
        matches!(link, LinkView::Hibernated)
            && self.state == State::Open
            && !self.input_expected
            && self.outbox.is_empty()
            && !self.decoder.is_mid_message()
            // A due keepalive is handled before parking, or it would only
            // unpark and park again.
            && self.deadline() > Instant::now()
    }

    /// A client of a congested tunnel stops reading (backpressure on that
    /// runner's clients only) until the tunnel drains and pokes it.
    fn must_not_read(&self, link: &LinkView, registration: &Registration) -> bool {
        match link {
            LinkView::Running { .. } if self.state != State::Open => false,
            // Poked by the acknowledgement that brings it under the limit.
            LinkView::Running {
                backlogged: true, ..
            } => true,
            LinkView::Running { tunnel, .. } if tunnel.is_congested() => {
                tunnel.wait_until_uncongested(&registration.control);
                true
            }
            _ => false,
        }
    }

    fn collect_outbound(&mut self, registration: &Registration) {
        let pool = &self.worker.pool;
        match &self.handler {
            Handler::Client { .. } => {
                let outbox = &mut self.outbox;
                let open = self.state == State::Open;
                registration.control.drain_outbound(|(op, payload)| {
                    if open {
                        outbox.push(pool, op, &payload);
                    }
                });
            }
            Handler::Tunnel {
                tunnel: Some(tunnel),
                ..
            } => {
                if let Some(batch) = tunnel.take_pending() {
                    self.outbox.push(pool, OpCode::Binary, &batch);
                }
            }
            Handler::Tunnel { tunnel: None, .. } => {}
        }
    }

    /// The session is over: let the rest of the worker know.
    fn ended(&mut self) {
        match &self.handler {
            Handler::Client { conn_id, .. } => {
                let (code, reason) = self
                    .peer_close
                    .take()
                    .map_or((1006, "connection lost".into()), |b| *b);
                // 1006 means no close frame came: the client vanished.
                self.worker
                    .mux
                    .client_closed(*conn_id, code, &reason, code != 1006);
            }
            Handler::Tunnel {
                tunnel: Some(tunnel),
                ..
            } => self.worker.mux.remove_tunnel(tunnel),
            Handler::Tunnel { tunnel: None, .. } => {}
        }
    }

    /// Decodes what `buf` holds; returns the buffer if a partial frame remains in it.
    fn consume(&mut self, mut buf: BytesMut) -> Option<BytesMut> {
        while self.is_listening() {
            match self.decoder.decode(&mut buf) {
                Ok(Some(event)) => self.on_event(event),
                Ok(None) => break,
                Err(e) => self.fail(e),
            }
        }
        if buf.is_empty() {
            self.worker.pool.give_back(buf);
            None
        } else {
            Some(buf)
        }
    }

    fn is_listening(&self) -> bool {
        matches!(self.state, State::Open | State::Closing { .. })
    }

    fn on_event(&mut self, event: Event) {
        let pool = &self.worker.pool;
        match (event, self.state) {
            (Event::Text(payload), State::Open) => self.on_message(MessageKind::Text, payload),
            (Event::Binary(payload), State::Open) => self.on_message(MessageKind::Binary, payload),
            (Event::Ping(payload), State::Open) => self.outbox.push(pool, OpCode::Pong, &payload),
            (Event::Close(frame), State::Open) => {
                // Echo the status code back (RFC 6455 §5.5.1), then we are done.
                let code = frame.as_ref().map(|f| f.code);
                self.peer_close = Some(Box::new(match &frame {
                    Some(f) => (f.code.0, String::from_utf8_lossy(&f.reason).into_owned()),
                    None => (1005, String::new()),
                }));
                self.outbox.push_close(pool, code, "");
                self.state = State::Finished;
            }
            (Event::Close(_), State::Closing { .. }) => self.state = State::Finished,
            // Pongs only prove liveness; data after our close frame is discarded.
            _ => {}
        }
    }

    fn on_message(&mut self, kind: MessageKind, payload: Bytes) {
        match &mut self.handler {
            Handler::Client {
                conn_id,
                next_index,
            } => {
                *next_index += 1;
                self.worker
                    .mux
                    .forward(*conn_id, *next_index, kind, &payload);
            }
            Handler::Tunnel { .. } if kind == MessageKind::Text => {
                self.fail(ProtocolError::new(
                    CloseCode(1003),
                    "tunnel messages are binary",
                ));
            }
            Handler::Tunnel { .. } => self.on_tunnel_message(payload),
        }
    }

    fn on_tunnel_message(&mut self, payload: Bytes) {
        for frame in decode_frames(payload) {
            let frame = match frame {
                Ok(f) => f,
                Err(e) => {
                    warn!(error = %e, "malformed tunnel frame: closing that tunnel");
                    return self.fail(ProtocolError::new(CloseCode::PROTOCOL, e.0));
                }
            };
            let Handler::Tunnel { control, tunnel } = &mut self.handler else {
                return;
            };
            let result = match tunnel {
                Some(tunnel) => self.worker.mux.on_tunnel_frame(tunnel, frame),
                None => match hello(&self.worker, frame, control.clone()) {
                    Ok(t) => {
                        *tunnel = Some(t);
                        Ok(())
                    }
                    Err(reason) => return self.fail_with(CloseCode::PROTOCOL, reason),
                },
            };
            if let Err(e) = result {
                warn!(error = %e, "tunnel protocol violation: closing that tunnel");
                return self.fail(ProtocolError::new(CloseCode::PROTOCOL, e.0));
            }
        }
    }

    fn fail(&mut self, error: ProtocolError) {
        self.fail_with(error.code, error.reason.to_owned());
    }

    fn fail_with(&mut self, code: CloseCode, reason: String) {
        debug!(code = code.0, %reason, "failing websocket");
        self.outbox
            .push_close(&self.worker.pool, Some(code), &reason);
        self.peer_close = Some(Box::new((
            1006,
            format!("gateway closed the connection: {reason}"),
        )));
        self.state = State::Finished;
    }

    /// Starts the closing handshake from our side.
    fn close(&mut self, code: CloseCode, reason: &str) {
        if self.state == State::Open {
            self.outbox
                .push_close(&self.worker.pool, Some(code), reason);
            let deadline = Instant::now() + self.worker.config.client.close_timeout;
            self.state = State::Closing { deadline };
        }
    }

    fn deadline(&self) -> Instant {
        match self.state {
            State::Closing { deadline } => deadline,
            _ => self.keepalive.deadline(&self.worker.keepalive),
        }
    }

    fn on_timer(&mut self, now: Instant) {
        match self.state {
            State::Closing { deadline } if now >= deadline => self.state = State::Abandoned,
            State::Open => match self.keepalive.on_timer(now, &self.worker.keepalive) {
                KeepaliveAction::SendPing => {
                    self.outbox
                        .push(&self.worker.pool, OpCode::Ping, &Bytes::new())
                }
                KeepaliveAction::PeerDead => {
                    debug!("peer missed ping_timeout");
                    self.outbox.push_close(
                        &self.worker.pool,
                        Some(CloseCode::GOING_AWAY),
                        "ping timeout",
                    );
                    self.peer_close = Some(Box::new((1006, "ping timeout".into())));
                    self.state = State::Abandoned;
                }
                KeepaliveAction::Nothing => {}
            },
            _ => {}
        }
    }
}

/// A runner's first frame: check its version, register its tunnel, welcome it.
fn hello(worker: &Worker, frame: Frame, control: Rc<ConnControl>) -> Result<Rc<Tunnel>, String> {
    let Frame::Hello { version, .. } = &frame else {
        return Err("the first tunnel frame must be hello".into());
    };
    if *version != PROTOCOL_VERSION {
        return Err(format!(
            "unsupported tunnel protocol version {version}; this gateway speaks {PROTOCOL_VERSION}"
        ));
    }
    let tunnel = worker.mux.add_tunnel(&frame, control).ok_or("bad hello")?;
    tunnel.send(&Frame::Welcome {
        version: PROTOCOL_VERSION,
        workers: worker.worker_count as u32,
        tunnel_index: worker.id as u32,
        ping_interval_ms: worker.config.client.ping_interval.as_millis() as u64,
    });
    Ok(tunnel)
}
