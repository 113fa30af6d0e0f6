//! One load-test client: connects (again, if the scenario churns), sends
//! numbered messages on a writer task, checks everything that arrives on a
//! reader task, and at the end waits for what is still on its way.
//!
//! The two tasks share `ClientState` (one thread, no locks). The reader
//! never races a read against a timer: a dropped monoio read loses bytes.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tether::ws::frame::OpCode;

use crate::check::{Errors, Seen, Stream};
use crate::payload::{self, Tag};
use crate::plan::Plan;
use crate::scenario::ActorKind;
use crate::stats::{record, Progress, ThreadStats};
use crate::transport::{self, Connection, Reader, Writer};
use crate::wsclient::{
    decode_server_frame, parse_upgrade_response, upgrade_request, HandshakeError, Masker,
};

type Stats = Rc<RefCell<ThreadStats>>;

/// State shared by a client's writer and reader, across its connections.
struct ClientState {
    id: u32,
    plan: Arc<Plan>,
    stats: Stats,
    /// Messages sent so far; the next one carries this sequence number.
    sent: Cell<u64>,
    /// Own messages back (echo, chat), not counting duplicates.
    own_received: Cell<u64>,
    own: RefCell<Stream>,
    /// Chat: other members' messages, one stream per sender.
    peers: RefCell<HashMap<u32, Stream>>,
    /// Counter: the values seen, which must go up by one.
    values: RefCell<Stream>,
    last_value: Cell<u64>,
    /// Counter: when the unanswered `inc` left (closed loop).
    inc_sent_at: Cell<Option<Instant>>,
    /// The first message after a silence: its trip is a wake.
    wake_seq: Cell<Option<u64>>,
    /// When the client last heard its own traffic (pauses).
    last_heard: Cell<Instant>,
    /// Longest silence per kill/drain window.
    pause_max: RefCell<Vec<u64>>,
    pongs: RefCell<Vec<Bytes>>,
    poked: Cell<bool>,
    writer: Cell<Option<Waker>>,
    /// The reader stopped (EOF, close, error).
    reader_done: Cell<bool>,
    /// This side started the close: the end of the stream is expected.
    closing: Cell<bool>,
}

impl ClientState {
    fn poke(&self) {
        self.poked.set(true);
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }

