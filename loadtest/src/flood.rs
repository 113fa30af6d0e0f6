//! The abusive group of a flood scenario (`[flood]`): from `flood.at` until
//! the end, on threads of its own, from addresses other than the
//! well-behaved clients':
//!
//! - **storm**: connect, upgrade to a fresh actor key (a new actor every
//!   time), close at once; again;
//! - **idle**: upgraded connections held open until the end; refused ones
//!   try again a second later (the gateway's `Retry-After`);
//! - **silent**: TCP connections that never send a request head (under
//!   `wss://`, not even a TLS ClientHello), again when the gateway gives up
//!   on them;
//! - **spam**: upgraded connections that send messages without waiting for
//!   the echoes (which they read and discard).
//!
//! Abusive clients are not checked: what counts is how they were refused
//! (by status) and how the well-behaved group fared meanwhile. The
//! well-behaved newcomer (`probe_every`) runs here too, on a well-behaved
//! thread.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use monoio::io::AsyncReadRent;
use monoio::net::TcpStream;
use serde::Serialize;
use tether::ws::frame::OpCode;

use crate::net::Sources;
use crate::plan::Plan;
use crate::scenario::Flood;
use crate::stats::{record, Probes, ThreadStats};
use crate::transport::{self, Connection, Reader};
use crate::wsclient::{
    decode_server_frame, parse_upgrade_response, upgrade_request, HandshakeError, Masker,
};

/// How long a refused idle, silent or spam client waits before trying again
/// (what the gateway's 429 says in `Retry-After`).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Spam frames written at once.
const SPAM_BATCH: usize = 64;

/// Connections of the abusive groups open now, and the most at once.
#[derive(Default)]
pub struct FloodProgress {
    pub open: [AtomicU64; 4],
    pub peak: [AtomicU64; 4],
}

impl FloodProgress {
    fn opened(&self, group: Group) {
        let n = self.open[group as usize].fetch_add(1, Ordering::Relaxed) + 1;
        self.peak[group as usize].fetch_max(n, Ordering::Relaxed);
    }

    fn closed(&self, group: Group) {
        self.open[group as usize].fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Storm = 0,
    Idle = 1,
    Silent = 2,
    Spam = 3,
}

pub const GROUPS: [Group; 4] = [Group::Storm, Group::Idle, Group::Silent, Group::Spam];

impl Group {
    pub fn name(self) -> &'static str {
        match self {
            Group::Storm => "storm",
            Group::Idle => "idle",
            Group::Silent => "silent",
            Group::Spam => "spam",
        }
    }
}

/// What one abusive group did and met.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct GroupStats {
    /// Connection attempts.
    pub attempts: u64,
    /// Upgraded (silent: TCP connected).
    pub opened: u64,
    /// Answered with an HTTP status instead of 101, by status (silent:
    /// what the gateway answered when it gave up on the connection).
    pub refused: BTreeMap<u16, u64>,
    /// TCP connect failed or timed out, or no HTTP answer came.
    pub failed: u64,
    /// Upgraded connections the gateway closed before the end.
    pub closed_by_server: u64,
    /// The first few failures in words.
    pub notes: Vec<String>,
    /// Spam: messages written, messages read back.
    pub messages_sent: u64,
    pub messages_received: u64,
}

const MAX_NOTES: usize = 5;

impl GroupStats {
    pub fn merge(&mut self, o: &GroupStats) {
        self.attempts += o.attempts;
        self.opened += o.opened;
        for (s, n) in &o.refused {
            *self.refused.entry(*s).or_default() += n;
        }
        self.failed += o.failed;
        self.closed_by_server += o.closed_by_server;
        for n in &o.notes {
            self.note(n.clone());
        }
        self.messages_sent += o.messages_sent;
        self.messages_received += o.messages_received;
    }

    fn note(&mut self, what: String) {
        if self.notes.len() < MAX_NOTES && !self.notes.contains(&what) {
            self.notes.push(what);
        }
    }

    fn outcome(&mut self, o: &Opened) {
        self.attempts += 1;
        match o {
            Opened::Upgraded(..) => self.opened += 1,
            Opened::Refused(status) => *self.refused.entry(*status).or_default() += 1,
            Opened::Failed(why) => {
                self.failed += 1;
                self.note(why.clone());
            }
        }
    }

    /// Refusals, as `429 ×1200, 503 ×3`.
    pub fn refused_line(&self) -> String {
        crate::report::status_line(&self.refused)
    }
}

