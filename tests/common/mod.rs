//! Shared helpers for the loopback tests: a gateway started in-process on
//! free ports, and a raw WebSocket client written independently of the
//! gateway's own codec (so the gateway is never tested against itself).

#![allow(dead_code)]

pub mod child;
pub mod chromium;
pub mod cluster;
pub mod etcd;
pub mod functions;
pub mod http;
pub mod lifelog;
pub mod load;
pub mod metrics;
pub mod netns;
pub mod pki;
pub mod raw_tunnel;
pub mod rooms;
pub mod wss;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tether::runner::{ActorFactory, BuiltinActors, MemoryStore, Runner, RunnerOptions};
use tether::{Config, Gateway};

pub fn test_config() -> Config {
    let mut c = Config::default();
    c.runners.listen = "127.0.0.1:0".parse().unwrap();
    c.server.workers = 2;
    c.server.log_level = std::env::var("TEST_LOG").unwrap_or("warn".into());
    c.server.shutdown_drain = Duration::from_millis(200);
    c.client.listen = "127.0.0.1:0".parse().unwrap();
    c.admin.listen = "127.0.0.1:0".parse().unwrap();
    c.client.handshake_timeout = Duration::from_secs(2);
    c.client.close_timeout = Duration::from_secs(1);
    c.admin.token = ADMIN_TOKEN.into();
    c
}

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// How long `wait_for` waits: generous, so that a loaded machine makes a
/// test slow, not wrong (only a test that is failing waits this long).
pub const WAIT: Duration = Duration::from_secs(20);

/// Waits until `cond` holds, polling every few milliseconds; panics naming
/// `what` after `WAIT`. Tests wait on observable state (the admin API,
/// counters, a runner, what a client received) with this, never with a
/// sleep of a guessed length.
#[track_caller]
pub fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    wait_for_within(what, WAIT, cond)
}