    /// Waits for a poke from the reader or until `deadline`.
    async fn wait(&self, deadline: Instant) {
        let poked = poll_fn(|cx| {
            if self.poked.replace(false) {
                Poll::Ready(())
            } else {
                self.writer.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        });
        monoio::select! {
            _ = poked => {}
            _ = monoio::time::sleep_until(deadline.into()) => {}
        }
    }

    fn in_flight(&self) -> bool {
        match self.plan.scenario.actor {
            ActorKind::Counter => self.inc_sent_at.get().is_some(),
            _ => self.own_received.get() < self.sent.get(),
        }
    }

    fn error(&self, what: impl FnOnce(&mut Errors), note: String) {
        let mut s = self.stats.borrow_mut();
        what(&mut s.errors);
        s.note(format!("client {}: {note}", self.id));
        Progress::add(&self.plan.progress.errors, 1);
    }

    /// Everything this client should see has arrived.
    fn complete(&self) -> bool {
        let plan = &self.plan;
        match plan.scenario.actor {
            ActorKind::Echo => !self.in_flight(),
            ActorKind::Chat => {
                !self.in_flight() && {
                    let peers = self.peers.borrow();
                    plan.lobby_members(self.id).all(|m| match peers.get(&m) {
                        // Never seen (joined after it stopped, say): nothing to wait for.
                        None => true,
                        Some(s) => plan
                            .final_sent(m)
                            .is_some_and(|n| s.expected().unwrap_or(0) >= n),
                    })
                }
            }
            ActorKind::Counter => self
                .lobby_total()
                .is_some_and(|total| self.last_value.get() >= total),
        }
    }

    /// Counter: increments sent to this client's actor by all its members.
    fn lobby_total(&self) -> Option<u64> {
        let plan = &self.plan;
        let mut total = self.sent.get();
        for m in plan.lobby_members(self.id) {
            total += plan.final_sent(m)?;
        }
        Some(total)
    }

    /// At the end: whatever should have arrived and did not is lost.
    fn settle(&self) {
        let mut errors = Errors::default();
        let plan = &self.plan;
        match plan.scenario.actor {
            ActorKind::Echo | ActorKind::Chat => {
                if self.sent.get() > 0 {
                    self.own
                        .borrow_mut()
                        .finish(self.sent.get() - 1, &mut errors);
                }
                for (m, s) in self.peers.borrow_mut().iter_mut() {
                    if let Some(n) = plan.final_sent(*m).filter(|n| *n > 0) {
                        s.finish(n - 1, &mut errors);
                    }
                }
            }
            ActorKind::Counter => {
                if let (Some(total), true) = (self.lobby_total(), self.last_value.get() > 0) {
                    self.values.borrow_mut().finish(total, &mut errors);
                }
            }
        }
        if errors.total() > 0 {
            self.error(
                |e| e.add(&errors),
                format!("at the end: {}", errors.describe()),
            );
        }
        let mut stats = self.stats.borrow_mut();
        for (i, gap) in self.pause_max.borrow().iter().enumerate() {
            if *gap > 0 {
                record(&mut stats.pauses[i], *gap);
            }
        }
    }

    fn heard(&self, now: Instant) {
        let last = self.last_heard.replace(now);
        let gap = now.saturating_duration_since(last).as_micros() as u64;
        let mut max = self.pause_max.borrow_mut();
        for (i, (from, until)) in self.plan.pause_windows.iter().enumerate() {
            if last < *until && now > *from && gap > max[i] {
                max[i] = gap;
            }
        }
    }

    /// A message's trip back to its sender.
    fn trip(&self, sent_us: u64, now: Instant, is_wake: bool) {
        let plan = &self.plan;
        let micros = plan.micros(now).saturating_sub(sent_us);
        let second = now.saturating_duration_since(plan.start).as_secs() as usize;
        let mut stats = self.stats.borrow_mut();
        stats.record_second(second, micros);
        if is_wake {
            record(&mut stats.wake, micros);
        } else if sent_us >= plan.micros(plan.measure_from) && now <= plan.stop_at {
            record(&mut stats.rtt, micros);
        }
        if !is_wake {
            if let Some(phase) = plan.phase_of(sent_us) {
                record(&mut stats.phase_rtt[phase], micros);
            }
        }
    }

    fn on_message(&self, payload: &[u8], now: Instant) {
        let plan = &self.plan;
        if now >= plan.measure_from && now <= plan.stop_at {
            let mut stats = self.stats.borrow_mut();
            stats.received += 1;
            stats.bytes_received += payload.len() as u64;
        }
        Progress::add(&plan.progress.received, 1);
        match plan.scenario.actor {
            ActorKind::Counter => self.on_value(payload, now),
            kind => match payload::parse(payload) {
                None => self.error(
                    |e| e.malformed += 1,
                    format!("not a load-test message: {:?}", preview(payload)),
                ),
                Some(tag) if tag.client == self.id => self.on_own(tag, now),
                Some(tag) if kind == ActorKind::Chat => {
                    let mut errors = Errors::default();
                    self.peers
                        .borrow_mut()
                        .entry(tag.client)
                        .or_default()
                        .observe(tag.seq, &mut errors);
                    if errors.total() > 0 {
                        self.error(
                            |e| e.add(&errors),
                            format!(
                                "from client {}: seq {} ({})",
                                tag.client,
                                tag.seq,
                                errors.describe()
                            ),
                        );
                    }
                }
                Some(tag) => self.error(
                    |e| e.foreign += 1,
                    format!("got client {}'s message {}", tag.client, tag.seq),
                ),
            },
        }
    }

    fn on_own(&self, tag: Tag, now: Instant) {
        let mut errors = Errors::default();
        let seen = self.own.borrow_mut().observe(tag.seq, &mut errors);
        if errors.total() > 0 {
            self.error(
                |e| e.add(&errors),
                format!("own message {}: {}", tag.seq, errors.describe()),
            );
        }
        if seen != Seen::Duplicate {
            self.own_received.set(self.own_received.get() + 1);
            let is_wake = self.wake_seq.get() == Some(tag.seq);
            if is_wake {
                self.wake_seq.set(None);
            }
            self.trip(tag.sent_us, now, is_wake);
            self.heard(now);
            self.poke();
        }
    }

    fn on_value(&self, payload: &[u8], now: Instant) {
        let Some(value) = std::str::from_utf8(payload)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        else {
            return self.error(
                |e| e.malformed += 1,
                format!("not a counter value: {:?}", preview(payload)),
            );
        };
        let mut errors = Errors::default();
        self.values.borrow_mut().observe(value, &mut errors);
        if errors.total() > 0 {
            self.error(
                |e| e.add(&errors),
                format!("counter value {value}: {}", errors.describe()),
            );
        }
        self.last_value.set(self.last_value.get().max(value));
        if let Some(at) = self.inc_sent_at.take() {
            let is_wake = self.wake_seq.take().is_some();
            self.trip(self.plan.micros(at), now, is_wake);
            self.heard(now);
            self.poke();
        }
    }
}

fn preview(payload: &[u8]) -> String {
    String::from_utf8_lossy(&payload[..payload.len().min(40)]).into_owned()
}

/// Runs client `id` until the scenario ends; its findings go to `stats`.
pub async fn run(plan: Arc<Plan>, id: u32, stats: Stats) {
    let state = Rc::new(ClientState {
        id,
        stats,
        sent: Cell::new(0),
        own_received: Cell::new(0),
        own: RefCell::new(Stream::starting_at(0)),
        peers: RefCell::new(HashMap::new()),
        values: RefCell::new(Stream::default()),
        last_value: Cell::new(0),
        inc_sent_at: Cell::new(None),
        wake_seq: Cell::new(None),
        last_heard: Cell::new(Instant::now()),
        pause_max: RefCell::new(vec![0; plan.pause_windows.len()]),
        pongs: RefCell::new(Vec::new()),
        poked: Cell::new(false),
        writer: Cell::new(None),
        reader_done: Cell::new(false),
        closing: Cell::new(false),
        plan: plan.clone(),
    });
    monoio::time::sleep_until(plan.connect_slot(id).into()).await;
    let mut rng = Masker::new(id.wrapping_mul(2_654_435_761).wrapping_add(1));
    while Instant::now() < plan.stop_at {
        let Some((conn, leftover)) = connect(&state).await else {
            if plan.scenario.reconnect_every == 0 {
                break;
            }
            monoio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if !serve(&state, conn, leftover, &mut rng).await {
            break;
        }
    }
    plan.publish_final_sent(id, state.sent.get());
    state.settle();
}

async fn connect(state: &ClientState) -> Option<(Connection, BytesMut)> {
    let plan = &state.plan;
    let started = Instant::now();
    let attempt = async {
        let source = plan.sources.pick(state.id as usize);
        let Connection {
            mut reader,
            mut writer,
        } = transport::connect(plan.addr, source, plan.driver, plan.tls.as_ref())
            .await
            .map_err(|e| (false, e))?;
        let request = upgrade_request(plan.scenario.authority(), &plan.path_of(state.id));
        let (r, _) = writer.write_all(request).await;
        r.map_err(|e| (false, format!("sending the upgrade: {e}")))?;
        let mut buf = BytesMut::with_capacity(4096);
        loop {
            let (r, b) = reader.read(buf).await;
            buf = b;
            match r {
                Ok(0) => return Err((false, "closed during the upgrade".into())),
                Ok(_) => {}
                Err(e) => return Err((false, format!("reading the upgrade answer: {e}"))),
            }
            match parse_upgrade_response(&buf) {
                Ok(Some(n)) => {
                    let rest = buf.split_off(n);
                    return Ok((Connection { reader, writer }, rest));
                }
                Ok(None) => buf.reserve(4096),
                Err(HandshakeError::Refused(status)) => {
                    return Err((true, format!("upgrade refused with {status}")))
                }
                Err(HandshakeError::Malformed(m)) => {
                    return Err((false, format!("bad upgrade answer: {m}")))
                }
            }
        }
    };
    match monoio::time::timeout(plan.scenario.connect_timeout, attempt).await {
        Ok(Ok(connected)) => {
            let mut stats = state.stats.borrow_mut();
            record(&mut stats.connect, started.elapsed().as_micros() as u64);
            stats.connections += 1;
            Progress::add(&plan.progress.open, 1);
            Some(connected)
        }
        Ok(Err((refused, why))) => {
            state.error(
                |e| {
                    if refused {
                        e.refused += 1
                    } else {
                        e.connect_failed += 1
                    }
                },
                why,
            );
            None
        }
        Err(_) => {
            state.error(|e| e.connect_failed += 1, "connect timed out".into());
            None
        }
    }
}

/// One connection. `true`: connect again (churn); `false`: this client is done.
async fn serve(
    state: &Rc<ClientState>,
    conn: Connection,
    leftover: BytesMut,
    rng: &mut Masker,
) -> bool {
    let plan = state.plan.clone();
    let Connection {
        reader: rd,
        writer: mut wr,
    } = conn;
    state.reader_done.set(false);
    state.closing.set(false);
    state.last_heard.set(Instant::now());
    let reader = monoio::spawn(read_loop(state.clone(), rd, leftover));
    let mut out = BytesMut::with_capacity(plan.scenario.message_bytes + 16);
    // Reused for every message: the load generator allocates nothing per send.
    let mut message = BytesMut::with_capacity(plan.scenario.message_bytes);
    let mut masker = Masker::new(state.id ^ 0x5bd1_e995);
    let period =
        (plan.scenario.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / plan.scenario.rate));
    // Open loop: start at a random phase so clients do not send in lockstep.
    let mut next_send =
        Instant::now() + period.map_or(Duration::ZERO, |p| p.mul_f64(random_unit(rng)));
    let mut on_this_connection = 0u64;
    let mut wake_pending = false;
    let mut churn = false;
    loop {
        if !send_pongs(state, &mut wr, &mut masker, &mut out).await {
            break;
        }
        if state.reader_done.get() {
            break;
        }
        let now = Instant::now();
        if now >= plan.stop_at {
            break;
        }
        let every = plan.scenario.reconnect_every;
        if every > 0 && on_this_connection >= every && !state.in_flight() {
            churn = true;
            break;
        }
        if let Some(s) = plan.silence_at(now) {
            let resume = s.until + s.spread.mul_f64(random_unit(rng));
            while Instant::now() < resume.min(plan.stop_at) && !state.reader_done.get() {
                state.wait(resume.min(plan.stop_at)).await;
                if !send_pongs(state, &mut wr, &mut masker, &mut out).await {
                    break;
                }
            }
            wake_pending = true;
            next_send = Instant::now();
            continue;
        }
        let due = match period {
            None if state.in_flight() => Some(plan.stop_at),
            None => None,
            Some(_) if now < next_send => Some(next_send.min(plan.stop_at)),
            Some(_) => None,
        };
        if let Some(deadline) = due {
            state.wait(deadline).await;
            continue;
        }
        if let Some(p) = period {
            next_send += p;
            // Fell far behind (a stall): do not burst to catch up.
            if next_send + Duration::from_secs(1) < now {
                next_send = now + p;
            }
        }
        out.clear();
        message.clear();
        let seq = state.sent.get();
        if plan.scenario.actor == ActorKind::Counter {
            message.extend_from_slice(b"inc");
            state.inc_sent_at.set(Some(now));
        } else {
            let tag = Tag {
                client: state.id,
                seq,
                sent_us: plan.micros(now),
            };
            payload::encode(&mut message, tag, plan.scenario.message_bytes);
        }
        if wake_pending {
            state.wake_seq.set(Some(seq));
            wake_pending = false;
        }
        masker.encode(&mut out, OpCode::Text, &message);
        state.sent.set(seq + 1);
        on_this_connection += 1;
        let (r, buf) = wr.write_all(std::mem::take(&mut out)).await;
        out = buf;
        if r.is_err() {
            break;
        }
        if now >= plan.measure_from {
            let mut stats = state.stats.borrow_mut();
            stats.sent += 1;
            stats.bytes_sent += message.len() as u64;
        }
        Progress::add(&plan.progress.sent, 1);
    }
    if !churn {
        // The end: tell lobby members how much to expect, wait for what is
        // still on its way.
        plan.publish_final_sent(state.id, state.sent.get());
        while !state.reader_done.get() && !state.complete() && Instant::now() < plan.drain_until {
            state.wait(Instant::now() + Duration::from_millis(10)).await;
            if !send_pongs(state, &mut wr, &mut masker, &mut out).await {
                break;
            }
        }
    }
    // Close handshake; give the server a moment to answer it.
    state.closing.set(true);
    out.clear();
    let mut close = BytesMut::new();
    tether::ws::close::encode_close(&mut close, tether::ws::close::CloseCode(1000), "");
    masker.encode(&mut out, OpCode::Close, &close);
    let (_, _) = wr.write_all(out).await;
    let until = Instant::now() + Duration::from_secs(2);
    while !state.reader_done.get() && Instant::now() < until {
        state.wait(until).await;
    }
    let _ = wr.shutdown().await;
    drop(reader);
    Progress::sub_open(&plan.progress);
    churn
}

/// Answers the pings the reader saw (and, TLS, sends what the reader made
/// rustls want to send).
async fn send_pongs(
    state: &ClientState,
    wr: &mut Writer,
    masker: &mut Masker,
    out: &mut BytesMut,
) -> bool {
    let pongs = std::mem::take(&mut *state.pongs.borrow_mut());
    if pongs.is_empty() {
        return wr.flush().await.is_ok();
    }
    out.clear();
    for p in pongs {
        masker.encode(out, OpCode::Pong, &p);
    }
    let (r, buf) = wr.write_all(std::mem::take(out)).await;
    *out = buf;
    r.is_ok()
}

async fn read_loop(state: Rc<ClientState>, mut rd: Reader, mut buf: BytesMut) {
    loop {
        loop {
            match decode_server_frame(&mut buf) {
                Ok(Some(frame)) => {
                    let now = Instant::now();
                    match frame.opcode {
                        OpCode::Text | OpCode::Binary => state.on_message(&frame.payload, now),
                        OpCode::Ping => {
                            state.pongs.borrow_mut().push(frame.payload);
                            state.poke();
                        }
                        OpCode::Close => {
                            if !state.closing.get() {
                                let code = (frame.payload.len() >= 2).then(|| {
                                    u16::from_be_bytes([frame.payload[0], frame.payload[1]])
                                });
                                let reason =
                                    String::from_utf8_lossy(frame.payload.get(2..).unwrap_or(&[]))
                                        .into_owned();
                                state.error(
                                    |e| e.closed += 1,
                                    format!("closed by the server: {code:?} {reason}"),
                                );
                            }
                            return finish_reading(&state);
                        }
                        _ => {}
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    state.error(|er| er.protocol += 1, e);
                    return finish_reading(&state);
                }
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        let (r, b) = rd.read(buf).await;
        buf = b;
        match r {
            Ok(n) if n > 0 => {
                if rd.wants_write() {
                    state.poke(); // the writer flushes it
                }
            }
            result => {
                if !state.closing.get() {
                    let why = match result {
                        Err(e) => format!("connection failed: {e}"),
                        _ => "the server closed the connection without a close frame".into(),
                    };
                    state.error(|e| e.closed += 1, why);
                }
                return finish_reading(&state);
            }
        }
    }
}

fn finish_reading(state: &ClientState) {
    state.reader_done.set(true);
    state.poke();
}

/// A number in [0, 1), for timing jitter.
fn random_unit(rng: &mut Masker) -> f64 {
    rng.next_u32() as f64 / (u32::MAX as f64 + 1.0)
}