/// Everything the abusive threads measured, by group.
#[derive(Debug, Clone, Default)]
pub struct FloodStats {
    pub groups: [GroupStats; 4],
}

impl FloodStats {
    pub fn merge(&mut self, o: &FloodStats) {
        for (a, b) in self.groups.iter_mut().zip(&o.groups) {
            a.merge(b);
        }
    }
}

type Shared = Rc<RefCell<FloodStats>>;

/// How an attempt to open a WebSocket ended.
pub enum Opened {
    Upgraded(Connection, BytesMut),
    Refused(u16),
    Failed(String),
}

/// TCP connect from `source` (and the TLS handshake, `wss://`) and the
/// upgrade to `path`, within the scenario's connect timeout.
pub async fn open(plan: &Plan, source: Option<IpAddr>, path: &str) -> Opened {
    let attempt = async {
        let Connection {
            mut reader,
            mut writer,
        } = match transport::connect(flood_addr(plan), source, plan.driver, plan.tls.as_ref()).await
        {
            Ok(c) => c,
            Err(e) => return Opened::Failed(e),
        };
        let (r, _) = writer
            .write_all(upgrade_request(plan.scenario.authority(), path))
            .await;
        if let Err(e) = r {
            return Opened::Failed(format!("sending the upgrade: {e}"));
        }
        let mut buf = BytesMut::with_capacity(1024);
        loop {
            let (r, b) = reader.read(buf).await;
            buf = b;
            match r {
                Ok(0) => return Opened::Failed("closed during the upgrade".into()),
                Ok(_) => {}
                Err(e) => return Opened::Failed(format!("reading the upgrade answer: {e}")),
            }
            match parse_upgrade_response(&buf) {
                Ok(Some(n)) => {
                    let rest = buf.split_off(n);
                    return Opened::Upgraded(Connection { reader, writer }, rest);
                }
                Ok(None) => buf.reserve(1024),
                Err(HandshakeError::Refused(status)) => return Opened::Refused(status),
                Err(HandshakeError::Malformed(m)) => {
                    return Opened::Failed(format!("bad upgrade answer: {m}"))
                }
            }
        }
    };
    match monoio::time::timeout(plan.scenario.connect_timeout, attempt).await {
        Ok(o) => o,
        Err(_) => Opened::Failed("connect + upgrade timed out".into()),
    }
}

/// Where the abusive groups connect: `flood.target`, or the gateway under test.
fn flood_addr(plan: &Plan) -> std::net::SocketAddr {
    // Checked when the scenario was read.
    flood(plan).target.parse().unwrap_or(plan.addr)
}

fn flood(plan: &Plan) -> &Flood {
    plan.scenario.flood.as_ref().expect("a flood scenario")
}

/// One abusive thread: its share of every group's clients, from the
/// flood's start to the end of the run.
pub fn run_thread(plan: Arc<Plan>, index: usize) -> Result<FloodStats, String> {
    let stats: Shared = Rc::new(RefCell::new(FloodStats::default()));
    let s = stats.clone();
    let p = plan.clone();
    tether::server::driver::block_on(plan.driver, 4096, async move {
        let f = flood(&p);
        let threads = f.threads;
        let start = p.flood_at.expect("a flood scenario");
        monoio::time::sleep_until(start.into()).await;
        let mut tasks = Vec::new();
        let sources = |s: &str| Rc::new(Sources::parse(s).unwrap_or_default());
        let (storm, idle, silent, spam) = (
            sources(&f.storm_source),
            sources(&f.idle_source),
            sources(&f.silent_source),
            sources(&f.spam_source),
        );
        for i in (index..f.storm_clients).step_by(threads) {
            tasks.push(monoio::spawn(run_storm(
                p.clone(),
                i,
                storm.clone(),
                s.clone(),
            )));
        }
        for i in (index..f.spam_clients).step_by(threads) {
            tasks.push(monoio::spawn(run_spam(
                p.clone(),
                i,
                spam.clone(),
                s.clone(),
            )));
        }
        for i in (index..f.idle_clients).step_by(threads) {
            tasks.push(monoio::spawn(run_idle(
                p.clone(),
                i,
                idle.clone(),
                s.clone(),
            )));
        }
        for i in (index..f.silent_clients).step_by(threads) {
            tasks.push(monoio::spawn(run_silent(
                p.clone(),
                i,
                silent.clone(),
                s.clone(),
            )));
        }
        for t in tasks {
            t.await;
        }
    })
    .map_err(|e| format!("flood thread runtime: {e}"))?;
    let taken = std::mem::take(&mut *stats.borrow_mut());
    Ok(taken)
}

