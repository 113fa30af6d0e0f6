//! A WebSocket session after the upgrade: the read/keepalive/close loop,
//! shared by every kind of WebSocket the gateway terminates. What the
//! messages are for is the [`Role`]'s business (a client of an actor, a
//! runner's tunnel).
//!
//! One task per connection. While idle it waits for readability or a signal
//! from its worker (queued frames, timer sweep, close request), holding no
//! buffer and no timer: read and write buffers are borrowed from the
//! worker's pool only while bytes are in flight.

use std::io;
use std::rc::Rc;
use std::time::Instant;

use super::stream::Stream;
use bytes::{Bytes, BytesMut};
use tracing::debug;

use super::control::{ConnControl, Signal};
use super::env::{ConnEnv, SessionLimits};
use super::io::{linger_close, read_into, ReadOutcome};
use super::outbox::Outbox;
use super::registry::Registration;
use crate::tunnel::MessageKind;
use crate::ws::keepalive::{Keepalive, KeepaliveAction};
use crate::ws::{CloseCode, Decoder, Event, OpCode, ProtocolError};

/// What a role needs from its worker; the session keeps one `Rc` of it.
pub(crate) trait SessionCtx {
    fn env(&self) -> &ConnEnv;
}

/// Whether the session reads its socket at this turn of its loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    Read,
    /// Do not read (backpressure); something pokes the session when it may.
    Hold,
    /// Read, or hand the socket to the parker if nothing at all is going on.
    Park,
    /// An upgrade takes the connection to the next process: hand it to
    /// the role as soon as nothing is half-done (between messages, with
    /// nothing left to write); read meanwhile. A TLS session that cannot
    /// move (TLS 1.2) is closed with 1012.
    HandOver,
}

/// Why the session fails the connection: the close code and reason sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub code: CloseCode,
    pub reason: String,
}

impl From<ProtocolError> for Failure {
    fn from(e: ProtocolError) -> Self {
        Failure {
            code: e.code,
            reason: e.reason.to_owned(),
        }
    }
}

/// What a session's messages are for.
pub(crate) trait Role: Sized + 'static {
    type Ctx: SessionCtx + 'static;

    /// As the configuration sets them now: read at each use, so a reload
    /// reaches running sessions (the largest message is fixed at the start,
    /// with the decoder).
    fn limits(ctx: &Self::Ctx) -> SessionLimits;

    /// Asked before every wait. `open`: no close handshake has begun.
    fn gate(&mut self, ctx: &Self::Ctx, control: &Rc<ConnControl>, open: bool) -> Gate;

    /// A complete data message from the peer.
    fn on_message(
        &mut self,
        ctx: &Self::Ctx,
        kind: MessageKind,
        payload: Bytes,
    ) -> Result<(), Failure>;

    /// Moves what the worker queued for the peer into `outbox`.
    fn collect_outbound(
        &mut self,
        ctx: &Self::Ctx,
        control: &ConnControl,
        outbox: &mut Outbox,
        open: bool,
    );

    /// Whether the peer's frames may come unmasked: a link between two
    /// Tether nodes (`ws::Decoder::for_peer`), never a client's.
    fn unmasked_frames(&self) -> bool {
        false
    }

    /// Everything queued was written.
    fn flushed(&mut self, _ctx: &Self::Ctx) {}

    /// The connection stops being open, once: `code` is the first close
    /// frame's (ours or the peer's; 1005 if it had none), or
    /// `CloseCode::ABNORMAL` if the connection was lost without one.
    fn closing(&mut self, _ctx: &Self::Ctx, _code: CloseCode) {}

    /// The session is over; `code`/`reason` are the peer's close
    /// (`CloseCode::ABNORMAL` when it sent none).
    fn ended(&mut self, ctx: &Self::Ctx, code: CloseCode, reason: &str);

    /// Takes over an idle session that returned [`Gate::Park`]. By default
    /// the session simply goes on as a task.
    fn park(session: Session<Self>, stream: Stream, registration: Registration) {
        monoio::spawn(session.run(stream, BytesMut::new(), registration));
    }

    /// Takes over a session that returned [`Gate::HandOver`], between
    /// messages; `unread` holds the start of the peer's next frame, if any.
    /// A role whose `gate` never says so never gets here; by default the
    /// connection is dropped (going on would only return here again).
    fn hand_over(session: Session<Self>, stream: Stream, unread: BytesMut, reg: Registration) {
        drop((session, stream, unread, reg));
    }
}

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

