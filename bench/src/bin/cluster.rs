//! Three Tether nodes sharing one actor directory on etcd (issue 16), on
//! loopback: etcd and three release `tether` binaries (`[cluster]` configs,
//! `--lease-ttl`, 2 workers each) as child processes, one reference-runner
//! process per node (this binary re-executed, as `migrate` does; the three
//! share one state directory). Each run starts a fresh cluster and
//! measures, in this order:
//!
//! 1. **hop**: echo round trips (closed loop, `--clients` clients ×
//!    `--messages` small text messages) to echo actors owned by node 1,
//!    each client alternating between its socket on node 1 (direct) and
//!    its socket on node 0 (forwarded 0→1 over the node tunnel): p50/p99
//!    of each, and forwarded/direct.
//! 2. **steady**: the same sockets for `--steady-seconds` of traffic: etcd
//!    requests per second (all nodes, by kind: only keep-alives expected,
//!    4 per lease TTL per node) and directory requests per message (0).
//! 3. **directory**: `--keys` new echo actors, each first reached on a
//!    random node: (claim + release + range + put, summed over nodes) per
//!    actor started.
//! 4. **kill**: `--kill-actors` echo actors owned by node 2, one client of
//!    each on node 0 and one on node 1, closed loop with numbered messages;
//!    node 2's gateway and runner are SIGKILLed; per client the longest gap
//!    between two replies (p50/max), the time until every client had a
//!    reply to a message sent after the kill, and lost / duplicated /
//!    reordered replies (must be 0).
//! 5. with `--partition` (root and iproute2's `ip`): as 4, with the three
//!    nodes (gateway and runner) in network namespaces on a bridge (etcd on
//!    the bridge address), the owner cut off by taking its root-side veth
//!    down instead of killed. Namespaces, bridge and processes are removed
//!    on every exit path (drop, panic, SIGINT/SIGTERM).
//!
//! Figures are medians over `--runs`. Needs `etcd` on PATH and the release
//! `tether` binary next to this one:
//!
//!     cargo build --release -p tether -p tether-bench
//!     cargo run --release -p tether-bench --bin cluster -- --runs 3 [--partition]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use tether_bench::netns::{self, Lab};
use tether_bench::{client_frame_op, ws_connect};
use tether_loadtest::runners;

#[global_allocator]
static GLOBAL: tether_bench::CountingMimalloc = tether_bench::CountingMimalloc;

const ADMIN_TOKEN: &str = "bench-admin-token-0000000000001";
const RUNNER_TOKEN: &str = "bench-runner-token-000000000001";
const CLUSTER_TOKEN: &str = "bench-cluster-token-00000000001";
/// Ports of a node inside a namespace (each has its own addresses).
const NS_CLIENT_PORT: u16 = 7000;
const NS_ADMIN_PORT: u16 = 7001;
const NS_RUNNER_PORT: u16 = 7100;
const TEXT: u8 = 0x1;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The nodes' `[cluster] lease_ttl`.
    #[arg(long, default_value = "2s")]
    lease_ttl: String,
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Hop: clients (one echo actor each, owned by node 1).
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Hop: messages per client, each way (direct and forwarded).
    #[arg(long, default_value_t = 200)]
    messages: usize,
    /// Steady state: seconds of traffic over which etcd requests are counted.
    #[arg(long, default_value_t = 10)]
    steady_seconds: u64,
    /// Directory: new actors started, each on a random node.
    #[arg(long, default_value_t = 500)]
    keys: usize,
    /// Kill / partition: actors owned by the victim (two clients each).
    #[arg(long, default_value_t = 50)]
    kill_actors: usize,
    /// Also run the partition scenario (root and `ip` needed).
    #[arg(long)]
    partition: bool,
}

