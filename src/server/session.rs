//! A WebSocket session after the upgrade: the read/keepalive/close loop.
//!
//! One task per connection. While idle it waits for readability or a signal
//! from its worker (timer sweep, shutdown), holding no buffer and no timer:
//! read and write buffers are borrowed from the worker's pool only while
//! bytes are in flight.

use std::io;
use std::rc::Rc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use monoio::net::TcpStream;
use tracing::debug;

use super::io::{linger_close, read_into, ReadOutcome};
use super::outbox::Outbox;
use super::registry::Signal;
use super::worker::Worker;
use crate::ws::keepalive::{Keepalive, KeepaliveAction};
use crate::ws::{CloseCode, Decoder, Event, OpCode, ProtocolError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// We sent a close frame and wait for the client's, until the deadline.
    Closing {
        deadline: Instant,
    },
    /// Say nothing more; close politely (shutdown, then drain input).
    Finished,
    /// The peer is gone or unresponsive: just drop the socket.
    Abandoned,
}

pub(crate) struct Session {
    worker: Rc<Worker>,
    /// Offered subprotocols, kept for the runner that will choose one.
    #[allow(dead_code)]
    protocols: Vec<String>,
    decoder: Decoder,
    keepalive: Keepalive,
    outbox: Outbox,
    state: State,
}

enum Wake {
    Readable(io::Result<()>),
    Signal(Signal),
}

impl Session {
    pub fn new(worker: Rc<Worker>, protocols: Vec<String>) -> Self {
        let cfg = &worker.config.client;
        Session {
            decoder: Decoder::new(cfg.max_message_bytes),
            keepalive: Keepalive::new(Instant::now()),
            outbox: Outbox::default(),
            state: State::Open,
            protocols,
            worker,
        }
    }

    pub async fn run(mut self, mut stream: TcpStream, first_bytes: BytesMut) {
        let worker = self.worker.clone();
        let registration = worker.registry.register(Instant::now());
        let control = &registration.control;
        let pool = &worker.pool;
        let cfg = &worker.config.client;

        let mut read_buf = None;
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
            }
            if matches!(self.state, State::Finished | State::Abandoned) {
                break;
            }
            control.set_deadline(self.deadline());
            let wake = monoio::select! {
                r = stream.readable(false) => Wake::Readable(r),
                signal = control.next_signal() => Wake::Signal(signal),
            };
            match wake {
                Wake::Readable(Err(_)) => self.state = State::Abandoned,
                Wake::Readable(Ok(())) => {
                    let buf = read_buf.take().unwrap_or_else(|| pool.take());
                    match Box::pin(read_into(&mut stream, buf, pool.buffer_bytes())).await {
                        (ReadOutcome::Data(_), buf) => {
                            self.keepalive.heard_from_peer(Instant::now());
                            read_buf = self.consume(buf);
                        }
                        (outcome, _) => {
                            debug!(?outcome, "client went away without a close frame");
                            self.state = State::Abandoned;
                        }
                    }
                }
                Wake::Signal(Signal::Close(code, reason)) => self.close(code, reason),
                Wake::Signal(Signal::Timer) => self.on_timer(Instant::now()),
            }
        }
        drop(registration);
        if self.state == State::Finished {
            // A task of its own, so its timer is not part of every idle session.
            let scratch = read_buf.take().unwrap_or_default();
            monoio::spawn(linger_close(stream, scratch, cfg.close_timeout));
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
            (Event::Text(payload), State::Open) => self.on_message(OpCode::Text, payload),
            (Event::Binary(payload), State::Open) => self.on_message(OpCode::Binary, payload),
            (Event::Ping(payload), State::Open) => self.outbox.push(pool, OpCode::Pong, &payload),
            (Event::Close(frame), State::Open) => {
                // Echo the status code back (RFC 6455 §5.5.1), then we are done.
                self.outbox.push_close(pool, frame.map(|f| f.code), "");
                self.state = State::Finished;
            }
            (Event::Close(_), State::Closing { .. }) => self.state = State::Finished,
            // Pongs only prove liveness; data after our close frame is discarded.
            _ => {}
        }
    }

    /// The built-in echo handler: every message goes back as it came.
    fn on_message(&mut self, opcode: OpCode, payload: Bytes) {
        self.outbox.push(&self.worker.pool, opcode, &payload);
    }

    fn fail(&mut self, error: ProtocolError) {
        debug!(
            code = error.code.0,
            reason = error.reason,
            "failing websocket"
        );
        self.outbox
            .push_close(&self.worker.pool, Some(error.code), error.reason);
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
                    debug!("client missed ping_timeout");
                    self.outbox.push_close(
                        &self.worker.pool,
                        Some(CloseCode::GOING_AWAY),
                        "ping timeout",
                    );
                    self.state = State::Abandoned;
                }
                KeepaliveAction::Nothing => {}
            },
            _ => {}
        }
    }
}