pub(crate) struct Session<R: Role> {
    ctx: Rc<R::Ctx>,
    role: R,
    decoder: Decoder,
    keepalive: Keepalive,
    outbox: Outbox,
    state: State,
    /// The close code and reason the peer sent, reported to the role.
    peer_close: Option<Box<(CloseCode, String)>>,
    /// Resumed because the socket is readable: read before parking again.
    input_expected: bool,
    /// An upgrade takes the connection: a frame went out first (see
    /// `prepare_move`).
    move_prepared: bool,
    /// Reads bring a large buffer's worth: the next asks for that much
    /// (`BufferPool::reads_big`).
    big_reads: bool,
}

enum Wake {
    Readable(io::Result<()>),
    Signal(Signal),
}

impl<R: Role> Session<R> {
    pub fn new(ctx: Rc<R::Ctx>, role: R) -> Self {
        let max_message = R::limits(&ctx).max_message_bytes;
        let decoder = match role.unmasked_frames() {
            true => Decoder::for_peer(max_message),
            false => Decoder::new(max_message),
        };
        Session {
            decoder,
            keepalive: Keepalive::new(Instant::now()),
            outbox: Outbox::default(),
            state: State::Open,
            role,
            ctx,
            peer_close: None,
            input_expected: false,
            move_prepared: false,
            big_reads: false,
        }
    }

    /// A session resumed from what a parked connection kept.
    pub fn resume(ctx: Rc<R::Ctx>, role: R, keepalive: Keepalive, readable: bool) -> Self {
        let mut s = Session::new(ctx, role);
        s.keepalive = keepalive;
        // Woken by readability: it must read before it may park again.
        s.input_expected = readable;
        s
    }

    pub fn ctx(&self) -> &Rc<R::Ctx> {
        &self.ctx
    }

    /// What a parked connection keeps: everything else is idle state that
    /// is rebuilt on resume.
    pub fn into_parts(self) -> (R, Keepalive) {
        (self.role, self.keepalive)
    }

    pub async fn run(mut self, mut stream: Stream, first: BytesMut, registration: Registration) {
        let ctx = self.ctx.clone();
        let control = &registration.control;
        let pool = &ctx.env().pool;
        let mut read_buf = None;
        let mut parking = false;
        let mut handing = false;
        if first.is_empty() {
            pool.give_back(first);
        } else {
            read_buf = self.consume(first);
        }
        loop {
            if !self.outbox.is_empty() {
                self.flush(&mut stream, control).await;
            }
            if matches!(self.state, State::Finished | State::Abandoned) {
                break;
            }
            control.set_deadline(self.deadline());
            let gate = self.role.gate(&ctx, control, self.state == State::Open);
            if gate == Gate::Park && read_buf.is_none() && self.idle() && !control.has_pending() {
                parking = true;
                break;
            }
            if gate == Gate::HandOver && !stream.can_move() {
                // TLS 1.2, or a session mid-way through something: it ends
                // here. Its actor hears so now (the hand-over does not wait
                // for the close handshake); the role hears it once more at
                // the end, which changes nothing.
                if self.state == State::Open {
                    let reason = "gateway upgrading: reconnect";
                    self.role.ended(&ctx, CloseCode::SERVICE_RESTART, reason);
                    self.close(CloseCode::SERVICE_RESTART, reason);
                }
            } else if gate == Gate::HandOver && !self.move_prepared {
                self.prepare_move(&stream);
                continue; // write it, then look again
            } else if gate == Gate::HandOver && self.between_messages() && !control.has_pending() {
                handing = true;
                break;
            }
            let wake = if gate == Gate::Hold {
                Wake::Signal(control.next_signal().await)
            } else if stream.has_unread_input() {
                Wake::Readable(Ok(())) // read ahead (TLS): no need to wait
            } else {
                monoio::select! {
                    r = stream.readable() => Wake::Readable(r),
                    signal = control.next_signal() => Wake::Signal(signal),
                }
            };
            match wake {
                Wake::Readable(Err(_)) => self.lost(),
                Wake::Readable(Ok(())) => read_buf = self.read(&mut stream, read_buf).await,
                Wake::Signal(Signal::Close(code, reason)) => self.close(code, &reason),
                Wake::Signal(Signal::Outbound) => {
                    let open = self.state == State::Open;
                    self.role
                        .collect_outbound(&ctx, control, &mut self.outbox, open)
                }
                Wake::Signal(Signal::Timer) => self.on_timer(Instant::now()),
            }
        }
        if parking {
            // The task ends here; the role's parker watches the socket (no
            // task, no buffer, no timer) until something needs it.
            return R::park(self, stream, registration);
        }
        if handing {
            return R::hand_over(self, stream, read_buf.unwrap_or_default(), registration);
        }
        self.finish(stream, read_buf, registration);
    }