fn main() {
    runners::run_if_asked();
    let args = Args::parse();
    let command = format!(
        "cargo run --release -p tether-bench --bin cluster -- {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    install_cleanup_on_signal();
    let tether = sibling("tether");
    let partition_ok = args.partition && partition_available();
    let ttl = parse_duration(&args.lease_ttl);
    let mut runs = Vec::new();
    for run in 1..=args.runs {
        let r = run_once(&args, &tether, run, partition_ok);
        print_run(run, &r);
        runs.push(r);
    }
    print_summary(&args, &command, &runs, ttl, partition_ok);
}

// ---------------------------------------------------------------------------
// Child processes, killed on drop and on SIGINT/SIGTERM.

static CHILD_PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

struct Proc {
    child: Option<Child>,
    pid: u32,
}

impl Proc {
    fn spawn(mut cmd: Command, what: &str) -> Proc {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        Proc::adopt(child)
    }

    fn adopt(child: Child) -> Proc {
        let pid = child.id();
        CHILD_PIDS.lock().unwrap().push(pid);
        Proc {
            child: Some(child),
            pid,
        }
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    /// SIGKILL and reap.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            CHILD_PIDS.lock().unwrap().retain(|&p| p != self.pid);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// SIGINT / SIGTERM / SIGHUP: kill the children, remove this process's
/// namespaces and bridge, exit 130. (Signals are blocked in every thread
/// and taken by one that waits for them; children inherit the mask, and
/// are only ever SIGKILLed.)
fn install_cleanup_on_signal() {
    let signals = tether::server::signals::block_termination_signals().expect("signal mask");
    std::thread::spawn(move || {
        let sig = signals.wait();
        eprintln!("signal {sig}: killing the children, removing namespaces");
        for pid in CHILD_PIDS.lock().unwrap().iter() {
            // SAFETY: kill(2) on a child of ours.
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
        netns::remove_own();
        std::process::exit(130);
    });
}

/// A timestamped progress line on stderr.
fn progress(what: &str) {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let t = START.get_or_init(Instant::now).elapsed();
    eprintln!("[{:6.1} s] {what}", t.as_secs_f64());
}

fn sibling(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let path = exe.with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build --release -p tether -p tether-bench)",
        path.display()
    );
    path
}

fn partition_available() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("partition: SKIPPED (network namespaces need root)");
        return false;
    }
    if let Err(e) = netns::run_ip(&["-V"]) {
        println!("partition: SKIPPED (no usable `ip`: {e})");
        return false;
    }
    let probe = format!("tether-netns-{}-probe", std::process::id());
    if let Err(e) = netns::run_ip(&["netns", "add", &probe]) {
        println!("partition: SKIPPED (cannot create a network namespace: {e})");
        return false;
    }
    let _ = netns::run_ip(&["netns", "del", &probe]);
    true
}

fn parse_duration(s: &str) -> Duration {
    let s = s.trim();
    if let Some(ms) = s.strip_suffix("ms") {
        return Duration::from_millis(ms.parse().expect("lease_ttl in ms"));
    }
    let secs = s.strip_suffix('s').unwrap_or(s);
    Duration::from_secs_f64(secs.parse().expect("lease_ttl like 2s or 500ms"))
}

fn free_port(ip: Ipv4Addr) -> SocketAddr {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap()
}

