//! Side by side on one machine, in one run: the same WebSocket workloads
//! (a) directly against a plain WebSocket server (`ws_server`), (b) through
//! Tether to its reference runner, (c) through nginx and (d) through
//! HAProxy in front of that same `ws_server`. Runs alternate (every target
//! once per round, `--runs` rounds) and the table shows medians and ratios.
//!
//!     bench/compare.sh            # installs nginx/HAProxy if absent, builds, runs this
//!
//! The load comes from `tether_loadtest` in this process; each proxy's CPU
//! and RSS are read from /proc (with its worker processes).
//!
//! TLS: the workload `echo-tls` is loadtest's `echo-throughput` (same
//! clients, actors and message size) over `wss://`: Tether terminates TLS
//! on its client listener, nginx and HAProxy terminate it in front of the
//! same plain `ws_server`; `direct` stays plain `ws://` as the baseline.
//! The loadtest speaks `ws://` only, so this workload's clients are
//! `tether_bench::load` (monoio + rustls, TLS 1.3); `echo-plain` is the
//! same client without TLS, to tell TLS's cost from the client's. The
//! certificates come from a CA generated for the run (removed after).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tether_bench::load::{run_echo, EchoLoad};
use tether_bench::targets::{start_target, start_ws_server, Target};
use tether_bench::TestPki;
use tether_loadtest::report::Report;
use tether_loadtest::run::{run, Options};
use tether_loadtest::scenario::Scenario;

#[derive(Parser)]
struct Args {
    /// Rounds; every target runs every workload once per round.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Measured seconds per run (after a 2 s warm-up).
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Workers / threads of each proxy (and of Tether).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Workloads to run: shipped loadtest scenarios, `echo-tls`
    /// (echo-throughput over TLS, bench client) or `echo-plain` (the same
    /// client over ws://).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "echo-throughput,chat-fanout,echo-tls"
    )]
    workloads: Vec<String>,
    /// Targets: direct, tether, nginx, haproxy.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,tether,nginx,haproxy"
    )]
    targets: Vec<String>,
    /// Also write the table (markdown) to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

#[derive(Clone)]
struct Measure {
    throughput: f64,
    p50: u64,
    p99: u64,
    cpu_s_per_million: Option<f64>,
    rss_per_connection: Option<f64>,
    errors: u64,
    /// TLS version and cipher suite, when the clients spoke TLS.
    tls_suite: Option<String>,
}

/// Workloads whose clients are `tether_bench::load` rather than the
/// loadtest; the value: whether targets other than `direct` speak TLS.
fn bench_client_workload(workload: &str) -> Option<bool> {
    match workload {
        "echo-tls" => Some(true),
        "echo-plain" => Some(false),
        _ => None,
    }
}

/// `echo-tls` / `echo-plain`: loadtest's echo-throughput parameters, the
/// bench's own client (written before the loadtest spoke wss://; kept so
/// that both rows use the same client).
fn measure_bench_client(
    target: &Target,
    workload: &str,
    seconds: u64,
    pki: Option<&TestPki>,
) -> Measure {
    let s = Scenario::load("echo-throughput").expect("shipped scenario");
    let _runners = target.runner_url.as_ref().map(|url| {
        tether_loadtest::runners::start(1, url, &s.runner_token)
            .unwrap_or_else(|e| panic!("{} {workload}: {e}", target.name))
    });
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = EchoLoad {
        addr: ([127, 0, 0, 1], target.port).into(),
        tls: target
            .tls
            .then(|| pki.expect("a CA for the TLS targets").client_config()),
        path_prefix: "/actors/echo/".into(),
        clients: s.clients,
        actors: s.actors,
        message_bytes: s.message_bytes,
        warmup: Duration::from_secs(2),
        duration: Duration::from_secs(seconds),
        threads: if s.threads == 0 { cores } else { s.threads },
        measured: target.measured,
    };
    let r = run_echo(&load).unwrap_or_else(|e| panic!("{} {workload}: {e}", target.name));
    Measure {
        throughput: r.per_second,
        p50: r.p50_us,
        p99: r.p99_us,
        cpu_s_per_million: r.cpu_us_per_message,
        rss_per_connection: r.rss_bytes_per_connection,
        errors: r.errors,
        tls_suite: r.tls_suite,
    }
}

fn measure(target: &Target, workload: &str, seconds: u64, pki: Option<&TestPki>) -> Measure {
    if bench_client_workload(workload).is_some() {
        return measure_bench_client(target, workload, seconds, pki);
    }
    let mut s = Scenario::load(workload).expect("shipped scenario");
    s.url = target.url.clone();
    s.warmup = Duration::from_secs(2);
    s.duration = Duration::from_secs(seconds);
    s.chaos.clear();
    if let Some(r) = &target.runner_url {
        s.runners = 1;
        s.runner_url = r.clone();
    } else {
        s.runners = 0;
    }
    let report: Report = run(
        s,
        &Options {
            gateway_pid: target.measured,
            progress: false,
        },
    )
    .unwrap_or_else(|e| panic!("{} {workload}: {e}", target.name));
    let rt = report.round_trip_us.clone();
    Measure {
        throughput: report.messages.received_per_second,
        p50: rt.as_ref().map_or(0, |r| r.p50),
        p99: rt.as_ref().map_or(0, |r| r.p99),
        cpu_s_per_million: report.gateway.as_ref().map(|g| g.cpu_us_per_message),
        rss_per_connection: report.gateway.as_ref().map(|g| g.rss_bytes_per_connection),
        errors: report.errors.total(),
        tls_suite: None,
    }
}