    async fn flush(&mut self, stream: &mut Stream, control: &ConnControl) {
        control.set_deadline(Instant::now() + R::limits(&self.ctx).send_timeout);
        // Boxed: the flush and read futures are large and only live while
        // bytes move; inline they would be part of every idle connection's
        // footprint (see docs/ARCHITECTURE.md).
        let flush = Box::pin(self.outbox.flush(stream, &self.ctx.env().pool, control));
        if flush.await.is_err() {
            self.lost();
        }
        self.role.flushed(&self.ctx);
    }

    /// Reads what the socket holds and decodes it; returns the buffer if a
    /// partial frame remains in it.
    async fn read(&mut self, stream: &mut Stream, held: Option<BytesMut>) -> Option<BytesMut> {
        self.input_expected = false;
        let pool = &self.ctx.env().pool;
        // No buffer yet: `read_into` borrows one that fits `room`.
        let buf = held.unwrap_or_default();
        let room = pool.read_room(self.big_reads);
        match Box::pin(read_into(stream, buf, room, pool)).await {
            (ReadOutcome::Data(n), buf) => {
                self.big_reads = pool.reads_big(room, n);
                self.keepalive.heard_from_peer(Instant::now());
                self.consume(buf)
            }
            (outcome, _) => {
                debug!(?outcome, "peer went away without a close frame");
                self.lost();
                None
            }
        }
    }

    /// The session is over: tell the role, then close the socket.
    fn finish(mut self, stream: Stream, read_buf: Option<BytesMut>, reg: Registration) {
        let (code, reason) = self
            .peer_close
            .take()
            .map_or((CloseCode::ABNORMAL, "connection lost".into()), |b| *b);
        self.role.ended(&self.ctx, code, &reason);
        drop(reg);
        if self.state == State::Finished {
            // A task of its own, so its timer is not part of every idle session.
            let scratch = read_buf.unwrap_or_default();
            let linger = R::limits(&self.ctx).close_timeout;
            monoio::spawn(linger_close(stream, scratch, linger));
        }
    }

    /// Open, with nothing half-read or unsent and no keepalive due (a due
    /// keepalive is handled first, or parking would only unpark again).
    fn idle(&self) -> bool {
        self.state == State::Open
            && !self.input_expected
            && self.outbox.is_empty()
            && !self.decoder.is_mid_message()
            && self.deadline() > Instant::now()
    }

    /// Before a TLS session moves, one frame goes out under its keys (an
    /// unsolicited empty pong, which RFC 6455 allows): rustls sends the
    /// answer to a client's key update only in front of its next write,
    /// and that answer must not stay behind in the old process.
    fn prepare_move(&mut self, stream: &Stream) {
        self.move_prepared = true;
        if stream.is_tls() && self.state == State::Open {
            let pool = &self.ctx.env().pool;
            self.outbox.push(pool, OpCode::Pong, &Bytes::new());
        }
    }

    /// Open, with no message half-received and nothing left to write: what
    /// the peer sends next starts a new frame (any bytes of it already
    /// read are kept by the caller).
    fn between_messages(&self) -> bool {
        self.state == State::Open && self.outbox.is_empty() && !self.decoder.is_mid_message()
    }