/// Sleeps until `at` or the end of the run; false if the run is over.
async fn pause_until(plan: &Plan, at: Instant) -> bool {
    monoio::time::sleep_until(at.min(plan.stop_at).into()).await;
    Instant::now() < plan.stop_at
}

async fn run_storm(plan: Arc<Plan>, i: usize, sources: Rc<Sources>, stats: Shared) {
    let f = flood(&plan);
    let period = (f.storm_rate > 0.0)
        .then(|| Duration::from_secs_f64(f.storm_clients as f64 / f.storm_rate));
    let mut rng = Masker::new((i as u32).wrapping_mul(2_654_435_761) ^ 0x9e37_79b9);
    let mut next = Instant::now()
        + period.map_or(Duration::ZERO, |p| {
            p.mul_f64(rng.next_u32() as f64 / u32::MAX as f64)
        });
    let mut n = 0u64;
    loop {
        if let Some(p) = period {
            if !pause_until(&plan, next).await {
                break;
            }
            next += p;
            let now = Instant::now();
            if next + Duration::from_secs(1) < now {
                next = now + p; // fell behind: do not burst to catch up
            }
        } else if Instant::now() >= plan.stop_at {
            break;
        }
        n += 1;
        let path = format!(
            "/actors/{}/{}-storm-{i}-{n}",
            plan.scenario.actor.name(),
            plan.key_prefix
        );
        let source = sources.pick(n as usize + i);
        let opened = open(&plan, source, &path).await;
        stats.borrow_mut().groups[Group::Storm as usize].outcome(&opened);
        match opened {
            Opened::Upgraded(conn, _) => drop(conn), // and gone
            Opened::Refused(_) => {}
            // Out of ports, say: do not spin.
            Opened::Failed(_) => {
                if !pause_until(&plan, Instant::now() + Duration::from_millis(100)).await {
                    break;
                }
            }
        }
    }
}

async fn run_idle(plan: Arc<Plan>, i: usize, sources: Rc<Sources>, stats: Shared) {
    let f = flood(&plan);
    let path = format!(
        "/actors/{}/{}-idle-{}",
        plan.scenario.actor.name(),
        plan.key_prefix,
        i % f.idle_actors
    );
    let source = sources.pick(i);
    while Instant::now() < plan.stop_at {
        let opened = open(&plan, source, &path).await;
        stats.borrow_mut().groups[Group::Idle as usize].outcome(&opened);
        let Opened::Upgraded(mut conn, _) = opened else {
            if !pause_until(&plan, Instant::now() + RETRY_AFTER).await {
                break;
            }
            continue;
        };
        plan.flood_progress.opened(Group::Idle);
        let closed = hold(&plan, &mut conn.reader).await;
        plan.flood_progress.closed(Group::Idle);
        if !closed {
            break;
        }
        stats.borrow_mut().groups[Group::Idle as usize].closed_by_server += 1;
    }
}

/// Reads (and drops) whatever comes until the end of the run; true if the
/// server closed the connection first. An abusive client's bytes are not
/// checked, so racing the read against the clock is fine here.
async fn hold(plan: &Plan, reader: &mut Reader) -> bool {
    let mut buf = BytesMut::with_capacity(256);
    loop {
        monoio::select! {
            _ = monoio::time::sleep_until(plan.stop_at.into()) => return false,
            r = reader.read(std::mem::take(&mut buf)) => {
                let (r, b) = r;
                buf = b;
                buf.clear();
                if !matches!(r, Ok(n) if n > 0) {
                    return true;
                }
            }
        }
    }
}

