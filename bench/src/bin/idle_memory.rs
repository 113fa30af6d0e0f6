//! Gateway memory per idle WebSocket: RSS growth of a gateway process divided
//! by the number of open, idle, upgraded connections to a runner's actor.
//!
//! The gateway runs in a child process; the clients and the reference runner
//! (whose `echo` actor serves the connections) run in this process, so
//! neither is counted.
//!
//!     cargo run --release -p tether-bench --bin idle_memory -- --connections 15000

use std::time::{Duration, Instant};

use clap::Parser;
use tether_bench::{
    client_frame, read_frame, serve_if_asked, start_reference_runner, ws_connect_with, GatewayChild,
};

#[global_allocator]
static GLOBAL: tether_bench::CountingMimalloc = tether_bench::CountingMimalloc;

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
}

fn main() {
    serve_if_asked();
    let args = Args::parse();
    let gw = GatewayChild::spawn(args.workers, &args.driver);
    let runner = start_reference_runner(&gw);

    // Warm up: open and close a batch so pools and runtime structures exist.
    let warm: Vec<_> = (0..200).map(|_| open_idle(&gw)).collect();
    drop(warm);
    std::thread::sleep(Duration::from_millis(500));
    let base = gw.rss_kib();
    let base_live = gw.live_heap_bytes();

    let started = Instant::now();
    let mut conns = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        conns.push(open_idle(&gw));
        if (i + 1) % 5000 == 0 {
            eprintln!("  {} connections open", i + 1);
        }
    }
    let open_secs = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let loaded = gw.rss_kib();
    let live = gw.live_heap_bytes().saturating_sub(base_live) as f64 / args.connections as f64;
    let per_conn = (loaded.saturating_sub(base) as f64 * 1024.0) / args.connections as f64;

    println!(
        "idle-memory: connections={} workers={} driver={}",
        args.connections, args.workers, args.driver
    );
    println!("  gateway RSS before: {base} KiB, with connections: {loaded} KiB");
    println!("  RSS growth per idle connection: {per_conn:.0} bytes");
    println!("  live heap growth per idle connection: {live:.0} bytes (allocated and not freed)");
    println!(
        "  opened in {open_secs:.2}s ({:.0} handshakes/s)",
        args.connections as f64 / open_secs
    );
    drop(conns);
    runner.stop();
}

/// Opens a WebSocket to the echo actor, does one round trip so every buffer
/// has been used and returned, and leaves it idle.
fn open_idle(gw: &GatewayChild) -> std::net::TcpStream {
    let mut s = ws_connect_with(gw.client_addr, "/actors/echo/idle", &client_frame(b"hi"));
    assert_eq!(read_frame(&mut s), b"hi");
    s
}
