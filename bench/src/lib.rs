//! Shared pieces of the benchmarks: a gateway in a child process (so its
//! memory and CPU are measured alone), /proc readings, a minimal raw
//! WebSocket client over plain TCP or TLS, and a throwaway certificate
//! authority for the `wss://` runs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

pub mod census;
pub mod http_load;
pub mod load;
pub use tether_testkit::netns;
pub mod targets;

/// The environment variable that tells a gateway child to serve its client
/// listener over TLS with `cert.pem` and `key.pem` from that directory.
pub const TLS_DIR_ENV: &str = "TETHER_BENCH_TLS_DIR";

/// The name the benchmark certificates are issued for (and the SNI sent).
pub const TLS_SERVER_NAME: &str = "localhost";

/// The global allocator of the benchmark binaries: mimalloc, counting the
/// bytes currently allocated, so that live heap can be told apart from RSS
/// (which also holds memory the allocator keeps after it was freed).
pub struct CountingMimalloc;

static LIVE_BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

// SAFETY: forwards to mimalloc unchanged; only counts sizes.
unsafe impl std::alloc::GlobalAlloc for CountingMimalloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), std::sync::atomic::Ordering::Relaxed);
        census::record(layout.size(), 1);
        mimalloc::MiMalloc.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        census::record(layout.size(), -1);
        mimalloc::MiMalloc.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size, std::sync::atomic::Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        census::record(new_size, 1);
        census::record(layout.size(), -1);
        mimalloc::MiMalloc.realloc(ptr, layout, new_size)
    }
}

/// A throwaway CA and a leaf certificate for `localhost` and 127.0.0.1,
/// generated at run time into a temporary directory that is removed on
/// drop: `ca.pem`, `cert.pem` (the leaf) and `key.pem`. No key material is
/// ever committed.
pub struct TestPki {
    pki: tether_testkit::ThrowawayPki,
}

impl TestPki {
    /// A throwaway CA and a leaf for `localhost` and 127.0.0.1.
    pub fn generate() -> TestPki {
        let pki = tether_testkit::ThrowawayPki::new("bench");
        let leaf = pki.leaf("cert", &[TLS_SERVER_NAME, "127.0.0.1"]);
        // The names the gateway child and bench/proxies/start.sh look for.
        for (from, to) in [(&leaf.chain, "cert.pem"), (&leaf.key, "key.pem")] {
            let pem = std::fs::read_to_string(from).expect("read a PEM file");
            pki.write(to, &pem);
        }
        let ca = std::fs::read_to_string(pki.ca_path()).expect("read the CA");
        pki.write("ca.pem", &ca);
        TestPki { pki }
    }

    /// The directory holding the CA, the certificate and its key.
    pub fn dir(&self) -> &Path {
        self.pki.dir()
    }

    pub fn ca(&self) -> PathBuf {
        self.pki.dir().join("ca.pem")
    }

    pub fn cert(&self) -> PathBuf {
        self.pki.dir().join("cert.pem")
    }

    pub fn key(&self) -> PathBuf {
        self.pki.dir().join("key.pem")
    }

    /// A client configuration that trusts only this CA (ALPN http/1.1).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        tether::tls::load_client_config(Some(&self.ca())).expect("client TLS config")
    }
}

/// A benchmark client's connection: plain TCP or TLS over it, blocking,
/// with TCP_NODELAY and a 10 s read timeout.
pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl ClientStream {
    /// Connects to `addr`, over TLS when `tls` is given (the handshake is
    /// completed here, verifying the certificate for [`TLS_SERVER_NAME`]).
    pub fn connect(addr: SocketAddr, tls: Option<&Arc<ClientConfig>>) -> ClientStream {
        let tcp = tcp_connect(addr);
        let Some(config) = tls else {
            return ClientStream::Plain(tcp);
        };
        let name = ServerName::try_from(TLS_SERVER_NAME).expect("server name");
        let conn = ClientConnection::new(config.clone(), name).expect("TLS client");
        let mut s = StreamOwned::new(conn, tcp);
        while s.conn.is_handshaking() {
            s.conn
                .complete_io(&mut s.sock)
                .unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}"));
        }
        ClientStream::Tls(Box::new(s))
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(_))
    }
}

impl Read for ClientStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.read(buf),
            ClientStream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.write(buf),
            ClientStream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            ClientStream::Plain(s) => s.flush(),
            ClientStream::Tls(s) => s.flush(),
        }
    }
}

/// A gateway running in a child process of the benchmark.
pub struct GatewayChild {
    child: Child,
    pub client_addr: SocketAddr,
    pub runner_addr: SocketAddr,
    /// Set when the client listener speaks TLS: how clients dial it.
    pub tls: Option<Arc<ClientConfig>>,
    _pki: Option<TestPki>,
}

impl GatewayChild {
    /// Re-executes this benchmark binary with `--serve` (see [`serve_if_asked`]).
    pub fn spawn(workers: usize, driver: &str) -> GatewayChild {
        GatewayChild::spawn_with(workers, driver, false)
    }