async fn run_silent(plan: Arc<Plan>, i: usize, sources: Rc<Sources>, stats: Shared) {
    let source = sources.pick(i);
    let group = Group::Silent as usize;
    while Instant::now() < plan.stop_at {
        stats.borrow_mut().groups[group].attempts += 1;
        let connected = monoio::time::timeout(
            plan.scenario.connect_timeout,
            crate::net::connect(flood_addr(&plan), source, plan.driver),
        )
        .await;
        let mut stream = match connected {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                {
                    let g = &mut stats.borrow_mut().groups[group];
                    g.failed += 1;
                    g.note(format!("connect: {e}"));
                }
                if !pause_until(&plan, Instant::now() + RETRY_AFTER).await {
                    break;
                }
                continue;
            }
            Err(_) => {
                let g = &mut stats.borrow_mut().groups[group];
                g.failed += 1;
                g.note("connect timed out".into());
                continue;
            }
        };
        stats.borrow_mut().groups[group].opened += 1;
        plan.flood_progress.opened(Group::Silent);
        let answer = wait_for_answer(&plan, &mut stream).await;
        plan.flood_progress.closed(Group::Silent);
        let Some(answer) = answer else { break };
        match status_of(&answer) {
            Some(408) => {
                // Held a handshake slot for the whole handshake_timeout: again, at once.
                *stats.borrow_mut().groups[group]
                    .refused
                    .entry(408)
                    .or_default() += 1;
            }
            Some(status) => {
                *stats.borrow_mut().groups[group]
                    .refused
                    .entry(status)
                    .or_default() += 1;
                if !pause_until(&plan, Instant::now() + RETRY_AFTER).await {
                    break;
                }
            }
            None => {
                stats.borrow_mut().groups[group].closed_by_server += 1;
                if !pause_until(&plan, Instant::now() + RETRY_AFTER).await {
                    break;
                }
            }
        }
    }
}

/// Reads until the server closes; what it said (`None`: the run ended first).
async fn wait_for_answer(plan: &Plan, stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut answer = Vec::new();
    let mut buf = Vec::with_capacity(512);
    loop {
        monoio::select! {
            _ = monoio::time::sleep_until(plan.stop_at.into()) => return None,
            r = stream.read(std::mem::take(&mut buf)) => {
                let (r, b) = r;
                buf = b;
                match r {
                    Ok(n) if n > 0 => {
                        if answer.len() < 1024 {
                            answer.extend_from_slice(&buf[..n]);
                        }
                        buf.clear();
                    }
                    _ => return Some(answer),
                }
            }
        }
    }
}

/// The status of an HTTP response head (`HTTP/1.1 408 ...`).
pub fn status_of(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    words.next().filter(|v| v.starts_with("HTTP/"))?;
    words.next()?.parse().ok()
}

async fn run_spam(plan: Arc<Plan>, i: usize, sources: Rc<Sources>, stats: Shared) {
    let f = flood(&plan);
    let path = format!(
        "/actors/{}/{}-spam-{}",
        plan.scenario.actor.name(),
        plan.key_prefix,
        i % f.spam_actors
    );
    let source = sources.pick(i);
    let mut masker = Masker::new(0x5bd1_e995 ^ i as u32);
    let mut batch = BytesMut::new();
    let payload = vec![b'x'; f.spam_bytes];
    for _ in 0..SPAM_BATCH {
        masker.encode(&mut batch, OpCode::Text, &payload);
    }
    let batch = batch.freeze();
    let frame_len = batch.len() / SPAM_BATCH;
    let group = Group::Spam as usize;
    while Instant::now() < plan.stop_at {
        let opened = open(&plan, source, &path).await;
        stats.borrow_mut().groups[group].outcome(&opened);
        let Opened::Upgraded(conn, leftover) = opened else {
            if !pause_until(&plan, Instant::now() + RETRY_AFTER).await {
                break;
            }
            continue;
        };
        plan.flood_progress.opened(Group::Spam);
        let closed = spam(&plan, conn, leftover, &batch, frame_len, &stats).await;
        plan.flood_progress.closed(Group::Spam);
        if closed {
            stats.borrow_mut().groups[group].closed_by_server += 1;
            if !pause_until(&plan, Instant::now() + RETRY_AFTER).await {
                break;
            }
        }
    }
}

