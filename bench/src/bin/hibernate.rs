//! Hibernation: N client sockets over many chat rooms, the rooms go to sleep,
//! and we measure what the gateway keeps per hibernated socket, what it
//! spends while everything is idle, and how long a wake takes.
//!
//!     cargo run --release -p tether-bench --bin hibernate -- --connections 15000 --rooms 1500
//!
//! By default it runs twice, each time against a fresh gateway: plain
//! `ws://` sockets, then `wss://` (TLS 1.3, a CA generated for the run),
//! and prints both side by side (`--modes plain`, `--modes tls` or `--tls`
//! for one of them).
//!
//! `TETHER_BENCH_CENSUS=1` also prints what the hibernated sockets hold by
//! allocation size (see `census.rs`).
//!
//! Wake latency: a message on a hibernated socket until the sender gets the
//! room's broadcast of it back (start on a runner + restore of the room's
//! connections + delivery + the broadcast's way back).

use std::io::Write;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use tether_bench::{
    client_frame, read_frame, serve_if_asked, start_reference_runner, GatewayChild,
};

#[global_allocator]
static GLOBAL: tether_bench::CountingMimalloc = tether_bench::CountingMimalloc;

#[derive(Parser)]
struct Args {
    /// Hibernated sockets (the test machines allow 20,000 open files per process).
    #[arg(long, default_value_t = 15_000)]
    connections: usize,
    /// Chat rooms the sockets are spread over.
    #[arg(long, default_value_t = 1_500)]
    rooms: usize,
    /// How long to watch the gateway's CPU while everything sleeps.
    #[arg(long, default_value_t = 30)]
    idle_seconds: u64,
    /// Rooms woken one after another for the latency distribution.
    #[arg(long, default_value_t = 300)]
    wakes: usize,
    #[arg(long, default_value_t = 2)]
    workers: usize,
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
    hibernated_kib: u64,
    per_socket: f64,
    live_per_socket: f64,
    idle_cpu: f64,
    open_secs: f64,
    wakes: Histogram<u64>,
}

fn main() {
    serve_if_asked();
    let mut args = Args::parse();
    if args.tls {
        args.modes = vec!["tls".into()];
    }
    // Rooms fall asleep 1 s after their last message; keepalive pings are
    // spaced out so that these non-answering clients are not dropped.
    std::env::set_var("TETHER_BENCH_IDLE_TIMEOUT_MS", "1000");
    std::env::set_var("TETHER_BENCH_PING_INTERVAL_MS", "600000");
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
        "hibernate: sockets={} rooms={} workers={} driver={}",
        args.connections, args.rooms, args.workers, args.driver
    );
    for f in &figures {
        println!("  [{}]", f.mode);
        println!(
            "  gateway RSS before: {} KiB, all hibernated: {} KiB ({} sockets opened in {:.1} s)",
            f.base_kib, f.hibernated_kib, args.connections, f.open_secs
        );
        println!(
            "  RSS growth per hibernated socket: {:.0} bytes",
            f.per_socket
        );
        println!(
            "  live heap growth per hibernated socket: {:.0} bytes (allocated and not freed)",
            f.live_per_socket
        );
        println!(
            "  gateway CPU while idle: {:.3} s over {} s ({:.3} %)",
            f.idle_cpu,
            args.idle_seconds,
            f.idle_cpu * 100.0 / args.idle_seconds as f64
        );
        println!(
            "  wake latency ({} wakes of {}-socket rooms) µs: p50 {} p90 {} p99 {} max {}",
            f.wakes.len(),
            args.connections / args.rooms,
            f.wakes.value_at_quantile(0.5),
            f.wakes.value_at_quantile(0.9),
            f.wakes.value_at_quantile(0.99),
            f.wakes.max()
        );
    }
    if figures.len() > 1 {
        println!(
            "\n| per hibernated socket | {} |",
            join(&figures, |f| f.mode.clone())
        );
        println!("|---|{}", "---|".repeat(figures.len()));
        println!(
            "| RSS | {} |",
            join(&figures, |f| format!("{:.0} B", f.per_socket))
        );
        println!(
            "| live heap | {} |",
            join(&figures, |f| format!("{:.0} B", f.live_per_socket))
        );
        println!(
            "| wake p50 / p99 | {} |",
            join(&figures, |f| format!(
                "{} / {} µs",
                f.wakes.value_at_quantile(0.5),
                f.wakes.value_at_quantile(0.99)
            ))
        );
    }
}

fn join(figures: &[Figures], cell: impl Fn(&Figures) -> String) -> String {
    figures.iter().map(cell).collect::<Vec<_>>().join(" | ")
}

/// One gateway child, `args.connections` sockets hibernated on it, idle
/// CPU, then the wakes.
fn run(args: &Args, tls: bool) -> Figures {
    let mode = if tls { "tls" } else { "plain" };
    eprintln!("  [{mode}] starting a gateway");
    let gw = GatewayChild::spawn_with(args.workers, &args.driver, tls);
    let runner = start_reference_runner(&gw);
    // Warm-up: a few rooms come and go so pools and tables exist.
    let warm: Vec<_> = (0..200)
        .map(|i| gw.ws_connect(&format!("/actors/chat/warm{i}"), &[]))
        .collect();
    drop(warm);
    wait_until("warm-up rooms asleep", || runner.running_actors() == 0);
    std::thread::sleep(Duration::from_millis(500));
    let base = gw.rss_kib();
    let base_live = gw.live_heap_bytes();
    let base_census = gw.census();

    let t = Instant::now();
    let mut conns: Vec<_> = (0..args.connections)
        .map(|i| gw.ws_connect(&format!("/actors/chat/room{}", i % args.rooms), &[]))
        .collect();
    let open_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "  [{mode}] {} sockets open in {open_secs:.1}s, gateway RSS {} KiB",
        args.connections,
        gw.rss_kib()
    );
    wait_until("every room asleep", || runner.running_actors() == 0);
    std::thread::sleep(Duration::from_secs(2));
    let hibernated = gw.rss_kib();
    let live = gw.live_heap_bytes();
    if let (Some(before), Some(after)) = (&base_census, gw.census()) {
        eprint!(
            "{}",
            tether_bench::census::report(before, &after, args.connections)
        );
    }
    let live_per_socket = live.saturating_sub(base_live) as f64 / args.connections as f64;
    let per_socket = (hibernated.saturating_sub(base) as f64 * 1024.0) / args.connections as f64;

    let cpu0 = gw.cpu_seconds();
    std::thread::sleep(Duration::from_secs(args.idle_seconds));
    let idle_cpu = gw.cpu_seconds() - cpu0;

    let mut wakes = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    // The first `rooms` sockets are one per room.
    for s in conns.iter_mut().take(args.wakes.min(args.rooms)) {
        let t = Instant::now();
        s.write_all(&client_frame(b"wake")).expect("send");
        s.flush().expect("flush");
        assert_eq!(read_frame(s), b"wake");
        wakes
            .record(t.elapsed().as_micros().max(1) as u64)
            .expect("record");
    }
    drop(conns);
    runner.stop();
    Figures {
        mode: mode.into(),
        base_kib: base,
        hibernated_kib: hibernated,
        per_socket,
        live_per_socket,
        idle_cpu,
        open_secs,
        wakes,
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(120);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