/// `wait_for` with another deadline.
#[track_caller]
pub fn wait_for_within(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !cond() {
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Asserts that `cond` holds throughout `window`, checking every few
/// milliseconds. Only for an absence that no later event can prove (when
/// one can, wait for that event and then assert once): a loaded machine can
/// then only hide a misbehaviour that came late, never fail a correct run.
#[track_caller]
pub fn assert_stays(what: &str, window: Duration, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + window;
    loop {
        assert!(cond(), "{what}: no longer true");
        if Instant::now() >= until {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A gateway and (usually) one reference runner connected to it.
pub struct Harness {
    pub client_addr: SocketAddr,
    pub runner_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub driver: tether::server::Driver,
    gateway: Option<Gateway>,
    runners: Vec<Runner>,
    /// Actor state shared by this harness's runners (as a host's runners
    /// share a directory).
    pub store: MemoryStore,
}

impl Harness {
    pub fn gateway(&self) -> &Gateway {
        self.gateway.as_ref().unwrap()
    }

    pub fn worker_stats(&self) -> &[std::sync::Arc<tether::server::WorkerStats>] {
        self.gateway.as_ref().unwrap().worker_stats()
    }

    /// One of the workers' counters, summed over the workers.
    pub fn stat(&self, counter: fn(&tether::server::WorkerStats) -> &AtomicU64) -> u64 {
        self.worker_stats()
            .iter()
            .map(|s| counter(s).load(Ordering::Relaxed))
            .sum()
    }

    pub fn runner_url(&self) -> String {
        format!("ws://{}", self.runner_addr)
    }

    /// Starts another runner with these actors and waits until all its tunnels are up.
    pub fn add_runner(&mut self, options: RunnerOptions, actors: impl ActorFactory) -> usize {
        let runner = Runner::start(options, actors);
        assert!(
            runner.wait_connected(Duration::from_secs(10)),
            "runner connects"
        );
        self.runners.push(runner);
        self.runners.len() - 1
    }

    pub fn runner(&self, i: usize) -> &Runner {
        &self.runners[i]
    }

    pub fn take_runner(&mut self, i: usize) -> Runner {
        self.runners.remove(i)
    }

    pub fn runner_options(&self) -> RunnerOptions {
        let mut o = RunnerOptions::new(&self.runner_url(), tether::config::DEV_RUNNER_TOKEN);
        o.state = Some(std::sync::Arc::new(self.store.clone()));
        o
    }

    /// `GET`/`POST` on the admin listener with the admin token; the raw response.
    pub fn admin(&self, method: &str, path: &str) -> String {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        raw_exchange(self.admin_addr, request.as_bytes())
    }

    /// `GET /metrics` with the admin token, parsed (it must answer 200 in
    /// the Prometheus text format).
    pub fn metrics(&self) -> metrics::Metrics {
        let response = self.admin("GET", "/metrics");
        let (head, body) = response.split_once("\r\n\r\n").expect("a response");
        assert_eq!(status_of(head), 200, "{response}");
        let content_type = "Content-Type: text/plain; version=0.0.4";
        assert!(head.contains(content_type), "{head}");
        metrics::Metrics::parse(body)
    }

    /// `GET` on the admin listener with the admin token: the status and
    /// the body as JSON (`Null` if it is not JSON).
    pub fn admin_json(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self.admin("GET", path);
        let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let json = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
        (status_of(&response), json)
    }

    /// Puts `config` in force on the running gateway (as a reload does).
    pub fn reload(&self, config: &Config) -> bool {
        self.gateway.as_ref().unwrap().reload(config)
    }

    /// Takes the gateway out (to shut it down while keeping the harness).
    pub fn take_gateway(&mut self) -> Option<Gateway> {
        self.gateway.take()
    }

    pub fn shutdown(mut self) {
        for r in self.runners.drain(..) {
            r.stop();
        }
        if let Some(g) = self.gateway.take() {
            g.shutdown();
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for r in self.runners.drain(..) {
            r.stop();
        }
        if let Some(g) = self.gateway.take() {
            g.shutdown();
        }
    }
}

/// A gateway with no runner.
pub fn start_bare(config: Config) -> Harness {
    tether::logging::init(&config.server.log_level);
    let g = Gateway::start(config).expect("gateway starts");
    Harness {
        client_addr: g.client_addr,
        runner_addr: g.runner_addr,
        admin_addr: g.admin_addr,
        driver: g.driver,
        gateway: Some(g),
        runners: Vec::new(),
        store: MemoryStore::default(),
    }
}

/// A gateway and one reference runner (echo, chat, counter).
pub fn start(config: Config) -> Harness {
    let mut h = start_bare(config);
    let options = h.runner_options();
    h.add_runner(options, BuiltinActors);
    h
}

pub fn start_default() -> Harness {
    start(test_config())
}

pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

pub fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Sends raw bytes and reads until the server closes; returns everything received.
pub fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// An upgrade to `path` from source address `from` (a 127.0.0.x: each is
/// a client address of its own): the status, what was read of the answer,
/// and the connection (open if it was upgraded).
pub fn upgrade_from(from: &str, to: SocketAddr, path: &str) -> (u16, String, TcpStream) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(upgrade_request(path).as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("reading the answer: {e}"),
        }
    }
    if status_of(&String::from_utf8_lossy(&got)) != 101 {
        let _ = s.read_to_end(&mut got); // the reason, up to the gateway's close
    }
    let answer = String::from_utf8_lossy(&got).into_owned();
    (status_of(&answer), answer, s)
}

/// A WebSocket to `path` from source address `from` (a 127.0.0.x): the
/// upgrade must succeed.
pub fn connect_from(from: &str, to: SocketAddr, path: &str) -> RawWs {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(upgrade_request(path).as_bytes()).unwrap();
    Handshake::from_stream(s).finish()
}

pub fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

/// A frame as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// A WebSocket client over a blocking socket, with hand-written framing.
pub struct RawWs {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    /// A WebSocket over `stream`, whose upgrade was answered 101 already
    /// (by `upgrade_from`), with nothing read past the answer.
    pub fn from_upgraded(stream: TcpStream) -> RawWs {
        RawWs {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn connect(addr: SocketAddr, path: &str) -> RawWs {
        RawWs::begin(addr, path).finish()
    }

    /// Connects and sends the upgrade request without reading the answer
    /// (`finish` does), so that the request is known to be on its way.
    pub fn begin(addr: SocketAddr, path: &str) -> Handshake {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(upgrade_request(path).as_bytes()).unwrap();
        Handshake { stream }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub fn send(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let f = client_frame(fin, opcode, payload);
        self.send_raw(&f);
    }

    /// Next frame, or `None` if the server closed the TCP connection.
    /// As `recv`, but a read that times out is tried again until `until`
    /// (a loaded machine makes a failover slow, not a client gone).
    pub fn recv_until(&mut self, until: Instant) -> Option<Frame> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = vec![0u8; 65536];
            match self.stream.read(&mut chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) && Instant::now() < until =>
                {
                    continue
                }
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    pub fn recv(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = vec![0u8; 65536];
            match self.stream.read(&mut chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Sends `text` and expects it back (an echo actor).
    #[track_caller]
    pub fn echo(&mut self, text: &str) {
        self.send(true, 1, text.as_bytes());
        let frame = self.recv().expect("an answer");
        assert_eq!(
            (frame.opcode, frame.payload.as_slice()),
            (1, text.as_bytes())
        );
    }

    /// Reads frames until a close frame; returns its code (1005 if none given),
    /// or 1006 if the connection ended without one.
    pub fn expect_close(&mut self) -> u16 {
        while let Some(f) = self.recv() {
            if f.opcode == 8 {
                return f.close_code().unwrap_or(1005);
            }
        }
        1006
    }
}

/// A client whose upgrade request is sent and whose answer is not read yet.
pub struct Handshake {
    stream: TcpStream,
}

impl Handshake {
    /// A handshake whose request the caller wrote itself.
    pub fn from_stream(stream: TcpStream) -> Handshake {
        Handshake { stream }
    }

    /// Reads the answer: it must be 101.
    pub fn finish(self) -> RawWs {
        self.finish_with_head().1
    }

    /// Reads the answer, which must be 101: its head and the WebSocket.
    pub fn finish_with_head(self) -> (String, RawWs) {
        let mut stream = self.stream;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            let n = match stream.read(&mut chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => r.unwrap(),
            };
            assert!(n > 0, "closed during handshake");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "{head}"
        );
        let ws = RawWs {
            stream,
            buf: buf[end..].to_vec(),
        };
        (head, ws)
    }
}

/// A masked client frame.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0xA1u8, 0x5B, 0x07, 0xE2];
    let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
    let len = payload.len();
    if len < 126 {
        f.push(0x80 | len as u8);
    } else if len < 65536 {
        f.push(0x80 | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(len as u64).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

fn parse_server_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(buf[1] & 0x80, 0, "server frames must not be masked");
    let (len, start) = match buf[1] & 0x7F {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if buf.len() < start + len {
        return None;
    }
    let frame = Frame {
        fin: buf[0] & 0x80 != 0,
        opcode: buf[0] & 0x0F,
        payload: buf[start..start + len].to_vec(),
    };
    Some((frame, start + len))
}