/// Writes messages until the end of the run (as fast as the connection
/// takes them, or at `spam_rate`); a reader task counts and drops the
/// echoes. True if the server closed the connection first.
async fn spam(
    plan: &Plan,
    conn: Connection,
    leftover: BytesMut,
    batch: &Bytes,
    frame_len: usize,
    stats: &Shared,
) -> bool {
    let f = flood(plan);
    let group = Group::Spam as usize;
    let Connection {
        reader: mut rd,
        writer: mut wr,
    } = conn;
    let done = Rc::new(std::cell::Cell::new(false));
    let (reader_done, reader_stats) = (done.clone(), stats.clone());
    let reader = monoio::spawn(async move {
        let mut buf = leftover;
        loop {
            let mut frames = 0;
            while let Ok(Some(_)) = decode_server_frame(&mut buf) {
                frames += 1;
            }
            reader_stats.borrow_mut().groups[group].messages_received += frames;
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(16 * 1024);
            }
            let (r, b) = rd.read(buf).await;
            buf = b;
            if !matches!(r, Ok(n) if n > 0) {
                reader_done.set(true);
                return;
            }
        }
    });
    let started = Instant::now();
    let mut sent = 0u64;
    let closed = loop {
        let now = Instant::now();
        if now >= plan.stop_at {
            break false;
        }
        if done.get() {
            break true;
        }
        let count = if f.spam_rate > 0.0 {
            let due = (now.duration_since(started).as_secs_f64() * f.spam_rate) as u64;
            let count = due.saturating_sub(sent).min(SPAM_BATCH as u64) as usize;
            if count == 0 {
                monoio::time::sleep(Duration::from_millis(2)).await;
                continue;
            }
            if due > sent + 10 * SPAM_BATCH as u64 {
                sent = due - SPAM_BATCH as u64; // fell behind: do not burst to catch up
            }
            count
        } else {
            SPAM_BATCH
        };
        let write = wr.write_all(batch.slice(..count * frame_len));
        let r = monoio::select! {
            _ = monoio::time::sleep_until(plan.stop_at.into()) => break false,
            r = write => r.0,
        };
        if r.is_err() {
            break true;
        }
        sent += count as u64;
        stats.borrow_mut().groups[group].messages_sent += count as u64;
    };
    drop(reader);
    closed
}

/// The well-behaved newcomer: a new connection from the well-behaved
/// source to an existing actor every `probe_every`, from the end of the
/// warm-up to the end; closed properly at once. Counted by phase.
pub async fn run_probe(plan: Arc<Plan>, stats: Rc<RefCell<ThreadStats>>) {
    let every = flood(&plan).probe_every;
    if every.is_zero() {
        return;
    }
    let path = plan.path_of(0);
    let source = plan.sources.pick(0);
    let mut masker = Masker::new(0x1234_5678);
    let mut next = plan.measure_from;
    loop {
        if !pause_until(&plan, next).await {
            break;
        }
        let started = Instant::now();
        next += every;
        if next < started {
            next = started + every; // late (a stall): no catching up
        }
        let Some(phase) = plan.phase_of(plan.micros(started)) else {
            continue;
        };
        let opened = open(&plan, source, &path).await;
        let took = started.elapsed().as_micros() as u64;
        let mut conn = {
            let mut s = stats.borrow_mut();
            let probes: &mut Probes = &mut s.probes[phase];
            match opened {
                Opened::Upgraded(conn, _) => {
                    record(&mut probes.connect, took);
                    conn
                }
                Opened::Refused(status) => {
                    *probes.refused.entry(status).or_default() += 1;
                    continue;
                }
                Opened::Failed(why) => {
                    probes.failed += 1;
                    s.note(format!("well-behaved newcomer: {why}"));
                    continue;
                }
            }
        };
        let mut out = BytesMut::new();
        let mut close = BytesMut::new();
        tether::ws::close::encode_close(&mut close, tether::ws::close::CloseCode(1000), "");
        masker.encode(&mut out, OpCode::Close, &close);
        let _ = conn.writer.write_all(out).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_of_answers() {
        assert_eq!(
            status_of(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n"),
            Some(408)
        );
        assert_eq!(status_of(b"HTTP/1.1 429 Too Many Requests\r\n"), Some(429));
        assert_eq!(status_of(b""), None);
        assert_eq!(status_of(b"\x88\x02\x03\xe8"), None);
    }

    #[test]
    fn group_stats_merge_and_describe() {
        let mut a = GroupStats::default();
        a.outcome(&Opened::Refused(429));
        a.outcome(&Opened::Refused(429));
        a.outcome(&Opened::Failed("connect: x".into()));
        let mut b = GroupStats::default();
        b.outcome(&Opened::Refused(503));
        b.outcome(&Opened::Failed("connect: x".into()));
        a.merge(&b);
        assert_eq!(a.attempts, 5);
        assert_eq!(a.failed, 2);
        assert_eq!(a.notes, ["connect: x"]);
        assert_eq!(a.refused_line(), "429 ×2, 503 ×1");
    }
}
