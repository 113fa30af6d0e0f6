//! Gateway memory per idle WebSocket: RSS growth of a gateway process divided
//! by the number of open, idle, upgraded connections to a runner's actor.
//!
//! The gateway runs in a child process; the clients and the reference runner
//! (whose `echo` actor serves the connections) run in this process, so
//! neither is counted.
//!
//!     cargo run --release -p tether-bench --bin idle_memory -- --connections 15000
//!
//! By default it runs twice, each time against a fresh gateway: plain
//! `ws://` connections, then `wss://` (TLS 1.3, a CA generated for the
//! run), and prints both side by side (`--modes plain`, `--modes tls` or
//! `--tls` for one of them).

use std::time::{Duration, Instant};

use clap::Parser;
use tether_bench::{
    client_frame, read_frame, serve_if_asked, start_reference_runner, ClientStream, GatewayChild,
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
    /// Client transports, run one after the other, each against a fresh
    /// gateway: `plain` (ws://) and `tls` (wss://, TLS 1.3 with a
    /// throwaway CA).
    #[arg(long, value_delimiter = ',', default_value = "plain,tls")]
    modes: Vec<String>,
    /// Shorthand for `--modes tls`.
    #[arg(long)]
    tls: bool,
}

struct Figures {
    mode: String,
    base_kib: u64,
    loaded_kib: u64,
    per_conn: f64,
    live: f64,
    open_secs: f64,
}

fn main() {
    serve_if_asked();
    let mut args = Args::parse();
    if args.tls {
        args.modes = vec!["tls".into()];
    }
    let figures: Vec<Figures> = args
        .modes
        .iter()
        .map(|mode| match mode.as_str() {
            "plain" => run(&args, false),
            "tls" => run(&args, true),
            other => panic!("unknown mode {other} (plain, tls)"),
        })
        .collect();
    println!(
        "idle-memory: connections={} workers={} driver={}",
        args.connections, args.workers, args.driver
    );
    for f in &figures {
        println!("  [{}]", f.mode);
        println!(
            "  gateway RSS before: {} KiB, with connections: {} KiB",
            f.base_kib, f.loaded_kib
        );
        println!("  RSS growth per idle connection: {:.0} bytes", f.per_conn);
        println!(
            "  live heap growth per idle connection: {:.0} bytes (allocated and not freed)",
            f.live
        );
        println!(
            "  opened in {:.2}s ({:.0} handshakes/s)",
            f.open_secs,
            args.connections as f64 / f.open_secs
        );
    }
    if figures.len() > 1 {
        let join = |cell: &dyn Fn(&Figures) -> String| {
            figures.iter().map(cell).collect::<Vec<_>>().join(" | ")
        };
        println!("\n| per idle connection | {} |", join(&|f| f.mode.clone()));
        println!("|---|{}", "---|".repeat(figures.len()));
        println!("| RSS | {} |", join(&|f| format!("{:.0} B", f.per_conn)));
        println!("| live heap | {} |", join(&|f| format!("{:.0} B", f.live)));
    }
}

fn run(args: &Args, tls: bool) -> Figures {
    let mode = if tls { "tls" } else { "plain" };
    let gw = GatewayChild::spawn_with(args.workers, &args.driver, tls);
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
            eprintln!("  [{mode}] {} connections open", i + 1);
        }
    }
    let open_secs = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let loaded = gw.rss_kib();
    let live = gw.live_heap_bytes().saturating_sub(base_live) as f64 / args.connections as f64;
    let per_conn = (loaded.saturating_sub(base) as f64 * 1024.0) / args.connections as f64;
    drop(conns);
    runner.stop();
    Figures {
        mode: mode.into(),
        base_kib: base,
        loaded_kib: loaded,
        per_conn,
        live,
        open_secs,
    }
}

/// Opens a WebSocket to the echo actor, does one round trip so every buffer
/// has been used and returned, and leaves it idle.
fn open_idle(gw: &GatewayChild) -> ClientStream {
    let mut s = gw.ws_connect("/actors/echo/idle", &client_frame(b"hi"));
    assert_eq!(read_frame(&mut s), b"hi");
    s
}
