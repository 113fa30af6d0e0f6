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
//!
//! HTTP: the workload `http` is plain HTTP/1.1 requests (`GET`, kept-alive
//! connections, closed loop: `tether_bench::http_load`). `direct` is the
//! plain HTTP server `http_server` (it answers 200 with the request's
//! body), nginx and HAProxy proxy to it (keep-alive to the upstream);
//! Tether forwards each request through the tunnel to the reference
//! runner's `echo` actor, which answers the same.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tether_bench::http_load::{run_http, HttpLoad};
use tether_bench::load::{run_echo, EchoLoad};
use tether_bench::targets::{start_http_server, start_target, start_ws_server, Target};
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
    /// (echo-throughput over TLS, bench client), `echo-plain` (the same
    /// client over ws://) or `http` (plain HTTP requests, kept alive).
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
    /// Run every workload at each of these client counts (instead of the
    /// scenario's), e.g. `--workloads active-memory --clients 100,1000,10000`;
    /// adds a table of RSS per connection by count. HAProxy runs at most
    /// what its descriptor limit allows (see `haproxy_max_clients`).
    #[arg(long, value_delimiter = ',')]
    clients: Vec<usize>,
}

/// One workload at one client count (`None`: the scenario's own).
struct Case {
    workload: String,
    clients: Option<usize>,
}

impl Case {
    fn all(args: &Args) -> Vec<Case> {
        let counts: Vec<Option<usize>> = if args.clients.is_empty() {
            vec![None]
        } else {
            args.clients.iter().copied().map(Some).collect()
        };
        let mut cases = Vec::new();
        for workload in &args.workloads {
            for &clients in &counts {
                let workload = workload.clone();
                cases.push(Case { workload, clients });
            }
        }
        cases
    }

    fn title(&self) -> String {
        match self.clients {
            Some(n) => format!("{} at {n} clients", self.workload),
            None => self.workload.clone(),
        }
    }
}

/// HAProxy is one process holding a client and an upstream descriptor
/// per connection, under the same descriptor limit as this process
/// (start.sh cannot raise it past the hard limit): half of it, less a
/// thousand for listeners and headroom, rounded down to a thousand.
/// nginx spreads its connections over its workers, Tether needs one
/// descriptor per connection: neither is capped.
fn haproxy_max_clients() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct it is given.
    let nofile = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_max.min(1 << 30) as usize
    } else {
        1024
    };
    ((nofile / 2 / 1000).saturating_sub(1) * 1000).max(100)
}

/// The client count `target` runs `case` at.
fn clients_for(case: &Case, target: &str) -> Option<usize> {
    let n = case.clients?;
    Some(if target == "haproxy" {
        n.min(haproxy_max_clients())
    } else {
        n
    })
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
    /// The clients it ran with, when not the scenario's.
    clients: Option<usize>,
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
    clients: Option<usize>,
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
        clients: clients.unwrap_or(s.clients),
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
        clients,
    }
}

/// Connections and actors of the `http` workload.
const HTTP_CLIENTS: usize = 64;
const HTTP_ACTORS: usize = 64;

/// `http`: kept-alive GETs; Tether's go to the `echo` actor through its runner.
fn measure_http(target: &Target, clients: Option<usize>, seconds: u64) -> Measure {
    let s = Scenario::load("echo-throughput").expect("shipped scenario");
    let _runners = target.runner_url.as_ref().map(|url| {
        tether_loadtest::runners::start(1, url, &s.runner_token)
            .unwrap_or_else(|e| panic!("{} http: {e}", target.name))
    });
    let load = HttpLoad {
        addr: ([127, 0, 0, 1], target.port).into(),
        path: "/actors/echo/b{i}".into(),
        actors: HTTP_ACTORS,
        clients: clients.unwrap_or(HTTP_CLIENTS),
        threads: 2,
        warmup: Duration::from_secs(2),
        duration: Duration::from_secs(seconds),
        measured: target.measured,
    };
    let r = run_http(&load).unwrap_or_else(|e| panic!("{} http: {e}", target.name));
    Measure {
        throughput: r.per_second,
        p50: r.p50_us,
        p99: r.p99_us,
        cpu_s_per_million: r.cpu_us_per_request,
        rss_per_connection: None,
        errors: r.errors,
        tls_suite: None,
        clients,
    }
}

fn measure(target: &Target, case: &Case, seconds: u64, pki: Option<&TestPki>) -> Measure {
    let (workload, clients) = (case.workload.as_str(), clients_for(case, &target.name));
    if workload == "http" {
        return measure_http(target, clients, seconds);
    }
    if bench_client_workload(workload).is_some() {
        return measure_bench_client(target, workload, clients, seconds, pki);
    }
    let mut s = Scenario::load(workload).expect("shipped scenario");
    s.clients = clients.unwrap_or(s.clients);
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
        clients,
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
    let http_backend = args
        .workloads
        .iter()
        .any(|w| w == "http")
        .then(|| start_http_server(args.workers));
    let pki = args
        .workloads
        .iter()
        .any(|w| bench_client_workload(w) == Some(true))
        .then(TestPki::generate);
    let cases = Case::all(&args);
    // results[case][target] = runs
    let mut results: Vec<Vec<Vec<Measure>>> =
        vec![vec![Vec::new(); args.targets.len()]; cases.len()];
    for round in 1..=args.runs {
        for (c, case) in cases.iter().enumerate() {
            for (t, name) in args.targets.iter().enumerate() {
                let backend = match (&http_backend, case.workload.as_str()) {
                    (Some((port, _)), "http") => *port,
                    _ => backend_port,
                };
                let m = run_once(&args, case, name, backend, pki.as_ref());
                log_run(round, case, name, &m);
                results[c][t].push(m);
            }
        }
    }
    let mut table = render(&args, &cases, &results);
    if !args.clients.is_empty() {
        table.push_str(&memory_table(&args, &cases, &results));
    }
    println!("{table}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &table).expect("write markdown");
    }
    drop(backend);
    drop(http_backend);
    drop(pki);
}

