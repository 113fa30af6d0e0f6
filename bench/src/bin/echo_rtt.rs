//! Round trips through the gateway to a runner's echo actor and back:
//! closed-loop clients (send, wait for the echo, send again), reporting
//! messages per second, latency percentiles, and the gateway's CPU time per
//! message. Clients spread over many actor keys, so actors (and their home
//! workers) are spread over the gateway's workers.
//!
//!     cargo run --release -p tether-bench --bin echo_rtt -- --clients 50 --seconds 10

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use tether_bench::{
    client_frame, read_frame, serve_if_asked, start_reference_runner, ws_connect, GatewayChild,
};

#[global_allocator]
static GLOBAL: tether_bench::CountingMimalloc = tether_bench::CountingMimalloc;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Distinct actor keys the clients are spread over.
    #[arg(long, default_value_t = 50)]
    actors: usize,
    #[arg(long, default_value_t = 64)]
    message_bytes: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 2)]
    workers: usize,
    #[arg(long, default_value = "auto")]
    driver: String,
}

fn main() {
    serve_if_asked();
    let args = Args::parse();
    let gw = GatewayChild::spawn(args.workers, &args.driver);
    let runner = start_reference_runner(&gw);
    let stop = Arc::new(AtomicBool::new(false));
    let payload = vec![b'x'; args.message_bytes];
    let threads: Vec<_> = (0..args.clients)
        .map(|i| {
            let mut s = ws_connect(
                gw.client_addr,
                &format!("/actors/echo/k{}", i % args.actors),
            );
            let (stop, frame) = (stop.clone(), client_frame(&payload));
            std::thread::spawn(move || {
                let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    s.write_all(&frame).expect("send");
                    read_frame(&mut s);
                    h.record(t.elapsed().as_micros().max(1) as u64)
                        .expect("record");
                }
                h
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1)); // warm-up, not measured
    let cpu0 = gw.cpu_seconds();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(args.seconds));
    let cpu = gw.cpu_seconds() - cpu0;
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    for t in threads {
        all.add(t.join().expect("client thread")).expect("merge");
    }
    // The histogram includes the warm-up second; rates use the measured window.
    let total = all.len() as f64;
    let rate = total / (elapsed + 1.0);
    println!(
        "echo-rtt: clients={} actors={} bytes={} workers={} driver={}",
        args.clients, args.actors, args.message_bytes, args.workers, args.driver
    );
    println!("  round trips/s: {rate:.0}");
    println!(
        "  latency µs: p50 {} p90 {} p99 {} p99.9 {} max {}",
        all.value_at_quantile(0.5),
        all.value_at_quantile(0.9),
        all.value_at_quantile(0.99),
        all.value_at_quantile(0.999),
        all.max()
    );
    println!("  gateway CPU: {:.2} s over {elapsed:.1} s = {:.1} µs per round trip (one message each way through the gateway)", cpu, cpu * 1e6 / (rate * elapsed));
    runner.stop();
}