    /// As [`GatewayChild::spawn`]; with `tls`, the client listener serves
    /// `wss://` with a certificate from a CA generated for this child.
    pub fn spawn_with(workers: usize, driver: &str, tls: bool) -> GatewayChild {
        let exe = std::env::current_exe().expect("own path");
        let pki = tls.then(TestPki::generate);
        let mut cmd = Command::new(exe);
        cmd.args(["--serve", &workers.to_string(), driver])
            .stdout(Stdio::piped());
        match &pki {
            Some(p) => cmd.env(TLS_DIR_ENV, p.dir()),
            None => cmd.env_remove(TLS_DIR_ENV),
        };
        let mut child = cmd.spawn().expect("start gateway child");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("ready line");
        let mut addrs = line
            .split_whitespace()
            .map(|a| a.parse::<SocketAddr>().expect("child prints its addresses"));
        GatewayChild {
            client_addr: addrs.next().expect("client address"),
            runner_addr: addrs.next().expect("runner address"),
            child,
            tls: pki.as_ref().map(TestPki::client_config),
            _pki: pki,
        }
    }

    /// Opens a WebSocket to the client listener (over TLS if it has TLS),
    /// sending `first_frames` right behind the request head.
    pub fn ws_connect(&self, path: &str, first_frames: &[u8]) -> ClientStream {
        let mut s = ClientStream::connect(self.client_addr, self.tls.as_ref());
        ws_handshake(&mut s, path, first_frames);
        s
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Bytes the gateway has allocated and not freed (it reports them in a
    /// file every 2 s).
    pub fn live_heap_bytes(&self) -> u64 {
        std::thread::sleep(Duration::from_millis(2100));
        std::fs::read_to_string(live_file(self.pid()))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The gateway's live allocations by size, as of its last report
    /// (read right after [`GatewayChild::live_heap_bytes`]), if
    /// `TETHER_BENCH_CENSUS` is set.
    pub fn census(&self) -> Option<std::collections::BTreeMap<usize, i64>> {
        let text = std::fs::read_to_string(live_file(self.pid()).with_extension("census")).ok()?;
        Some(census::parse(&text))
    }

    /// User + system CPU time of the gateway so far.
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("proc stat");
        let after_comm = stat.rsplit(')').next().unwrap_or("");
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        let ticks: u64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0)
            + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        ticks as f64 / hz
    }
}

impl Drop for GatewayChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the reference runner against `gw` in this process and waits until
/// all its tunnels are up.
pub fn start_reference_runner(gw: &GatewayChild) -> tether::runner::Runner {
    let runner = tether::runner::Runner::start(
        tether::runner::RunnerOptions::new(
            &format!("ws://{}", gw.runner_addr),
            tether::config::DEV_RUNNER_TOKEN,
        ),
        tether::runner::BuiltinActors,
    );
    assert!(
        runner.wait_connected(Duration::from_secs(10)),
        "runner connects"
    );
    runner
}

/// In the child: if started with `--serve WORKERS DRIVER`, run a gateway on
/// free loopback ports, print "CLIENT RUNNER" on stdout, and never return.
pub fn serve_if_asked() {
    let args: Vec<String> = std::env::args().collect();
    let Some(i) = args.iter().position(|a| a == "--serve") else {
        return;
    };
    let workers: usize = args.get(i + 1).and_then(|w| w.parse().ok()).unwrap_or(2);
    let driver = args.get(i + 2).map(String::as_str).unwrap_or("auto");
    let mut config = tether::Config::default();
    config.server.workers = workers;
    config.server.log_level = "warn".into();
    config.server.io_driver = match driver {
        "io_uring" => tether::config::IoDriver::IoUring,
        "epoll" => tether::config::IoDriver::Epoll,
        _ => tether::config::IoDriver::Auto,
    };
    config.client.listen = "127.0.0.1:0".parse().expect("addr");
    config.admin.listen = "127.0.0.1:0".parse().expect("addr");
    config.runners.listen = "127.0.0.1:0".parse().expect("addr");
    // Every benchmark client comes from 127.0.0.1: no per-address creation limit.
    config.actors.new_per_second_per_address = 1_000_000;
    config.actors.new_burst_per_address = 1_000_000;
    // Every simulated client comes from one address.
    config.client.max_connections_per_address = 1_000_000;
    config.client.new_per_second_per_address = 1_000_000;
    config.client.new_burst_per_address = 1_000_000;
    // Benchmarks may tune a few settings through the environment.
    let ms = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(std::time::Duration::from_millis)
    };
    if let Some(d) = ms("TETHER_BENCH_IDLE_TIMEOUT_MS") {
        config.actors.idle_timeout = d;
    }
    if let Some(d) = ms("TETHER_BENCH_PING_INTERVAL_MS") {
        config.client.ping_interval = d;
        config.client.ping_timeout = d;
    }
    if let Some(n) = std::env::var("TETHER_BENCH_POOL_BUFFERS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.client.buffer_pool_buffers = n;
    }
    if std::env::var_os("TETHER_BENCH_KEEP_FREED_MEMORY").is_some() {
        config.server.return_freed_memory = false;
    }
    if let Some(dir) = std::env::var_os(TLS_DIR_ENV) {
        let dir = PathBuf::from(dir);
        config.client.tls = vec![tether::config::TlsCertificate {
            chain: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            names: Vec::new(),
        }];
    }
    tether::logging::init(&config.server.log_level);
    let gw = tether::Gateway::start(config).expect("gateway starts");
    let file = live_file(std::process::id());
    census::enable_if_asked();
    std::thread::spawn(move || loop {
        if census::enabled() {
            let _ = std::fs::write(file.with_extension("census"), census::text());
        }
        let _ = std::fs::write(
            &file,
            LIVE_BYTES
                .load(std::sync::atomic::Ordering::Relaxed)
                .to_string(),
        );
        // Rarely: this thread's own CPU counts in the gateway's idle figure.
        std::thread::sleep(Duration::from_secs(2));
    });
    println!("{} {}", gw.client_addr, gw.runner_addr);
    std::io::stdout().flush().expect("flush");
    gw.join();
    std::process::exit(0);
}