fn median_f(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    tether_loadtest::runners::run_if_asked();
    let args = Args::parse();
    let (backend_port, backend) = start_ws_server(args.workers);
    let pki = args
        .workloads
        .iter()
        .any(|w| bench_client_workload(w) == Some(true))
        .then(TestPki::generate);
    // results[workload][target] = runs
    let mut results: Vec<Vec<Vec<Measure>>> =
        vec![vec![Vec::new(); args.targets.len()]; args.workloads.len()];
    for round in 1..=args.runs {
        for (w, workload) in args.workloads.iter().enumerate() {
            for (t, name) in args.targets.iter().enumerate() {
                // A fresh proxy per run: its RSS growth is this run's connections'.
                let tls = match bench_client_workload(workload) {
                    Some(true) => pki.as_ref(),
                    _ => None,
                };
                let target = start_target(name, backend_port, args.workers, tls);
                let m = measure(&target, workload, args.seconds, pki.as_ref());
                drop(target);
                eprintln!(
                    "round {round} {workload:16} {name:8} {:>10.0} msg/s  p50 {:>6} µs  p99 {:>6} µs  CPU {:>6} µs/msg  RSS/conn {:>7} B  errors {}",
                    m.throughput,
                    m.p50,
                    m.p99,
                    m.cpu_s_per_million.map_or("-".into(), |c| format!("{c:.2}")),
                    m.rss_per_connection.map_or("-".into(), |r| format!("{r:.0}")),
                    m.errors
                );
                if let Some(suite) = &m.tls_suite {
                    eprintln!(
                        "round {round} {workload:16} {name:8} {}",
                        target_note(suite)
                    );
                }
                results[w][t].push(m);
            }
        }
    }
    let table = render(&args, &results);
    println!("{table}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &table).expect("write markdown");
    }
    drop(backend);
    drop(pki);
}

fn target_note(suite: &str) -> String {
    format!("TLS: {suite}")
}

/// What a workload's table is about, under its heading.
fn workload_note(workload: &str, results: &[Vec<Measure>]) -> String {
    let suites: Vec<&str> = results
        .iter()
        .flatten()
        .filter_map(|m| m.tls_suite.as_deref())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    match bench_client_workload(workload) {
        Some(true) => format!(
            "\nClients (tether_bench::load, echo-throughput's parameters) speak TLS to tether, nginx and haproxy ({}); the proxies speak plain ws:// to ws_server; direct is plain ws:// to ws_server.\n",
            suites.join(", ")
        ),
        Some(false) => "\nThe same client as echo-tls (tether_bench::load), over plain ws://.\n".into(),
        None => String::new(),
    }
}

fn render(args: &Args, results: &[Vec<Vec<Measure>>]) -> String {
    let mut out = String::new();
    let idx = |name: &str| args.targets.iter().position(|t| t == name);
    for (w, workload) in args.workloads.iter().enumerate() {
        out.push_str(&format!(
            "\n{workload} — medians of {} runs, {} s each\n{}\n| target | messages/s | p50 µs | p99 µs | proxy CPU-s per 1M messages | proxy RSS per connection | errors |\n|---|---|---|---|---|---|---|\n",
            args.runs,
            args.seconds,
            workload_note(workload, &results[w])
        ));
        let med: Vec<Measure> = results[w]
            .iter()
            .map(|runs| Measure {
                throughput: median_f(runs.iter().map(|m| m.throughput).collect()),
                p50: median_f(runs.iter().map(|m| m.p50 as f64).collect()) as u64,
                p99: median_f(runs.iter().map(|m| m.p99 as f64).collect()) as u64,
                cpu_s_per_million: runs[0]
                    .cpu_s_per_million
                    .map(|_| median_f(runs.iter().filter_map(|m| m.cpu_s_per_million).collect())),
                rss_per_connection: runs[0]
                    .rss_per_connection
                    .map(|_| median_f(runs.iter().filter_map(|m| m.rss_per_connection).collect())),
                errors: runs.iter().map(|m| m.errors).sum(),
                tls_suite: runs[0].tls_suite.clone(),
            })
            .collect();
        for (t, name) in args.targets.iter().enumerate() {
            let m = &med[t];
            out.push_str(&format!(
                "| {} | {:.0} | {} | {} | {} | {} | {} |\n",
                name,
                m.throughput,
                m.p50,
                m.p99,
                // µs per message = CPU-seconds per million messages.
                m.cpu_s_per_million
                    .map_or("—".into(), |c| format!("{c:.2}")),
                m.rss_per_connection
                    .map_or("—".into(), |r| format!("{r:.0} B")),
                m.errors
            ));
        }
        if let Some(tt) = idx("tether") {
            let t = &med[tt];
            out.push_str("\n| ratio | throughput | p50 | p99 | CPU per message | RSS per connection |\n|---|---|---|---|---|---|\n");
            for other in ["nginx", "haproxy", "direct"] {
                let Some(o) = idx(other).map(|i| &med[i]) else {
                    continue;
                };
                let ratio = |a: f64, b: f64| {
                    if b > 0.0 {
                        format!("{:.2}", a / b)
                    } else {
                        "—".into()
                    }
                };
                let opt = |a: Option<f64>, b: Option<f64>| match (a, b) {
                    (Some(a), Some(b)) => ratio(a, b),
                    _ => "—".into(),
                };
                out.push_str(&format!(
                    "| Tether / {other} | {} | {} | {} | {} | {} |\n",
                    ratio(t.throughput, o.throughput),
                    ratio(t.p50 as f64, o.p50 as f64),
                    ratio(t.p99 as f64, o.p99 as f64),
                    opt(t.cpu_s_per_million, o.cpu_s_per_million),
                    opt(t.rss_per_connection, o.rss_per_connection),
                ));
            }
        }
    }
    out
}
