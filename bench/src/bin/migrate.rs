//! What clients see when a runner dies or drains under load: closed-loop
//! clients send numbered messages to echo actors spread over three runner
//! processes; one runner is killed with SIGKILL (`kill`) or drained with
//! SIGTERM (`drain`). Reports the pause each client saw (its longer round
//! trip of the round the event fell into and the next; compare with the
//! baseline round trip of a round before the event), messages lost / duplicated / reordered (checked
//! by sequence number; must be 0), and the time until every client had a
//! reply to a message sent after the event (all actors running again).
//!
//!     cargo run --release -p tether-bench --bin migrate -- --scenario kill --runs 3

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use tether_bench::{client_frame, read_frame, serve_if_asked, ws_connect, GatewayChild};
use tether_loadtest::runners::{self, RunnerChild};

#[global_allocator]
static GLOBAL: tether_bench::CountingMimalloc = tether_bench::CountingMimalloc;

#[derive(Parser)]
struct Args {
    /// `kill` (SIGKILL one runner), `drain` (SIGTERM: graceful) or `both`.
    #[arg(long, default_value = "both")]
    scenario: String,
    #[arg(long, default_value_t = 500)]
    clients: usize,
    #[arg(long, default_value_t = 50)]
    actors: usize,
    /// Client threads (each drives clients/threads sockets in rounds).
    #[arg(long, default_value_t = 10)]
    threads: usize,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

/// One client thread's view of the event.
#[derive(Default)]
struct ThreadReport {
    messages: u64,
    errors: u64,
    first_error: Option<String>,
    /// Per socket: its longer round trip of the round the event fell into
    /// and the next.
    pauses: Vec<Duration>,
    /// Round trips before the event (the baseline).
    before: Vec<Duration>,
    /// When the first round started after the event completed.
    recovered_at: Option<Instant>,
}

fn main() {
    serve_if_asked();
    runners::run_if_asked();
    let args = Args::parse();
    let scenarios: Vec<&str> = match args.scenario.as_str() {
        "both" => vec!["kill", "drain"],
        s => vec![s],
    };
    for scenario in scenarios {
        let mut summaries = Vec::new();
        for run in 1..=args.runs {
            let s = run_once(&args, scenario);
            println!(
                "{scenario} run {run}: pause p50 {} µs p99 {} µs max {} µs | baseline rtt p50 {} µs p99 {} µs | all running again after {} ms | lost+dup+reordered {} | {} messages",
                s.p50, s.p99, s.max, s.baseline_p50, s.baseline_p99, s.recovery_ms, s.errors, s.messages
            );
            summaries.push(s);
        }
        let median = |f: fn(&Summary) -> u64| {
            let mut v: Vec<u64> = summaries.iter().map(f).collect();
            v.sort_unstable();
            v[v.len() / 2]
        };
        println!(
            "{scenario} median of {} runs ({} clients, {} actors, 3 runner processes): pause p50 {} µs p99 {} µs max {} µs, all running again after {} ms, lost+dup+reordered total {}",
            args.runs,
            args.clients,
            args.actors,
            median(|s| s.p50),
            median(|s| s.p99),
            median(|s| s.max),
            median(|s| s.recovery_ms),
            summaries.iter().map(|s| s.errors).sum::<u64>()
        );
    }
}

struct Summary {
    p50: u64,
    p99: u64,
    max: u64,
    baseline_p50: u64,
    baseline_p99: u64,
    recovery_ms: u64,
    errors: u64,
    messages: u64,
}

fn run_once(args: &Args, scenario: &str) -> Summary {
    let gw = GatewayChild::spawn(args.workers, "auto");
    let dir = std::env::temp_dir().join(format!("tether-bench-migrate-{}", std::process::id()));
    let mut runners: Vec<RunnerChild> = (0..3)
        .map(|i| {
            let url = format!("ws://{}", gw.runner_addr);
            let key = format!("bench-runner-{i}");
            runners::spawn(&url, tether::config::DEV_RUNNER_TOKEN, &key, &dir)
                .expect("runner child connects")
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let event: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let per_thread = args.clients.div_ceil(args.threads);
    let handles: Vec<_> = (0..args.threads)
        .map(|t| {
            let ids: Vec<usize> =
                (t * per_thread..((t + 1) * per_thread).min(args.clients)).collect();
            let (stop, event, addr, actors) =
                (stop.clone(), event.clone(), gw.client_addr, args.actors);
            std::thread::spawn(move || drive(addr, ids, actors, stop, event))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let victim = runners.remove(1);
    let at = Instant::now();
    *event.lock().unwrap() = Some(at);
    match scenario {
        "kill" => {
            victim.signal(libc::SIGKILL);
            let _ = victim.wait();
        }
        _ => {
            victim.signal(libc::SIGTERM);
            let status = victim.wait().expect("wait for the runner");
            assert!(status.success(), "drained runner exits cleanly: {status:?}");
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Release);
    let reports: Vec<ThreadReport> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    drop(runners);
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);

    let mut pauses = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap();
    let mut before = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap();
    let mut errors = 0;
    let mut messages = 0;
    let mut recovered = at;
    for r in &reports {
        for p in &r.pauses {
            pauses.record(p.as_micros().max(1) as u64).unwrap();
        }
        for p in &r.before {
            before.record(p.as_micros().max(1) as u64).unwrap();
        }
        errors += r.errors;
        messages += r.messages;
        if let Some(e) = &r.first_error {
            eprintln!("  error: {e}");
        }
        recovered = recovered.max(r.recovered_at.unwrap_or(at));
    }
    Summary {
        p50: pauses.value_at_quantile(0.5),
        p99: pauses.value_at_quantile(0.99),
        max: pauses.max(),
        baseline_p50: before.value_at_quantile(0.5),
        baseline_p99: before.value_at_quantile(0.99),
        recovery_ms: recovered.duration_since(at).as_millis() as u64,
        errors,
        messages,
    }
}

fn drive(
    addr: std::net::SocketAddr,
    ids: Vec<usize>,
    actors: usize,
    stop: Arc<AtomicBool>,
    event: Arc<Mutex<Option<Instant>>>,
) -> ThreadReport {
    let mut sockets: Vec<_> = ids
        .iter()
        .map(|&i| {
            (
                i,
                ws_connect(addr, &format!("/actors/echo/m{}", i % actors)),
            )
        })
        .collect();
    let mut report = ThreadReport {
        pauses: vec![Duration::ZERO; sockets.len()],
        ..Default::default()
    };
    let mut seq = 0u64;
    let mut rtts = Vec::with_capacity(sockets.len());
    let mut rounds_after = 0;
    while !stop.load(Ordering::Acquire) {
        seq += 1;
        let started = Instant::now();
        let event_before = *event.lock().unwrap();
        for (i, s) in sockets.iter_mut() {
            use std::io::Write;
            s.write_all(&client_frame(format!("{i}:{seq}").as_bytes()))
                .expect("send");
        }
        rtts.clear();
        for (i, s) in sockets.iter_mut() {
            let got = read_frame(s);
            rtts.push(started.elapsed());
            let expected = format!("{i}:{seq}");
            if got == expected.as_bytes() {
                report.messages += 1;
            } else {
                report.errors += 1;
                report.first_error.get_or_insert_with(|| {
                    format!(
                        "client {i}: expected {expected}, got {}",
                        String::from_utf8_lossy(&got)
                    )
                });
            }
        }
        // A round the event fell into (or after) counts as a pause.
        match *event.lock().unwrap() {
            None => report.before.extend_from_slice(&rtts),
            // The round the event fell into and the one after it.
            Some(_) if rounds_after < 2 => {
                rounds_after += 1;
                for (p, rtt) in report.pauses.iter_mut().zip(&rtts) {
                    *p = (*p).max(*rtt);
                }
            }
            Some(_) => {}
        }
        if event_before.is_some() && report.recovered_at.is_none() {
            report.recovered_at = Some(Instant::now());
        }
    }
    report
}