/// One run of `case` against a fresh `name` (its RSS growth is then this
/// run's connections').
fn run_once(
    args: &Args,
    case: &Case,
    name: &str,
    backend_port: u16,
    pki: Option<&TestPki>,
) -> Measure {
    let tls = match bench_client_workload(&case.workload) {
        Some(true) => pki,
        _ => None,
    };
    let target = start_target(name, backend_port, args.workers, tls);
    measure(&target, case, args.seconds, pki)
}

fn log_run(round: usize, case: &Case, name: &str, m: &Measure) {
    let title = case.title();
    let clients = m
        .clients
        .map_or(String::new(), |n| format!("  ({n} clients)"));
    eprintln!(
        "round {round} {title:16} {name:8} {:>10.0} msg/s  p50 {:>6} µs  p99 {:>6} µs  CPU {:>6} µs/msg  RSS/conn {:>7} B  errors {}{clients}",
        m.throughput,
        m.p50,
        m.p99,
        m.cpu_s_per_million.map_or("-".into(), |c| format!("{c:.2}")),
        m.rss_per_connection.map_or("-".into(), |r| format!("{r:.0}")),
        m.errors
    );
    if let Some(suite) = &m.tls_suite {
        eprintln!("round {round} {title:16} {name:8} {}", target_note(suite));
    }
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

/// Each target's median run (`clients` and TLS suite from its first run).
fn medians(per_target: &[Vec<Measure>]) -> Vec<Measure> {
    per_target
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
            clients: runs[0].clients,
        })
        .collect()
}

/// RSS per connection by client count, one row per count, one table per
/// workload: what `--clients` is for.
fn memory_table(args: &Args, cases: &[Case], results: &[Vec<Vec<Measure>>]) -> String {
    let measured: Vec<&String> = args.targets.iter().filter(|t| *t != "direct").collect();
    let mut out = String::new();
    for workload in &args.workloads {
        let names: Vec<&str> = measured.iter().map(|t| t.as_str()).collect();
        let others: Vec<&str> = names.iter().copied().filter(|t| *t != "tether").collect();
        let ratios = names.contains(&"tether");
        out.push_str(&format!(
            "\n{workload}: RSS per connection, (peak RSS - start RSS) / clients, medians of {} runs\n\n| connections | {} |",
            args.runs,
            names.join(" | ")
        ));
        for o in others.iter().filter(|_| ratios) {
            out.push_str(&format!(" Tether / {o} |"));
        }
        let columns = names.len() + if ratios { others.len() } else { 0 };
        out.push_str(&format!("\n|---|{}\n", "---|".repeat(columns)));
        for (c, case) in cases
            .iter()
            .enumerate()
            .filter(|(_, c)| c.workload == *workload)
        {
            let med = medians(&results[c]);
            let of = |name: &str| {
                let t = args.targets.iter().position(|t| t == name)?;
                Some((med[t].rss_per_connection?, med[t].clients))
            };
            out.push_str(&format!("| {} |", case.clients.unwrap_or(0)));
            for name in &names {
                out.push_str(&match of(name) {
                    Some((rss, n)) if n != case.clients => {
                        format!(" {rss:.0} B (at {}) |", n.unwrap_or(0))
                    }
                    Some((rss, _)) => format!(" {rss:.0} B |"),
                    None => " — |".into(),
                });
            }
            for o in others.iter().filter(|_| ratios) {
                out.push_str(&match (of("tether"), of(o)) {
                    (Some((t, _)), Some((r, _))) if r > 0.0 => format!(" {:.2} |", t / r),
                    _ => " — |".into(),
                });
            }
            out.push('\n');
        }
    }
    out
}

fn render(args: &Args, cases: &[Case], results: &[Vec<Vec<Measure>>]) -> String {
    let mut out = String::new();
    let idx = |name: &str| args.targets.iter().position(|t| t == name);
    for (c, case) in cases.iter().enumerate() {
        out.push_str(&format!(
            "\n{} — medians of {} runs, {} s each\n{}\n| target | messages/s | p50 µs | p99 µs | proxy CPU-s per 1M messages | proxy RSS per connection | errors |\n|---|---|---|---|---|---|---|\n",
            case.title(),
            args.runs,
            args.seconds,
            workload_note(&case.workload, &results[c])
        ));
        let med = medians(&results[c]);
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
