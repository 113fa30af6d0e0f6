//! Gateway memory per idle WebSocket: RSS growth of a gateway process divided
//! by the number of open, idle, upgraded connections.
//!
//! The gateway runs in a child process (this binary re-executed with
//! `--serve`); the clients and the reference runner (whose `echo` actor
//! serves the connections) run in this process, so neither is counted.
//!
//!     cargo run --release -p tether-bench --bin idle-memory -- --connections 15000

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use tether::runner::{BuiltinActors, Runner, RunnerOptions};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// Idle connections to open (the test machines allow 20,000 open files per process).
    #[arg(long, default_value_t = 15_000)]
    connections: usize,
    /// Gateway worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// io_driver for the gateway: auto, io_uring or epoll.
    #[arg(long, default_value = "auto")]
    driver: String,
    /// Internal: run the gateway (used by the parent process).
    #[arg(long, hide = true)]
    serve: bool,
}

fn main() {
    let args = Args::parse();
    if args.serve {
        return serve(&args);
    }
    let exe = std::env::current_exe().expect("own path");
    let mut child = Command::new(exe)
        .args([
            "--serve",
            "--workers",
            &args.workers.to_string(),
            "--driver",
            &args.driver,
        ])
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
    let (addr, runner_addr) = (
        addrs.next().expect("client address"),
        addrs.next().expect("runner address"),
    );
    let pid = child.id();
    let runner = Runner::start(
        RunnerOptions::new(
            &format!("ws://{runner_addr}"),
            tether::config::DEV_RUNNER_TOKEN,
        ),
        BuiltinActors,
    );
    assert!(
        runner.wait_connected(Duration::from_secs(10)),
        "runner connects"
    );

    // Warm up: open and close a batch so pools and runtime structures exist.
    let warm: Vec<TcpStream> = (0..200).map(|_| open_idle(addr)).collect();
    drop(warm);
    std::thread::sleep(Duration::from_millis(500));
    let base = rss_kib(pid);

    let started = Instant::now();
    let mut conns = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        conns.push(open_idle(addr));
        if (i + 1) % 5000 == 0 {
            eprintln!("  {} connections open", i + 1);
        }
    }
    let open_secs = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let loaded = rss_kib(pid);
    let per_conn = (loaded.saturating_sub(base) as f64 * 1024.0) / args.connections as f64;

    println!(
        "idle-memory: connections={} workers={} driver={}",
        args.connections, args.workers, args.driver
    );
    println!("  gateway RSS before: {base} KiB, with connections: {loaded} KiB");
    println!("  RSS growth per idle connection: {per_conn:.0} bytes");
    println!(
        "  opened in {open_secs:.2}s ({:.0} handshakes/s)",
        args.connections as f64 / open_secs
    );
    drop(conns);
    runner.stop();
    let _ = child.kill();
    let _ = child.wait();
}

/// Opens a WebSocket, does one echo round trip so every buffer has been
/// used and returned, and leaves it idle.
fn open_idle(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let req = "GET /actors/echo/idle HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    // A masked 2-byte text frame "hi" pipelined behind the head.
    let frame = [0x81u8, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
    s.write_all(req.as_bytes()).expect("request");
    s.write_all(&frame).expect("frame");
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.ends_with(&[0x81, 2, b'h', b'i']) {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "gateway closed the connection");
        got.extend_from_slice(&buf[..n]);
    }
    s
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn serve(args: &Args) {
    let mut config = tether::Config::default();
    config.server.workers = args.workers;
    config.server.log_level = "warn".into();
    config.server.io_driver = match args.driver.as_str() {
        "io_uring" => tether::config::IoDriver::IoUring,
        "epoll" => tether::config::IoDriver::Epoll,
        _ => tether::config::IoDriver::Auto,
    };
    config.client.listen = "127.0.0.1:0".parse().expect("addr");
    config.admin.listen = "127.0.0.1:0".parse().expect("addr");
    config.runners.listen = "127.0.0.1:0".parse().expect("addr");
    tether::logging::init(&config.server.log_level);
    let gw = tether::Gateway::start(config).expect("gateway starts");
    println!("{} {}", gw.client_addr, gw.runner_addr);
    std::io::stdout().flush().expect("flush");
    gw.join();
}