fn live_file(pid: u32) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("tether-bench-live-{pid}"))
}

fn tcp_connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

/// Opens a WebSocket with a blocking socket; panics on refusal.
pub fn ws_connect(addr: SocketAddr, path: &str) -> TcpStream {
    ws_connect_with(addr, path, &[])
}

/// Opens a WebSocket, sending `first_frames` right behind the request head
/// (pipelined, before the 101 arrives).
pub fn ws_connect_with(addr: SocketAddr, path: &str, first_frames: &[u8]) -> TcpStream {
    let mut s = tcp_connect(addr);
    ws_handshake(&mut s, path, first_frames);
    s
}

/// The upgrade request for `path` (host `bench`, RFC 6455's sample key).
pub fn upgrade_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").into_bytes()
}

/// Upgrades an open connection to a WebSocket on `path`, sending
/// `first_frames` right behind the request head; panics unless the answer
/// is 101. Reads the head byte by byte, so nothing after it is consumed.
pub fn ws_handshake<S: Read + Write>(s: &mut S, path: &str, first_frames: &[u8]) {
    let mut bytes = upgrade_request(path);
    bytes.extend_from_slice(first_frames);
    s.write_all(&bytes).expect("request");
    s.flush().expect("flush request");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut b).expect("read head");
        assert!(n > 0, "gateway closed during the handshake");
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
}

/// A masked binary frame, as a client sends it.
pub fn client_frame(payload: &[u8]) -> Vec<u8> {
    client_frame_op(0x2, payload)
}

/// A masked frame with this opcode (0x2 binary, 0xA pong, ...), final.
pub fn client_frame_op(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n < 65536 => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// A server (unmasked) frame's header at the start of `buf`:
/// `Some((first byte, header length, payload length))`, or `None` while
/// the header is incomplete.
pub fn parse_server_header(buf: &[u8]) -> Option<(u8, usize, usize)> {
    let (&b0, rest) = buf.split_first()?;
    let (&b1, rest) = rest.split_first()?;
    match b1 & 0x7F {
        126 => {
            let l: [u8; 2] = rest.get(..2)?.try_into().ok()?;
            Some((b0, 4, u16::from_be_bytes(l) as usize))
        }
        127 => {
            let l: [u8; 8] = rest.get(..8)?.try_into().ok()?;
            Some((b0, 10, u64::from_be_bytes(l) as usize))
        }
        n => Some((b0, 2, n as usize)),
    }
}

/// Reads one unmasked server frame's payload (skipping pings).
pub fn read_frame<S: Read>(s: &mut S) -> Vec<u8> {
    loop {
        let mut h = [0u8; 10];
        s.read_exact(&mut h[..2]).expect("frame header");
        let header_len = match h[1] & 0x7F {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        s.read_exact(&mut h[2..header_len]).expect("len");
        let (b0, _, len) = parse_server_header(&h[..header_len]).expect("whole header");
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).expect("payload");
        if b0 & 0x0F != 0x9 {
            return payload;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_headers_of_every_length_form() {
        assert_eq!(parse_server_header(&[0x82]), None);
        assert_eq!(parse_server_header(&[0x82, 5]), Some((0x82, 2, 5)));
        assert_eq!(parse_server_header(&[0x82, 126, 1]), None);
        assert_eq!(
            parse_server_header(&[0x82, 126, 1, 0]),
            Some((0x82, 4, 256))
        );
        let mut long = vec![0x89, 127];
        long.extend_from_slice(&70_000u64.to_be_bytes());
        assert_eq!(parse_server_header(&long[..9]), None);
        assert_eq!(parse_server_header(&long), Some((0x89, 10, 70_000)));
    }

    #[test]
    fn read_frame_skips_pings() {
        let mut wire: &[u8] = &[0x89, 1, b'p', 0x82, 126, 0, 3, b'a', b'b', b'c'];
        assert_eq!(read_frame(&mut wire), b"abc");
    }
}