    /// Decodes what `buf` holds; returns the buffer if a partial frame remains in it.
    fn consume(&mut self, mut buf: BytesMut) -> Option<BytesMut> {
        while self.is_listening() {
            match self.decoder.decode(&mut buf) {
                Ok(Some(event)) => self.on_event(event),
                Ok(None) => break,
                Err(e) => self.fail(e.into()),
            }
        }
        if buf.is_empty() {
            self.ctx.env().pool.give_back(buf);
            None
        } else {
            Some(buf)
        }
    }

    fn is_listening(&self) -> bool {
        matches!(self.state, State::Open | State::Closing { .. })
    }

    fn on_event(&mut self, event: Event) {
        match (event, self.state) {
            (Event::Text(payload), State::Open) => self.on_message(MessageKind::Text, payload),
            (Event::Binary(payload), State::Open) => self.on_message(MessageKind::Binary, payload),
            (Event::Ping(payload), State::Open) => {
                self.outbox
                    .push(&self.ctx.env().pool, OpCode::Pong, &payload)
            }
            (Event::Close(frame), State::Open) => {
                // Echo the status code back (RFC 6455 §5.5.1), then we are done.
                let code = frame.as_ref().map(|f| f.code);
                self.peer_close = Some(Box::new(match &frame {
                    Some(f) => (f.code, String::from_utf8_lossy(&f.reason).into_owned()),
                    None => (CloseCode::NO_STATUS, String::new()),
                }));
                self.outbox.push_close(&self.ctx.env().pool, code, "");
                self.leave_open(State::Finished, code.unwrap_or(CloseCode::NO_STATUS));
            }
            (Event::Close(_), State::Closing { .. }) => self.state = State::Finished,
            // Pongs only prove liveness; data after our close frame is discarded.
            _ => {}
        }
    }

    fn on_message(&mut self, kind: MessageKind, payload: Bytes) {
        if let Err(failure) = self.role.on_message(&self.ctx, kind, payload) {
            self.fail(failure);
        }
    }

    fn fail(&mut self, failure: Failure) {
        let Failure { code, reason } = failure;
        debug!(code = code.0, %reason, "failing websocket");
        self.outbox
            .push_close(&self.ctx.env().pool, Some(code), &reason);
        self.peer_close = Some(Box::new((
            CloseCode::ABNORMAL,
            format!("gateway closed the connection: {reason}"),
        )));
        self.leave_open(State::Finished, code);
    }

    /// Starts the closing handshake from our side.
    fn close(&mut self, code: CloseCode, reason: &str) {
        if self.state == State::Open {
            self.outbox
                .push_close(&self.ctx.env().pool, Some(code), reason);
            let deadline = Instant::now() + R::limits(&self.ctx).close_timeout;
            self.leave_open(State::Closing { deadline }, code);
        }
    }

    /// The peer is gone (a failed read or write, end of stream).
    fn lost(&mut self) {
        self.leave_open(State::Abandoned, CloseCode::ABNORMAL);
    }

    /// Every way out of Open goes through here, so the role hears of the
    /// close exactly once.
    fn leave_open(&mut self, next: State, code: CloseCode) {
        if self.state == State::Open {
            self.role.closing(&self.ctx, code);
        }
        self.state = next;
    }

    fn deadline(&self) -> Instant {
        match self.state {
            State::Closing { deadline } => deadline,
            _ => self.keepalive.deadline(&R::limits(&self.ctx).keepalive),
        }
    }

    fn on_timer(&mut self, now: Instant) {
        match self.state {
            State::Closing { deadline } if now >= deadline => self.state = State::Abandoned,
            State::Open => self.on_keepalive_timer(now),
            _ => {}
        }
    }

    fn on_keepalive_timer(&mut self, now: Instant) {
        let pool = &self.ctx.env().pool;
        match self
            .keepalive
            .on_timer(now, &R::limits(&self.ctx).keepalive)
        {
            KeepaliveAction::SendPing => self.outbox.push(pool, OpCode::Ping, &Bytes::new()),
            KeepaliveAction::PeerDead => {
                debug!("peer missed ping_timeout");
                let code = Some(CloseCode::GOING_AWAY);
                self.outbox.push_close(pool, code, "ping timeout");
                self.peer_close = Some(Box::new((CloseCode::ABNORMAL, "ping timeout".into())));
                self.leave_open(State::Abandoned, CloseCode::GOING_AWAY);
            }
            KeepaliveAction::Nothing => {}
        }
    }
}
