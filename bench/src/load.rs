//! A closed-loop echo load over plain WebSockets or over TLS, for the
//! compare benchmark's TLS rows (the loadtest crate speaks `ws://` only).
//!
//! Every client sends a numbered message, waits for it to come back, checks
//! it, and sends the next. Client threads each run a monoio runtime; TLS is
//! rustls's `ClientConnection` pumped by hand over monoio's owned-buffer
//! reads and writes. Pings are answered with pongs. The gateway's (or the
//! proxy's) CPU and RSS are read from /proc around the whole run, as the
//! loadtest does: CPU from before the first connect to after the last
//! message, per message received; RSS as the peak's growth over the fresh
//! process's, per client.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use tether_loadtest::procstat::{tree_cpu_seconds, tree_rss_kib, RssSampler};

use crate::{client_frame, client_frame_op, parse_server_header, upgrade_request, TLS_SERVER_NAME};

/// What to run.
#[derive(Clone)]
pub struct EchoLoad {
    pub addr: SocketAddr,
    /// Dial over TLS with this configuration (server name [`TLS_SERVER_NAME`]).
    pub tls: Option<Arc<ClientConfig>>,
    /// Client `c` opens `{path_prefix}{c % actors}`.
    pub path_prefix: String,
    pub clients: usize,
    pub actors: usize,
    pub message_bytes: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub threads: usize,
    /// The process (and its direct children) whose CPU and RSS count.
    pub measured: Option<u32>,
}

/// What one run gave.
#[derive(Debug, Clone)]
pub struct EchoResult {
    /// Round trips per second in the measured window.
    pub per_second: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    /// CPU-µs of the measured process per message received (whole run).
    pub cpu_us_per_message: Option<f64>,
    /// (peak RSS − RSS before connecting) / clients.
    pub rss_bytes_per_connection: Option<f64>,
    /// Echoes that did not match what was sent.
    pub errors: u64,
    /// The TLS version and cipher suite negotiated (first client), if TLS.
    pub tls_suite: Option<String>,
}

/// Runs the load; `Err` if a client could not connect or a connection failed.
pub fn run_echo(load: &EchoLoad) -> Result<EchoResult, String> {
    let threads = load.threads.clamp(1, load.clients.max(1));
    let start = load.measured.map(|pid| {
        (
            pid,
            tree_cpu_seconds(pid).unwrap_or(0.0),
            tree_rss_kib(pid).unwrap_or(0),
            RssSampler::start(pid),
        )
    });
    let received = Arc::new(AtomicU64::new(0));
    let start_line = Arc::new(StartLine::default());
    let (tx, rx) = std::sync::mpsc::channel();
    for index in 0..threads {
        let (load, received, start_line, tx) = (
            load.clone(),
            received.clone(),
            start_line.clone(),
            tx.clone(),
        );
        std::thread::Builder::new()
            .name(format!("echo-load-{index}"))
            .spawn(move || {
                let r = run_thread(&load, index, threads, &received, &start_line);
                if r.is_err() {
                    // Nobody waits for a thread that failed.
                    start_line.failed.store(true, Ordering::Relaxed);
                }
                let _ = tx.send(r);
            })
            .map_err(|e| format!("client thread: {e}"))?;
    }
    drop(tx);
    let give_up = load.warmup + load.duration + Duration::from_secs(60);
    let mut hist = new_histogram();
    let mut errors = 0;
    let mut measured = 0;
    let mut suite = None;
    for _ in 0..threads {
        let t = rx
            .recv_timeout(give_up)
            .map_err(|_| "the echo load did not finish (a stalled connection?)".to_owned())??;
        hist.add(&t.hist).expect("histogram");
        errors += t.errors;
        measured += t.measured;
        suite = suite.or(t.tls_suite);
    }
    let (cpu, rss) = match start {
        Some((pid, cpu0, rss0, sampler)) => {
            let cpu = tree_cpu_seconds(pid).unwrap_or(cpu0) - cpu0;
            let end = tree_rss_kib(pid).unwrap_or(0);
            let peak = sampler.finish().max(end);
            let all = received.load(Ordering::Relaxed).max(1);
            (
                Some(cpu * 1e6 / all as f64),
                Some(peak.saturating_sub(rss0) as f64 * 1024.0 / load.clients as f64),
            )
        }
        None => (None, None),
    };
    Ok(EchoResult {
        per_second: measured as f64 / load.duration.as_secs_f64(),
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        cpu_us_per_message: cpu,
        rss_bytes_per_connection: rss,
        errors,
        tls_suite: suite,
    })
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram")
}

/// Where the client threads wait for each other once all their clients
/// are connected, so that the measured window starts with every client.
#[derive(Default)]
struct StartLine {
    connected: AtomicUsize,
    failed: AtomicBool,
}

