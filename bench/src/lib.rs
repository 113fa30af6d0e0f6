//! Shared pieces of the benchmarks: a gateway in a child process (so its
//! memory and CPU are measured alone), /proc readings, and a minimal raw
//! WebSocket client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The global allocator of the benchmark binaries: mimalloc, counting the
/// bytes currently allocated, so that live heap can be told apart from RSS
/// (which also holds memory the allocator keeps after it was freed).
pub struct CountingMimalloc;

static LIVE_BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

// SAFETY: forwards to mimalloc unchanged; only counts sizes.
unsafe impl std::alloc::GlobalAlloc for CountingMimalloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), std::sync::atomic::Ordering::Relaxed);
        mimalloc::MiMalloc.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        mimalloc::MiMalloc.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size, std::sync::atomic::Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        mimalloc::MiMalloc.realloc(ptr, layout, new_size)
    }
}

/// A gateway running in a child process of the benchmark.
pub struct GatewayChild {
    child: Child,
    pub client_addr: SocketAddr,
    pub runner_addr: SocketAddr,
}

impl GatewayChild {
    /// Re-executes this benchmark binary with `--serve` (see [`serve_if_asked`]).
    pub fn spawn(workers: usize, driver: &str) -> GatewayChild {
        let exe = std::env::current_exe().expect("own path");
        let mut child = Command::new(exe)
            .args(["--serve", &workers.to_string(), driver])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start gateway child");
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
        }
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
    tether::logging::init(&config.server.log_level);
    let gw = tether::Gateway::start(config).expect("gateway starts");
    let file = live_file(std::process::id());
    std::thread::spawn(move || loop {
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

/// Opens a WebSocket with a blocking socket; panics on refusal.
pub fn ws_connect(addr: SocketAddr, path: &str) -> TcpStream {
    ws_connect_with(addr, path, &[])
}

/// Opens a WebSocket, sending `first_frames` right behind the request head
/// (pipelined, before the 101 arrives).
pub fn ws_connect_with(addr: SocketAddr, path: &str, first_frames: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(first_frames);
    s.write_all(&bytes).expect("request");
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
    s
}

/// A masked binary frame, as a client sends it.
pub fn client_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![0x82u8];
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

/// Reads one unmasked server frame's payload (skipping pings).
pub fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    loop {
        let mut h = [0u8; 2];
        s.read_exact(&mut h).expect("frame header");
        let len = match h[1] & 0x7F {
            126 => {
                let mut l = [0u8; 2];
                s.read_exact(&mut l).expect("len");
                u16::from_be_bytes(l) as usize
            }
            127 => {
                let mut l = [0u8; 8];
                s.read_exact(&mut l).expect("len");
                u64::from_be_bytes(l) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).expect("payload");
        if h[0] & 0x0F != 0x9 {
            return payload;
        }
    }
}