fn temp_dir(what: &str) -> PathBuf {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "tether-bench-cluster-{what}-{}-{n}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---------------------------------------------------------------------------
// etcd, nodes, the cluster.

fn start_etcd(ip: Ipv4Addr, dir: &Path) -> (Proc, String) {
    for attempt in 0..3 {
        let client = free_port(ip);
        let peer = free_port(ip);
        let log = std::fs::File::create(dir.join(format!("etcd-{attempt}.log"))).unwrap();
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", "bench", "--data-dir"])
            .arg(dir.join(format!("etcd-data-{attempt}")))
            .arg("--listen-client-urls")
            .arg(format!("http://{client}"))
            .arg("--advertise-client-urls")
            .arg(format!("http://{client}"))
            .arg("--listen-peer-urls")
            .arg(format!("http://{peer}"))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://{peer}"))
            .arg("--initial-cluster")
            .arg(format!("bench=http://{peer}"))
            .args(["--initial-cluster-state", "new"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let mut etcd = Proc::spawn(cmd, "etcd (is it on PATH?)");
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until && !etcd.exited() {
            if etcd_healthy(client) {
                return (etcd, format!("http://{client}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("etcd did not become healthy (logs in {})", dir.display());
}

fn etcd_healthy(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: etcd\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

struct NodeAddrs {
    client: SocketAddr,
    admin: SocketAddr,
    runner_listen: SocketAddr,
    advertise: SocketAddr,
    /// Where the node's runner dials (from its own namespace).
    runner_url: String,
}

fn node_config(id: &str, a: &NodeAddrs, etcd: &str, ttl: &str, workers: usize) -> String {
    format!(
        r#"
[server]
workers = {workers}
log_level = "info"
shutdown_drain = "200ms"
[client]
listen = "{client}"
max_connections_per_address = 1000000
new_per_second_per_address = 1000000
new_burst_per_address = 1000000
[admin]
listen = "{admin}"
token = "{ADMIN_TOKEN}"
[runners]
listen = "{runner}"
token = "{RUNNER_TOKEN}"
[actors]
start_timeout = "20s"
new_per_second_per_address = 1000000
new_burst_per_address = 1000000
[[namespaces]]
name = "default"
open = true
[cluster]
node_id = "{id}"
advertise = "{advertise}"
etcd_endpoints = ["{etcd}"]
lease_ttl = "{ttl}"
token = "{CLUSTER_TOKEN}"
"#,
        client = a.client,
        admin = a.admin,
        runner = a.runner_listen,
        advertise = a.advertise,
    )
}

struct Cluster {
    gateways: Vec<Proc>,
    runners: Vec<Proc>,
    client: Vec<SocketAddr>,
    admin: Vec<SocketAddr>,
    etcd: Proc,
    dir: PathBuf,
    /// Dropped last: kills whatever still runs in its namespaces.
    lab: Option<Lab>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.gateways.clear();
        self.runners.clear();
        self.etcd.kill();
        drop(self.lab.take());
        if std::env::var_os("TETHER_BENCH_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Cluster {
    /// Three nodes on loopback, or with `lab` in its namespaces.
    fn start(tether: &Path, args: &Args, lab: Option<Lab>) -> Cluster {
        let dir = temp_dir("run");
        let etcd_ip = lab
            .as_ref()
            .map_or(Ipv4Addr::LOCALHOST, |l| l.bridge_addr());
        let (etcd, endpoint) = start_etcd(etcd_ip, &dir);
        let state = dir.join("state");
        let mut c = Cluster {
            gateways: Vec::new(),
            runners: Vec::new(),
            client: Vec::new(),
            admin: Vec::new(),
            etcd,
            dir: dir.clone(),
            lab,
        };
        let exe = std::env::current_exe().expect("own path");
        for i in 0..3 {
            let id = format!("node-{i}");
            let addrs = match &c.lab {
                None => {
                    let runner = free_port(Ipv4Addr::LOCALHOST);
                    NodeAddrs {
                        client: free_port(Ipv4Addr::LOCALHOST),
                        admin: free_port(Ipv4Addr::LOCALHOST),
                        runner_listen: runner,
                        advertise: runner,
                        runner_url: format!("ws://{runner}"),
                    }
                }
                Some(lab) => {
                    let ip = lab.node_addr(i);
                    NodeAddrs {
                        client: SocketAddr::from((ip, NS_CLIENT_PORT)),
                        admin: SocketAddr::from((ip, NS_ADMIN_PORT)),
                        runner_listen: SocketAddr::from(([0, 0, 0, 0], NS_RUNNER_PORT)),
                        advertise: SocketAddr::from((ip, NS_RUNNER_PORT)),
                        runner_url: format!("ws://127.0.0.1:{NS_RUNNER_PORT}"),
                    }
                }
            };
            let file = dir.join(format!("{id}.toml"));
            std::fs::write(
                &file,
                node_config(&id, &addrs, &endpoint, &args.lease_ttl, args.workers),
            )
            .unwrap();
            let log = std::fs::File::create(dir.join(format!("{id}.log"))).unwrap();
            let mut cmd = match &c.lab {
                None => Command::new(tether),
                Some(lab) => lab.command(i, tether),
            };
            cmd.arg("--config")
                .arg(&file)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            c.gateways.push(Proc::spawn(cmd, "tether"));
            wait_serving(addrs.admin, &dir.join(format!("{id}.log")));
            // The node's runner: this binary as a `__runner` child (see
            // tether_loadtest::runners), in the node's namespace if any.
            let mut cmd = match &c.lab {
                None => Command::new(&exe),
                Some(lab) => lab.command(i, &exe),
            };
            cmd.args(["__runner", &addrs.runner_url, RUNNER_TOKEN])
                .arg(format!("runner-of-{id}"))
                .arg(&state)
                .stdin(Stdio::null())
                .stdout(Stdio::piped());
            let mut runner = Proc::spawn(cmd, "a runner");
            let stdout = runner.child.as_mut().unwrap().stdout.take().unwrap();
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            assert_eq!(line.trim(), "ready", "{id}'s runner connects");
            c.runners.push(runner);
            c.client.push(addrs.client);
            c.admin.push(addrs.admin);
        }
        for i in 0..3 {
            wait_until(
                Duration::from_secs(20),
                "every node's lease confirmed",
                || lease_confirmed(c.admin[i]),
            );
        }
        c
    }

    fn etcd_requests(&self, nodes: &[usize]) -> BTreeMap<String, u64> {
        let mut sum = BTreeMap::new();
        for &i in nodes {
            for (k, v) in etcd_requests(self.admin[i]) {
                *sum.entry(k).or_insert(0) += v;
            }
        }
        sum
    }

    fn log_tail(&self, i: usize, lines: usize) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("node-{i}.log"))).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

fn wait_serving(admin: SocketAddr, log: &Path) {
    let until = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&admin, Duration::from_millis(200)).is_err() {
        if Instant::now() > until {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            panic!("a node never served on {admin}; its log:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[track_caller]
fn wait_until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < until, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// The admin API.

fn admin_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_owned()))
}

/// `runner` of the actor's admin status on the node at `admin`.
fn runner_of(admin: SocketAddr, path: &str) -> Option<String> {
    let (status, body) = admin_get(admin, path)?;
    let json: serde_json::Value = serde_json::from_str(&body).ok()?;
    (status == 200)
        .then(|| json["runner"].as_str().map(str::to_owned))
        .flatten()
}

/// Whether the node at `admin` runs the actor on a runner of its own.
fn runs_here(admin: SocketAddr, path: &str) -> bool {
    let Some((200, body)) = admin_get(admin, path) else {
        return false;
    };
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    json["state"] == "running"
        && json["runner"]
            .as_str()
            .is_some_and(|r| !r.starts_with("node:"))
}

fn metrics(admin: SocketAddr) -> String {
    admin_get(admin, "/metrics").map_or(String::new(), |(_, b)| b)
}

fn lease_confirmed(admin: SocketAddr) -> bool {
    metrics(admin)
        .lines()
        .any(|l| l.starts_with("tether_cluster_lease_confirmed") && l.ends_with(" 1"))
}

/// `tether_cluster_etcd_requests_total` by kind.
fn etcd_requests(admin: SocketAddr) -> BTreeMap<String, u64> {
    metrics(admin)
        .lines()
        .filter(|l| l.starts_with("tether_cluster_etcd_requests_total{"))
        .filter_map(|l| {
            let kind = l.split("kind=\"").nth(1)?.split('"').next()?;
            let value: f64 = l.split_whitespace().last()?.parse().ok()?;
            Some((kind.to_owned(), value as u64))
        })
        .collect()
}

fn delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .collect()
}

fn sum_kinds(d: &BTreeMap<String, u64>, kinds: &[&str]) -> u64 {
    kinds.iter().map(|k| d.get(*k).copied().unwrap_or(0)).sum()
}

const DIRECTORY_KINDS: [&str; 5] = ["claim", "release", "range", "put", "placed"];

// ---------------------------------------------------------------------------
// Clients.

fn send_text(s: &mut TcpStream, text: &str) -> std::io::Result<()> {
    s.write_all(&client_frame_op(TEXT, text.as_bytes()))
}

/// The next data frame's payload (pings answered and skipped), or an I/O
/// error.
fn recv(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    loop {
        if let Some(payload) = recv_one(s)? {
            return Ok(payload);
        }
    }
}

/// One frame: `Some(payload)` for data, `None` for a ping (answered) or
/// a pong.
fn recv_one(s: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut h = [0u8; 10];
    s.read_exact(&mut h[..2])?;
    let header_len = match h[1] & 0x7F {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    s.read_exact(&mut h[2..header_len])?;
    let (b0, _, len) = tether_bench::parse_server_header(&h[..header_len]).expect("whole header");
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload)?;
    match b0 & 0x0F {
        0x9 => {
            s.write_all(&client_frame_op(0xA, &payload))?;
            Ok(None)
        }
        0xA => Ok(None),
        0x8 => Err(std::io::Error::other(format!(
            "closed by the gateway: {:?}",
            String::from_utf8_lossy(payload.get(2..).unwrap_or_default())
        ))),
        _ => Ok(Some(payload)),
    }
}

/// Why a client stopped waiting.
enum Wait {
    /// No data frame before the deadline (the gateway's pings do not
    /// count: they would keep a plain read timeout from ever firing).
    NoReply,
    Io(std::io::Error),
}

/// As `recv`, giving up at `deadline`. The socket's read timeout must be
/// short (it is the polling interval); a frame is read only once its
/// first byte is there, so a timeout never splits one.
fn recv_until(s: &mut TcpStream, deadline: Instant) -> Result<Vec<u8>, Wait> {
    loop {
        match s.peek(&mut [0u8; 1]) {
            Ok(0) => return Err(Wait::Io(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => {
                if let Some(p) = recv_one(s).map_err(Wait::Io)? {
                    return Ok(p);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if Instant::now() >= deadline {
                    return Err(Wait::NoReply);
                }
            }
            Err(e) => return Err(Wait::Io(e)),
        }
    }
}

/// Connects to `path` on `addr`, sends one message and waits for its echo
/// (the actor then runs).
fn open_echo(addr: SocketAddr, path: &str) -> TcpStream {
    let mut s = ws_connect(addr, path);
    send_text(&mut s, "hello").expect("send");
    let got = recv(&mut s).unwrap_or_else(|e| panic!("{path} on {addr}: {e}"));
    assert_eq!(got, b"hello", "{path}: the echo of hello");
    s
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap()
}

// ---------------------------------------------------------------------------
// One run.

#[derive(Default, Clone)]
struct Run {
    direct_p50: u64,
    direct_p99: u64,
    fwd_p50: u64,
    fwd_p99: u64,
    hop_errors: u64,
    not_owned_by_b: usize,
    steady_rps: f64,
    steady_keepalive_per_ttl_node: f64,
    steady_other: u64,
    steady_messages: u64,
    steady: BTreeMap<String, u64>,
    dir_per_actor: f64,
    dir: BTreeMap<String, u64>,
    dir_ms: u64,
    kill: Option<Replace>,
    partition: Option<Replace>,
}

#[derive(Default, Clone)]
struct Replace {
    gap_p50_ms: u64,
    gap_max_ms: u64,
    all_again_ms: u64,
    lost: u64,
    dup: u64,
    reordered: u64,
    disconnected: u64,
    no_reply: u64,
    messages: u64,
    clients: usize,
    not_owned: usize,
}

fn run_once(args: &Args, tether: &Path, run: usize, partition: bool) -> Run {
    let mut r = Run::default();
    {
        progress(&format!("run {run}: starting etcd and 3 nodes on loopback"));
        let mut cluster = Cluster::start(tether, args, None);
        progress("hop");
        let (sockets, hop) = measure_hop(&cluster, args, run, &mut r);
        progress("steady");
        measure_steady(&cluster, args, sockets, hop, &mut r);
        progress("directory");
        measure_directory(&cluster, args, run, &mut r);
        progress("kill");
        r.kill = Some(measure_replace(&mut cluster, args, run, 2, Event::Kill));
        progress("stopping the cluster");
    }
    if partition {
        progress(&format!(
            "run {run}: a lab of 3 namespaces, etcd on its bridge"
        ));
        let lab = Lab::new(3);
        let mut cluster = Cluster::start(tether, args, Some(lab));
        progress("partition");
        r.partition = Some(measure_replace(&mut cluster, args, run, 0, Event::Cut));
        progress("stopping the lab");
    }
    r
}

/// One client of the hop: its actor's path, its socket on node 1 (direct)
/// and on node 0 (forwarded).
struct HopClient {
    id: usize,
    direct: TcpStream,
    forwarded: TcpStream,
}

fn measure_hop(cluster: &Cluster, args: &Args, run: usize, r: &mut Run) -> (Vec<HopClient>, usize) {
    let (a, b) = (0, 1);
    let mut clients = Vec::new();
    for id in 0..args.clients {
        let path = format!("/actors/echo/hop-{run}-{id}");
        // Node 1's client first: node 1 claims the actor.
        let direct = open_echo(cluster.client[b], &path);
        let forwarded = open_echo(cluster.client[a], &path);
        clients.push(HopClient {
            id,
            direct,
            forwarded,
        });
    }
    for c in &clients {
        let path = format!("/actors/echo/hop-{run}-{}", c.id);
        let on_a = runner_of(cluster.admin[a], &path);
        let on_b = runner_of(cluster.admin[b], &path);
        let owned = on_a.as_deref() == Some("node:node-1") && runs_here(cluster.admin[b], &path);
        if !owned {
            r.not_owned_by_b += 1;
            eprintln!(
                "  hop: {path} is not owned by node-1: on node-0 {on_a:?}, on node-1 {on_b:?}"
            );
        }
    }
    let messages = args.messages;
    let handles: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || {
                let (mut direct, mut fwd, mut errors) = (hist(), hist(), 0u64);
                for m in 0..messages {
                    // Alternate which goes first.
                    for leg in [m % 2, 1 - m % 2] {
                        let s = if leg == 0 {
                            &mut c.direct
                        } else {
                            &mut c.forwarded
                        };
                        let text = format!("{}:{m}", c.id);
                        let t = Instant::now();
                        send_text(s, &text).expect("send");
                        let got = recv(s).expect("echo");
                        let us = t.elapsed().as_micros().max(1) as u64;
                        if got != text.as_bytes() {
                            errors += 1;
                        }
                        if leg == 0 { &mut direct } else { &mut fwd }
                            .record(us)
                            .unwrap();
                    }
                }
                (c, direct, fwd, errors)
            })
        })
        .collect();
    let (mut direct, mut fwd) = (hist(), hist());
    let mut back = Vec::new();
    for h in handles {
        let (c, d, f, e) = h.join().expect("hop client");
        direct.add(d).unwrap();
        fwd.add(f).unwrap();
        r.hop_errors += e;
        back.push(c);
    }
    r.direct_p50 = direct.value_at_quantile(0.5);
    r.direct_p99 = direct.value_at_quantile(0.99);
    r.fwd_p50 = fwd.value_at_quantile(0.5);
    r.fwd_p99 = fwd.value_at_quantile(0.99);
    (back, messages)
}

fn measure_steady(
    cluster: &Cluster,
    args: &Args,
    clients: Vec<HopClient>,
    start_seq: usize,
    r: &mut Run,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let (stop, count) = (stop.clone(), count.clone());
            std::thread::spawn(move || {
                let mut errors = 0u64;
                let mut m = start_seq;
                while !stop.load(Ordering::Relaxed) {
                    for s in [&mut c.direct, &mut c.forwarded] {
                        let text = format!("{}:{m}", c.id);
                        send_text(s, &text).expect("send");
                        if recv(s).expect("echo") != text.as_bytes() {
                            errors += 1;
                        }
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    m += 1;
                }
                errors
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let all = [0, 1, 2];
    let before = cluster.etcd_requests(&all);
    let (m0, t0) = (count.load(Ordering::Relaxed), Instant::now());
    std::thread::sleep(Duration::from_secs(args.steady_seconds));
    let after = cluster.etcd_requests(&all);
    let messages = count.load(Ordering::Relaxed) - m0;
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        r.hop_errors += h.join().expect("steady client");
    }
    let d = delta(&after, &before);
    let total: u64 = d.values().sum();
    let ttl = parse_duration(&args.lease_ttl).as_secs_f64();
    r.steady_rps = total as f64 / elapsed;
    r.steady_keepalive_per_ttl_node =
        d.get("keepalive").copied().unwrap_or(0) as f64 / (elapsed / ttl) / 3.0;
    r.steady_other = total - d.get("keepalive").copied().unwrap_or(0);
    r.steady_messages = messages;
    r.steady = d;
}

fn measure_directory(cluster: &Cluster, args: &Args, run: usize, r: &mut Run) {
    let all = [0, 1, 2];
    let before = cluster.etcd_requests(&all);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ run as u64;
    let nodes: Vec<usize> = (0..args.keys)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % 3) as usize
        })
        .collect();
    let nodes = Arc::new(nodes);
    let addrs = Arc::new(cluster.client.clone());
    const THREADS: usize = 10;
    let t0 = Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (nodes, addrs) = (nodes.clone(), addrs.clone());
            std::thread::spawn(move || {
                for k in (t..nodes.len()).step_by(THREADS) {
                    let path = format!("/actors/echo/dir-{run}-{k}");
                    drop(open_echo(addrs[nodes[k]], &path));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("directory client");
    }
    r.dir_ms = t0.elapsed().as_millis() as u64;
    std::thread::sleep(Duration::from_millis(300));
    let after = cluster.etcd_requests(&all);
    let d = delta(&after, &before);
    r.dir_per_actor = sum_kinds(&d, &DIRECTORY_KINDS) as f64 / args.keys as f64;
    r.dir = d;
}

#[derive(Clone, Copy, PartialEq)]
enum Event {
    Kill,
    Cut,
}

/// One re-place client's record.
#[derive(Default)]
struct ReplaceClient {
    id: usize,
    /// (sent, received) per reply in order.
    replies: Vec<(Instant, Instant)>,
    lost: u64,
    dup: u64,
    reordered: u64,
    disconnected: Option<String>,
    /// The number it sent and never had a reply to within `NO_REPLY`.
    no_reply: Option<u64>,
}

/// How long a re-place client waits for one reply before it gives up.
const NO_REPLY: Duration = Duration::from_secs(15);

fn measure_replace(
    cluster: &mut Cluster,
    args: &Args,
    run: usize,
    owner: usize,
    event: Event,
) -> Replace {
    let others: Vec<usize> = (0..3).filter(|&i| i != owner).collect();
    let prefix = if event == Event::Kill { "kill" } else { "cut" };
    let paths: Vec<String> = (0..args.kill_actors)
        .map(|k| format!("/actors/echo/{prefix}-{run}-{k}"))
        .collect();
    // The owner's clients first: the owner claims every actor.
    let owners_clients: Vec<TcpStream> = paths
        .iter()
        .map(|p| open_echo(cluster.client[owner], p))
        .collect();
    let mut rep = Replace::default();
    let owner_id = format!("node:node-{owner}");
    let mut sockets = Vec::new();
    for p in &paths {
        for &o in &others {
            sockets.push(open_echo(cluster.client[o], p));
        }
    }
    for p in &paths {
        for &o in &others {
            if runner_of(cluster.admin[o], p).as_deref() != Some(owner_id.as_str()) {
                rep.not_owned += 1;
                eprintln!(
                    "  {prefix}: {p} on node-{o}: runner {:?}, not {owner_id}",
                    runner_of(cluster.admin[o], p)
                );
            }
        }
    }
    rep.clients = sockets.len();
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(id, mut s)| {
            let stop = stop.clone();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            std::thread::spawn(move || {
                let mut c = ReplaceClient {
                    id,
                    ..Default::default()
                };
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let text = format!("{id}:{seq}");
                    let sent = Instant::now();
                    if let Err(e) = send_text(&mut s, &text) {
                        c.disconnected = Some(format!("send {seq}: {e}"));
                        break;
                    }
                    // Read until this number's echo comes back (earlier
                    // numbers are duplicates; later ones mean a loss).
                    loop {
                        let got = match recv_until(&mut s, sent + NO_REPLY) {
                            Ok(g) => g,
                            Err(Wait::NoReply) => {
                                c.no_reply = Some(seq);
                                return c;
                            }
                            Err(Wait::Io(e)) => {
                                c.disconnected = Some(format!("waiting for {seq}: {e}"));
                                return c;
                            }
                        };
                        let n: Option<u64> = std::str::from_utf8(&got)
                            .ok()
                            .and_then(|t| t.strip_prefix(&format!("{id}:")))
                            .and_then(|n| n.parse().ok());
                        match n {
                            Some(n) if n == seq => {
                                c.replies.push((sent, Instant::now()));
                                break;
                            }
                            Some(n) if n < seq => c.dup += 1,
                            Some(_) => {
                                c.lost += 1;
                                c.reordered += 1;
                            }
                            None => c.reordered += 1,
                        }
                    }
                    seq += 1;
                }
                c
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    drop(owners_clients);
    // The event's time: before a kill (SIGKILL takes effect at once), after
    // a cut (the link is down once `ip link set … down` has returned; a
    // message sent while it ran may still have made it through).
    let at = match event {
        Event::Kill => {
            let at = Instant::now();
            cluster.gateways[owner].kill();
            cluster.runners[owner].kill();
            at
        }
        Event::Cut => {
            let lab = cluster.lab.as_ref().expect("a lab");
            lab.cut(owner);
            Instant::now()
        }
    };
    // Until every client had a reply to a message sent after the event
    // (reading the clients' progress would need sharing: poll the actors'
    // status on the survivors instead, then give the clients time).
    let until = at + Duration::from_secs(20);
    let placed = |c: &Cluster| {
        paths
            .iter()
            .all(|p| others.iter().any(|&o| runs_here(c.admin[o], p)))
    };
    while Instant::now() < until && !placed(cluster) {
        std::thread::sleep(Duration::from_millis(50));
    }
    progress(&format!(
        "{prefix}: every actor running on a survivor (by admin status) after {:?}",
        at.elapsed()
    ));
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    progress(&format!("{prefix}: stopping the clients"));
    let clients: Vec<ReplaceClient> = handles
        .into_iter()
        .map(|h| h.join().expect("re-place client"))
        .collect();
    let mut gaps = hist();
    let mut all_again = Duration::ZERO;
    for c in &clients {
        rep.lost += c.lost;
        rep.dup += c.dup;
        rep.reordered += c.reordered;
        rep.messages += c.replies.len() as u64;
        let trouble = match (&c.disconnected, c.no_reply) {
            (Some(e), _) => {
                rep.disconnected += 1;
                Some(e.clone())
            }
            (None, Some(seq)) => {
                rep.no_reply += 1;
                Some(format!("no reply to {seq} within {NO_REPLY:?}"))
            }
            (None, None) => None,
        };
        if let Some(e) = trouble {
            let (path, node) = (&paths[c.id / others.len()], others[c.id % others.len()]);
            let status: Vec<String> = others
                .iter()
                .map(|&o| {
                    format!(
                        "node-{o}: {:?}",
                        admin_get(cluster.admin[o], path).map(|(_, b)| b)
                    )
                })
                .collect();
            eprintln!(
                "  {prefix}: client {} of {path} on node-{node}: {e}; {} replies, the last {:?} after the event; status now: {}",
                c.id,
                c.replies.len(),
                c.replies.last().map(|r| r.1.saturating_duration_since(at)),
                status.join("; ")
            );
        }
        // The longest wait between two replies, from the last reply before
        // the event on.
        let mut gap = Duration::ZERO;
        for w in c.replies.windows(2) {
            if w[1].1 >= at {
                gap = gap.max(w[1].1 - w[0].1);
            }
        }
        // A client never replied to again has no gap to measure: it is
        // counted in `no_reply` instead.
        if c.replies.last().is_some_and(|r| r.1 >= at) {
            gaps.record(gap.as_millis().max(1) as u64).unwrap();
        }
        match c.replies.iter().find(|(sent, _)| *sent >= at) {
            Some((_, got)) => all_again = all_again.max(*got - at),
            None => all_again = Duration::from_secs(999),
        }
    }
    // (0 when no client was replied to again.)
    rep.gap_p50_ms = gaps.value_at_quantile(0.5);
    rep.gap_max_ms = gaps.max();
    rep.all_again_ms = all_again.as_millis() as u64;
    if rep.lost + rep.dup + rep.reordered + rep.disconnected + rep.no_reply > 0 {
        for &o in &others {
            eprintln!(
                "  {prefix}: node-{o}'s last log lines:\n{}",
                cluster.log_tail(o, 20)
            );
        }
    }
    rep
}

// ---------------------------------------------------------------------------
// Reporting.

fn print_run(run: usize, r: &Run) {
    println!(
        "run {run}: hop direct p50 {} µs p99 {} µs, forwarded p50 {} µs p99 {} µs (errors {}, not owned by node-1 {}) | steady {:.2} etcd req/s, {:.2} keep-alives per TTL per node, {} other requests over {} messages {:?} | directory {:.2} req/actor ({} ms) {:?}",
        r.direct_p50,
        r.direct_p99,
        r.fwd_p50,
        r.fwd_p99,
        r.hop_errors,
        r.not_owned_by_b,
        r.steady_rps,
        r.steady_keepalive_per_ttl_node,
        r.steady_other,
        r.steady_messages,
        r.steady,
        r.dir_per_actor,
        r.dir_ms,
        r.dir,
    );
    for (what, rep) in [("kill", &r.kill), ("partition", &r.partition)] {
        if let Some(p) = rep {
            println!(
                "run {run}: {what}: gap p50 {} ms max {} ms, all replying again {} ms after, lost {} dup {} reordered {} disconnected {} never replied to again {} (clients {}, replies {}, not owned {})",
                p.gap_p50_ms, p.gap_max_ms, p.all_again_ms, p.lost, p.dup, p.reordered, p.disconnected, p.no_reply, p.clients, p.messages, p.not_owned
            );
        }
    }
}

fn median_u(v: impl Iterator<Item = u64>) -> u64 {
    let mut v: Vec<u64> = v.collect();
    v.sort_unstable();
    v[v.len() / 2]
}

fn median_f(v: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = v.collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn print_summary(args: &Args, command: &str, runs: &[Run], ttl: Duration, partition: bool) {
    let n = runs.len();
    println!();
    println!("{command}");
    println!(
        "3 nodes on one machine, etcd {}, lease_ttl {}, {} workers each, one runner process per node (shared state dir); medians of {n} runs",
        etcd_version(),
        args.lease_ttl,
        args.workers
    );
    println!();
    println!("| measure | median | runs |");
    println!("|---|---|---|");
    let row = |name: &str, f: &dyn Fn(&Run) -> u64, unit: &str| {
        let all: Vec<String> = runs.iter().map(|r| f(r).to_string()).collect();
        println!(
            "| {name} | {} {unit} | {} |",
            median_u(runs.iter().map(f)),
            all.join(", ")
        );
    };
    let rowf = |name: &str, f: &dyn Fn(&Run) -> f64, unit: &str| {
        let all: Vec<String> = runs.iter().map(|r| format!("{:.2}", f(r))).collect();
        println!(
            "| {name} | {:.2} {unit} | {} |",
            median_f(runs.iter().map(f)),
            all.join(", ")
        );
    };
    let hop = format!("{} clients × {} messages", args.clients, args.messages);
    row(
        &format!("hop: direct (node 1) p50, {hop}"),
        &|r| r.direct_p50,
        "µs",
    );
    row("hop: direct (node 1) p99", &|r| r.direct_p99, "µs");
    row("hop: forwarded (node 0 → 1) p50", &|r| r.fwd_p50, "µs");
    row("hop: forwarded (node 0 → 1) p99", &|r| r.fwd_p99, "µs");
    rowf(
        "hop: forwarded / direct, p50",
        &|r| r.fwd_p50 as f64 / r.direct_p50 as f64,
        "×",
    );
    rowf(
        "hop: forwarded / direct, p99",
        &|r| r.fwd_p99 as f64 / r.direct_p99 as f64,
        "×",
    );
    row(
        "hop: wrong echoes / actors not owned by node 1",
        &|r| r.hop_errors + r.not_owned_by_b as u64,
        "",
    );
    rowf(
        &format!(
            "steady: etcd requests/s, all 3 nodes ({} s of traffic)",
            args.steady_seconds
        ),
        &|r| r.steady_rps,
        "/s",
    );
    rowf(
        &format!("steady: keep-alives per lease TTL ({ttl:?}) per node"),
        &|r| r.steady_keepalive_per_ttl_node,
        "",
    );
    row(
        "steady: other etcd requests (not keep-alive)",
        &|r| r.steady_other,
        "",
    );
    rowf(
        "steady: etcd requests per message (non-keep-alive / messages)",
        &|r| r.steady_other as f64 / r.steady_messages.max(1) as f64,
        "",
    );
    row(
        "steady: messages in the window (both legs)",
        &|r| r.steady_messages,
        "",
    );
    rowf(
        &format!(
            "directory: claim+release+range+put+placed per actor start ({} keys)",
            args.keys
        ),
        &|r| r.dir_per_actor,
        "",
    );
    for kind in DIRECTORY_KINDS {
        rowf(
            &format!("directory: {kind} per actor start"),
            &|r| r.dir.get(kind).copied().unwrap_or(0) as f64 / args.keys as f64,
            "",
        );
    }
    row(
        &format!("directory: time to start {} actors (10 threads)", args.keys),
        &|r| r.dir_ms,
        "ms",
    );
    let replace_rows = |what: &str, get: &dyn Fn(&Run) -> &Replace| {
        let k = format!(
            "{what} ({} actors, {} clients)",
            args.kill_actors,
            args.kill_actors * 2
        );
        row(&format!("{k}: gap p50"), &|r| get(r).gap_p50_ms, "ms");
        row(&format!("{what}: gap max"), &|r| get(r).gap_max_ms, "ms");
        row(
            &format!("{what}: every client replied to again after (999000 = some never)"),
            &|r| get(r).all_again_ms,
            "ms",
        );
        row(
            &format!("{what}: lost + dup + reordered + disconnected"),
            &|r| {
                let p = get(r);
                p.lost + p.dup + p.reordered + p.disconnected
            },
            "",
        );
        row(
            &format!("{what}: clients never replied to again (none within 15 s)"),
            &|r| get(r).no_reply,
            "",
        );
        row(
            &format!("{what}: actors not owned by the victim before"),
            &|r| get(r).not_owned as u64,
            "",
        );
    };
    replace_rows("kill (SIGKILL the owner)", &|r| r.kill.as_ref().unwrap());
    if partition {
        replace_rows("partition (owner's link down)", &|r| {
            r.partition.as_ref().unwrap()
        });
    } else if args.partition {
        println!("| partition | skipped (see above) | |");
    }
}

fn etcd_version() -> String {
    Command::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim_start_matches("etcd Version: ").to_owned())
        })
        .unwrap_or_else(|| "?".into())
}
