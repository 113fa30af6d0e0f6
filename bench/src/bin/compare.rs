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

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
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
    /// Workloads to run (shipped loadtest scenarios).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "echo-throughput,chat-fanout"
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

/// A server process this benchmark started; killed when dropped.
struct Server {
    child: Child,
    _dir: Option<TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first so nginx's master takes its workers along.
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Target {
    name: String,
    url: String,
    /// Tether: where the load test's reference runner connects.
    runner_url: Option<String>,
    /// The process whose CPU and RSS count (none for direct).
    measured: Option<u32>,
    _servers: Vec<Server>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_listening(port: u16, what: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sibling(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let path = exe.with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (bench/compare.sh does: cargo build --release -p tether -p tether-bench)",
        path.display()
    );
    path
}

fn start_ws_server(workers: usize) -> (u16, Server) {
    let port = free_port();
    let child = Command::new(sibling("ws_server"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--threads", &workers.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .expect("start ws_server");
    wait_listening(port, "ws_server");
    (port, Server { child, _dir: None })
}

fn start_tether(workers: usize) -> Target {
    let (port, runner_port, admin_port) = (free_port(), free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("tether-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("tether.toml");
    std::fs::write(
        &config,
        format!(
            // Every load-test client comes from 127.0.0.1: no per-address limits.
            "[server]\nworkers = {workers}\nlog_level = \"warn\"\n[client]\nlisten = \"127.0.0.1:{port}\"\nmax_connections_per_address = 1000000\nnew_per_second_per_address = 1000000\nnew_burst_per_address = 1000000\n[runners]\nlisten = \"127.0.0.1:{runner_port}\"\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n[actors]\nnew_per_second_per_address = 1000000\nnew_burst_per_address = 1000000\n"
        ),
    )
    .expect("write config");
    let child = Command::new(sibling("tether"))
        .arg("--config")
        .arg(&config)
        .spawn()
        .expect("start tether");
    wait_listening(port, "tether");
    let pid = child.id();
    Target {
        name: "tether".into(),
        url: format!("ws://127.0.0.1:{port}"),
        runner_url: Some(format!("ws://127.0.0.1:{runner_port}")),
        measured: Some(pid),
        _servers: vec![Server {
            child,
            _dir: Some(TempDir(dir)),
        }],
    }
}

fn proxy_target(name: &str, backend: u16, workers: usize) -> Target {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("tether-compare-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("proxies/start.sh");
    // start.sh execs the proxy: this child is nginx's master / HAProxy itself.
    let child = Command::new("sh")
        .arg(script)
        .args([
            name,
            &port.to_string(),
            &backend.to_string(),
            &workers.to_string(),
        ])
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    wait_listening(port, name);
    Target {
        name: name.into(),
        url: format!("ws://127.0.0.1:{port}"),
        runner_url: None,
        measured: Some(child.id()),
        _servers: vec![Server {
            child,
            _dir: Some(TempDir(dir)),
        }],
    }
}

#[derive(Clone)]
struct Measure {
    throughput: f64,
    p50: u64,
    p99: u64,
    cpu_s_per_million: Option<f64>,
    rss_per_connection: Option<f64>,
    errors: u64,
}

fn measure(target: &Target, workload: &str, seconds: u64) -> Measure {
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
    }
}

fn median_f(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn start_target(name: &str, backend_port: u16, workers: usize) -> Target {
    match name {
        "direct" => Target {
            name: "direct".into(),
            url: format!("ws://127.0.0.1:{backend_port}"),
            runner_url: None,
            measured: None,
            _servers: Vec::new(),
        },
        "tether" => start_tether(workers),
        "nginx" | "haproxy" => proxy_target(name, backend_port, workers),
        other => panic!("unknown target {other} (direct, tether, nginx, haproxy)"),
    }
}

fn main() {
    tether_loadtest::runners::run_if_asked();
    let args = Args::parse();
    let (backend_port, backend) = start_ws_server(args.workers);
    // results[workload][target] = runs
    let mut results: Vec<Vec<Vec<Measure>>> =
        vec![vec![Vec::new(); args.targets.len()]; args.workloads.len()];
    for round in 1..=args.runs {
        for (w, workload) in args.workloads.iter().enumerate() {
            for (t, name) in args.targets.iter().enumerate() {
                // A fresh proxy per run: its RSS growth is this run's connections'.
                let target = start_target(name, backend_port, args.workers);
                let m = measure(&target, workload, args.seconds);
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
}

fn render(args: &Args, results: &[Vec<Vec<Measure>>]) -> String {
    let mut out = String::new();
    let idx = |name: &str| args.targets.iter().position(|t| t == name);
    for (w, workload) in args.workloads.iter().enumerate() {
        out.push_str(&format!(
            "\n{workload} — medians of {} runs, {} s each\n\n| target | messages/s | p50 µs | p99 µs | proxy CPU-s per 1M messages | proxy RSS per connection | errors |\n|---|---|---|---|---|---|---|\n",
            args.runs, args.seconds
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
