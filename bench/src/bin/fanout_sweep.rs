//! The highest fan-out each target sustains: loadtest's `chat-fanout-large`
//! (10,000 clients in 10 rooms of 1,000) with the per-client send rate
//! raised step by step. At each rate every target runs once (alternating);
//! a run is sustained when p99 ≤ `--max-p99-ms`, nothing was lost,
//! duplicated or reordered, and the clients received at least 90 % of the
//! deliveries the rate offers (the load test's pacing itself falls a few
//! per cent short at these rates). A target overwhelmed at two rates in a
//! row (errors, or under 70 % delivered) is not tried higher; the table
//! also gives the most each delivered at any latency without errors.
//!
//!     cargo build --release -p tether -p tether-bench
//!     target/release/fanout_sweep --seconds 8     # rates 0.001 to 0.1 per client
//!
//! At 10,000 clients a proxy holds 20,000 sockets (client and upstream);
//! where the open-file limit forbids that (HAProxy is one process), its
//! clients fail to connect and its rows say so.

use std::time::Duration;

use clap::Parser;
use tether_bench::targets::{start_target, start_ws_server};
use tether_loadtest::run::{run, Options};
use tether_loadtest::scenario::Scenario;

#[derive(Parser)]
struct Args {
    /// Messages per second per client, in the order tried.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.001,0.002,0.005,0.01,0.02,0.05,0.1"
    )]
    rates: Vec<f64>,
    /// Measured seconds per run (after the scenario's warm-up).
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    #[arg(long, default_value_t = 2)]
    workers: usize,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,tether,nginx,haproxy"
    )]
    targets: Vec<String>,
    /// The latency bound of a sustained run.
    #[arg(long, default_value_t = 50)]
    max_p99_ms: u64,
    /// The scenario swept (a shipped name or a TOML path).
    #[arg(long, default_value = "chat-fanout-large")]
    scenario: String,
}

struct Step {
    rate: f64,
    offered: f64,
    delivered: f64,
    p50_us: u64,
    p99_us: u64,
    errors: u64,
    cpu_us_per_delivery: Option<f64>,
    sustained: bool,
}

fn main() {
    tether_loadtest::runners::run_if_asked();
    let args = Args::parse();
    let (backend_port, backend) = start_ws_server(args.workers);
    let mut steps: Vec<Vec<Step>> = args.targets.iter().map(|_| Vec::new()).collect();
    for &rate in &args.rates {
        for (t, name) in args.targets.iter().enumerate() {
            if gave_up(&steps[t]) {
                continue;
            }
            let step = measure(&args, name, backend_port, rate);
            eprintln!(
                "rate {rate:<5} {name:8} offered {:>9.0}/s delivered {:>9.0}/s p50 {:>6} µs p99 {:>7} µs errors {} {}",
                step.offered,
                step.delivered,
                step.p50_us,
                step.p99_us,
                step.errors,
                if step.sustained { "ok" } else { "NOT sustained" }
            );
            steps[t].push(step);
        }
    }
    println!("{}", render(&args, &steps));
    drop(backend);
}

/// Overwhelmed at two rates in a row: higher ones would be too.
fn gave_up(steps: &[Step]) -> bool {
    let overwhelmed = |s: &Step| s.errors > 0 || s.delivered < 0.7 * s.offered;
    steps.len() >= 2 && steps.iter().rev().take(2).all(overwhelmed)
}

fn measure(args: &Args, name: &str, backend_port: u16, rate: f64) -> Step {
    let target = start_target(name, backend_port, args.workers, None);
    let mut s = Scenario::load(&args.scenario).expect("shipped scenario");
    s.url = target.url.clone();
    s.rate = rate;
    s.duration = Duration::from_secs(args.seconds);
    s.chaos.clear();
    s.runners = usize::from(target.runner_url.is_some());
    if let Some(url) = &target.runner_url {
        s.runner_url = url.clone();
    }
    let room = (s.clients / s.actors) as f64;
    let offered = s.clients as f64 * rate * room;
    let options = Options {
        gateway_pid: target.measured,
        progress: false,
    };
    let step = match run(s, &options) {
        Ok(report) => {
            let rt = report.round_trip_us.clone();
            let (p50_us, p99_us) = rt.map_or((0, u64::MAX), |r| (r.p50, r.p99));
            let delivered = report.messages.received_per_second;
            let errors = report.errors.total();
            if errors > 0 {
                eprintln!(
                    "rate {rate} {name}: {:?} {:?}",
                    report.errors, report.error_notes
                );
            }
            Step {
                rate,
                offered,
                delivered,
                p50_us,
                p99_us,
                errors,
                cpu_us_per_delivery: report.gateway.as_ref().map(|g| g.cpu_us_per_message),
                sustained: errors == 0
                    && p99_us <= args.max_p99_ms * 1000
                    && delivered >= 0.9 * offered,
            }
        }
        Err(e) => {
            eprintln!("rate {rate} {name}: {e}");
            Step {
                rate,
                offered,
                delivered: 0.0,
                p50_us: 0,
                p99_us: u64::MAX,
                errors: u64::MAX,
                cpu_us_per_delivery: None,
                sustained: false,
            }
        }
    };
    drop(target);
    step
}

fn render(args: &Args, steps: &[Vec<Step>]) -> String {
    let mut out = format!(
        "\n{} — rate sweep, {} s per run; sustained: p99 ≤ {} ms, nothing lost, ≥ 90 % of the offered deliveries\n\n| target | rate per client | offered deliveries/s | delivered/s | p50 µs | p99 µs | errors | proxy CPU µs per delivery | sustained |\n|---|---|---|---|---|---|---|---|---|\n",
        args.scenario, args.seconds, args.max_p99_ms
    );
    for (t, name) in args.targets.iter().enumerate() {
        for s in &steps[t] {
            out.push_str(&format!(
                "| {name} | {} | {:.0} | {:.0} | {} | {} | {} | {} | {} |\n",
                s.rate,
                s.offered,
                s.delivered,
                s.p50_us,
                show_u64(s.p99_us),
                show_u64(s.errors),
                s.cpu_us_per_delivery
                    .map_or("—".into(), |c| format!("{c:.2}")),
                if s.sustained { "yes" } else { "no" }
            ));
        }
    }
    out.push_str("\n| target | highest sustained deliveries/s | most delivered/s without errors, any latency |\n|---|---|---|\n");
    for (t, name) in args.targets.iter().enumerate() {
        let best = |keep: &dyn Fn(&Step) -> bool| {
            steps[t]
                .iter()
                .filter(|s| keep(s))
                .map(|s| s.delivered)
                .fold(None, |m: Option<f64>, d| Some(m.map_or(d, |m| m.max(d))))
                .map_or("none".into(), |d| format!("{d:.0}"))
        };
        let sustained = best(&|s| s.sustained);
        let ceiling = best(&|s| s.errors == 0);
        out.push_str(&format!("| {name} | {sustained} | {ceiling} |\n"));
    }
    out
}

fn show_u64(v: u64) -> String {
    if v == u64::MAX {
        "—".into()
    } else {
        v.to_string()
    }
}