impl StartLine {
    fn wait(&self, threads: usize) -> Result<(), String> {
        self.connected.fetch_add(1, Ordering::SeqCst);
        while self.connected.load(Ordering::SeqCst) < threads {
            if self.failed.load(Ordering::Relaxed) {
                return Err("another client thread failed".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}

struct ThreadResult {
    hist: Histogram<u64>,
    measured: u64,
    errors: u64,
    tls_suite: Option<String>,
}

#[derive(Default)]
struct Counts {
    measured: u64,
    errors: u64,
}

fn run_thread(
    load: &EchoLoad,
    index: usize,
    threads: usize,
    received: &Arc<AtomicU64>,
    start_line: &StartLine,
) -> Result<ThreadResult, String> {
    let driver = tether::server::driver::choose(tether::config::IoDriver::Auto)?;
    tether::server::driver::block_on(driver, 1024, async move {
        let mut pending = Vec::new();
        for c in (index..load.clients).step_by(threads) {
            let path = format!("{}{}", load.path_prefix, c % load.actors);
            pending.push((
                c,
                monoio::spawn(Conn::open(load.addr, load.tls.clone(), path)),
            ));
        }
        let mut conns = Vec::new();
        for (c, p) in pending {
            conns.push((c, p.await?));
        }
        let tls_suite = conns.first().and_then(|(_, c)| c.tls_suite());
        start_line.wait(threads)?;
        let warm_end = Instant::now() + load.warmup;
        let end = warm_end + load.duration;
        let hist = Rc::new(RefCell::new(new_histogram()));
        let counts = Rc::new(RefCell::new(Counts::default()));
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|(c, conn)| {
                let (hist, counts, received) = (hist.clone(), counts.clone(), received.clone());
                let bytes = load.message_bytes.max(16);
                monoio::spawn(async move {
                    echo_loop(c, conn, bytes, warm_end, end, &hist, &counts, &received).await
                })
            })
            .collect();
        for t in tasks {
            t.await?;
        }
        let counts = counts.borrow();
        let hist = hist.borrow().clone();
        Ok(ThreadResult {
            hist,
            measured: counts.measured,
            errors: counts.errors,
            tls_suite,
        })
    })
    .map_err(|e| format!("client runtime: {e}"))?
}

#[allow(clippy::too_many_arguments)]
async fn echo_loop(
    client: usize,
    mut conn: Conn,
    bytes: usize,
    warm_end: Instant,
    end: Instant,
    hist: &RefCell<Histogram<u64>>,
    counts: &RefCell<Counts>,
    received: &AtomicU64,
) -> Result<(), String> {
    let mut payload = vec![0u8; bytes];
    payload[8..16].copy_from_slice(&(client as u64).to_be_bytes());
    let mut seq = 0u64;
    let mut inbox = Vec::with_capacity(4096);
    loop {
        let sent_at = Instant::now();
        if sent_at >= end {
            return Ok(());
        }
        payload[..8].copy_from_slice(&seq.to_be_bytes());
        conn.send(client_frame(&payload))
            .await
            .map_err(|e| format!("client {client}: send: {e}"))?;
        let echoed = loop {
            match take_frame(&mut inbox) {
                Some((0x9, ping)) => conn
                    .send(client_frame_op(0xA, &ping))
                    .await
                    .map_err(|e| format!("client {client}: pong: {e}"))?,
                Some((0x8, _)) => return Err(format!("client {client}: closed by the server")),
                Some((_, data)) => break data,
                None => conn
                    .recv(&mut inbox)
                    .await
                    .map_err(|e| format!("client {client}: receive: {e}"))?,
            }
        };
        let now = Instant::now();
        received.fetch_add(1, Ordering::Relaxed);
        if echoed != payload {
            counts.borrow_mut().errors += 1;
        }
        if sent_at >= warm_end {
            let us = now.duration_since(sent_at).as_micros().max(1) as u64;
            let _ = hist.borrow_mut().record(us);
            counts.borrow_mut().measured += 1;
        }
        seq += 1;
    }
}

/// Takes one whole server frame off the front of `inbox`: (opcode, payload).
fn take_frame(inbox: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    let (b0, header, len) = parse_server_header(inbox)?;
    if inbox.len() < header + len {
        return None;
    }
    let payload = inbox[header..header + len].to_vec();
    inbox.drain(..header + len);
    Some((b0 & 0x0F, payload))
}

/// A client connection on monoio: plain, or TLS pumped by hand.
enum Conn {
    Plain {
        tcp: TcpStream,
        buf: Option<Vec<u8>>,
    },
    Tls(Box<TlsConn>),
}

struct TlsConn {
    tcp: TcpStream,
    tls: ClientConnection,
    rbuf: Option<Vec<u8>>,
    wbuf: Option<Vec<u8>>,
}

const READ_BYTES: usize = 16 * 1024;

impl Conn {
    /// Connects, completes the TLS handshake if any, and upgrades to a WebSocket.
    async fn open(
        addr: SocketAddr,
        tls: Option<Arc<ClientConfig>>,
        path: String,
    ) -> Result<Conn, String> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        tcp.set_nodelay(true)
            .map_err(|e| format!("TCP_NODELAY: {e}"))?;
        let mut conn = match tls {
            None => Conn::Plain {
                tcp,
                buf: Some(Vec::with_capacity(READ_BYTES)),
            },
            Some(config) => {
                let name = ServerName::try_from(TLS_SERVER_NAME).expect("server name");
                let tls = ClientConnection::new(config, name).map_err(|e| e.to_string())?;
                let mut t = TlsConn {
                    tcp,
                    tls,
                    rbuf: Some(Vec::with_capacity(READ_BYTES)),
                    wbuf: Some(Vec::with_capacity(READ_BYTES)),
                };
                let mut early = Vec::new();
                loop {
                    t.flush().await.map_err(|e| format!("TLS handshake: {e}"))?;
                    if !t.tls.is_handshaking() {
                        break;
                    }
                    t.recv(&mut early)
                        .await
                        .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
                }
                Conn::Tls(Box::new(t))
            }
        };
        conn.send(upgrade_request(&path))
            .await
            .map_err(|e| format!("upgrade request: {e}"))?;
        let mut head = Vec::new();
        let end = loop {
            if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            conn.recv(&mut head)
                .await
                .map_err(|e| format!("upgrade answer: {e}"))?;
        };
        if !head.starts_with(b"HTTP/1.1 101") {
            return Err(format!(
                "{path}: {}",
                String::from_utf8_lossy(&head[..end])
                    .lines()
                    .next()
                    .unwrap_or("")
            ));
        }
        if head.len() > end {
            return Err(format!("{path}: a frame before any message was sent"));
        }
        Ok(conn)
    }

    fn tls_suite(&self) -> Option<String> {
        match self {
            Conn::Plain { .. } => None,
            Conn::Tls(t) => Some(format!(
                "{:?} {:?}",
                t.tls.protocol_version()?,
                t.tls.negotiated_cipher_suite()?.suite()
            )),
        }
    }

    async fn send(&mut self, data: Vec<u8>) -> std::io::Result<()> {
        match self {
            Conn::Plain { tcp, .. } => tcp.write_all(data).await.0.map(drop),
            Conn::Tls(t) => {
                t.tls.writer().write_all(&data)?;
                t.flush().await
            }
        }
    }

    /// Appends what arrives next (at least one byte) to `into`.
    async fn recv(&mut self, into: &mut Vec<u8>) -> std::io::Result<()> {
        match self {
            Conn::Plain { tcp, buf } => {
                let b = buf.take().expect("buffer");
                let (r, b) = tcp.read(b).await;
                let n = r?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                into.extend_from_slice(&b[..n]);
                *buf = Some(b);
                Ok(())
            }
            Conn::Tls(t) => loop {
                let before = into.len();
                t.recv(into).await?;
                if into.len() > before {
                    return Ok(());
                }
            },
        }
    }
}

impl TlsConn {
    /// Writes out every TLS record rustls has ready.
    async fn flush(&mut self) -> std::io::Result<()> {
        while self.tls.wants_write() {
            let mut out = self.wbuf.take().expect("buffer");
            out.clear();
            while self.tls.wants_write() {
                self.tls.write_tls(&mut out)?;
            }
            let (r, out) = self.tcp.write_all(out).await;
            self.wbuf = Some(out);
            r?;
        }
        Ok(())
    }

    /// Reads once from the socket, decrypts, appends any plaintext to
    /// `into` (possibly none: handshake messages, tickets), and sends what
    /// rustls wants to answer.
    async fn recv(&mut self, into: &mut Vec<u8>) -> std::io::Result<()> {
        let b = self.rbuf.take().expect("buffer");
        let (r, b) = self.tcp.read(b).await;
        let n = match r {
            Ok(n) => n,
            Err(e) => {
                self.rbuf = Some(b);
                return Err(e);
            }
        };
        if n == 0 {
            self.rbuf = Some(b);
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let mut rest = &b[..n];
        let mut result = Ok(());
        while !rest.is_empty() {
            if let Err(e) = self.tls.read_tls(&mut rest) {
                result = Err(e);
                break;
            }
            match self.tls.process_new_packets() {
                Ok(state) => {
                    let k = state.plaintext_bytes_to_read();
                    if k > 0 {
                        let at = into.len();
                        into.resize(at + k, 0);
                        self.tls.reader().read_exact(&mut into[at..])?;
                    }
                }
                Err(e) => {
                    result = Err(std::io::Error::other(e));
                    break;
                }
            }
        }
        self.rbuf = Some(b);
        result?;
        self.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::take_frame;

    #[test]
    fn takes_whole_frames_only() {
        let mut inbox = vec![0x82, 3, b'a', b'b'];
        assert_eq!(take_frame(&mut inbox), None);
        inbox.extend_from_slice(&[b'c', 0x89, 0]);
        assert_eq!(take_frame(&mut inbox), Some((0x2, b"abc".to_vec())));
        assert_eq!(take_frame(&mut inbox), Some((0x9, Vec::new())));
        assert!(inbox.is_empty());
    }
}
