//! Serverless pools (issue 15): what the gateway adds to a cold start, and
//! the pause clients see when a runner's lifespan hands its actors over.
//!
//! The gateway runs in this process (2 workers) with a serverless pool
//! whose function host is local (the runner library's handler on a
//! loopback port, runners as threads of this process), so the figures are
//! Tether's own overhead, not a platform's.
//!
//! - cold start: with the pool at zero runners, a client opens a WebSocket
//!   to a new `echo` actor and sends one message. Measured from the
//!   connect to the echo, split into: until the started runner's first
//!   tunnel is up (`GET /start`, the runner's dial-back and hello), until
//!   the 101 (the actor's start and the connection's open), until the echo.
//! - hand-over: the host kills each runner 4 s after its start; the
//!   gateway drains it 1.5 s before and starts its replacement ahead.
//!   Closed-loop clients send numbered messages to echo actors; each
//!   reply's gap since the previous one is recorded (p50/p99/max), and
//!   replies that are not the next number are errors (must be 0).
//!
//!     cargo run --release -p tether-bench --bin serverless -- --runs 3

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use tether::config::ServerlessPool;
use tether::runner::serverless::{http, ServerlessHandler};
use tether::runner::{ActorFactory, BuiltinActors};
use tether::{Config, Gateway};
use tether_bench::{client_frame, read_frame, upgrade_request};

#[derive(Parser)]
struct Args {
    /// Cold starts per run.
    #[arg(long, default_value_t = 10)]
    cold_starts: usize,
    /// How long the hand-over load runs, in seconds.
    #[arg(long, default_value_t = 20)]
    handover_secs: u64,
    #[arg(long, default_value_t = 50)]
    clients: usize,
    #[arg(long, default_value_t = 10)]
    actors: usize,
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

const ADMIN_TOKEN: &str = "bench-admin-token";

fn config(url: &str) -> Config {
    let mut c = Config::default();
    c.server.workers = 2;
    c.server.log_level = "error".into();
    c.client.listen = "127.0.0.1:0".parse().unwrap();
    c.runners.listen = "127.0.0.1:0".parse().unwrap();
    c.admin.listen = "127.0.0.1:0".parse().unwrap();
    c.admin.token = ADMIN_TOKEN.into();
    c.actors.idle_timeout = Duration::from_secs(1);
    c.actors.pools.insert("echo".into(), "fn".into());
    c.serverless.push(ServerlessPool {
        pool: "fn".into(),
        url: url.into(),
        max_runners: 4,
        request_lifespan: Duration::from_secs(4),
        drain_grace: Duration::from_millis(1500),
        slots_per_runner: 1000,
        start_timeout: Duration::from_secs(5),
        ..Default::default()
    });
    c
}

fn main() {
    let args = Args::parse();
    let factory: Arc<dyn ActorFactory> = Arc::new(BuiltinActors);
    let handler = ServerlessHandler::new(factory, None)
        .keepalive(Duration::from_secs(1))
        .lifespan(Duration::from_secs(4));
    let host = http::serve(TcpListener::bind("127.0.0.1:0").unwrap(), handler).unwrap();
    let url = format!("http://{}", host.addr());
    tether::logging::init("error");
    let mut colds = Vec::new();
    let mut handovers = Vec::new();
    for run in 1..=args.runs {
        let gateway = Gateway::start(config(&url)).expect("gateway starts");
        let cold = cold_starts(&gateway, &args, run);
        println!(
            "run {run} cold start: total p50 {} µs (dial-back {} µs, actor start + open {} µs, echo {} µs), max {} µs",
            cold.total, cold.dial_back, cold.ready, cold.echo, cold.max
        );
        colds.push(cold);
        let h = handover(&gateway, &args);
        println!(
            "run {run} hand-over: {} drains, gap p50 {} µs p99 {} µs max {} µs, per-client max gap p50 {} µs, {} errors, {} messages",
            h.drains, h.p50, h.p99, h.max, h.client_max_p50, h.errors, h.messages
        );
        handovers.push(h);
        gateway.shutdown();
    }
    let med = |mut v: Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    println!(
        "median of {} runs: cold start {} µs (dial-back {} µs, actor start + open {} µs, echo {} µs); hand-over gap p99 {} µs, max {} µs, per-client max p50 {} µs",
        args.runs,
        med(colds.iter().map(|c| c.total).collect()),
        med(colds.iter().map(|c| c.dial_back).collect()),
        med(colds.iter().map(|c| c.ready).collect()),
        med(colds.iter().map(|c| c.echo).collect()),
        med(handovers.iter().map(|h| h.p99).collect()),
        med(handovers.iter().map(|h| h.max).collect()),
        med(handovers.iter().map(|h| h.client_max_p50).collect()),
    );
}

/// Medians over a run's cold starts, µs.
struct Cold {
    total: u64,
    dial_back: u64,
    ready: u64,
    echo: u64,
    max: u64,
}

/// A WebSocket to `path`; panics unless upgraded. (The gateway runs in
/// this process: a blocking read here may see EINTR, which is retried.)
fn ws_connect(addr: SocketAddr, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    let _ = s.set_nodelay(true);
    s.write_all(&upgrade_request(path)).expect("request");
    let (mut head, mut b) = (Vec::new(), [0u8; 1]);
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(0) => panic!("closed during the handshake"),
            Ok(_) => head.push(b[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("handshake: {e}"),
        }
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

fn tunnels(g: &Gateway) -> u64 {
    g.worker_stats()
        .iter()
        .map(|s| s.tunnels.load(Ordering::Relaxed))
        .sum()
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn cold_starts(g: &Gateway, args: &Args, run: usize) -> Cold {
    let mut samples: Vec<[u64; 4]> = Vec::new();
    for i in 0..args.cold_starts {
        wait_until("the pool at zero runners", || tunnels(g) == 0);
        let t0 = Instant::now();
        let up = Arc::new(std::sync::Mutex::new(None));
        let (seen, stats) = (up.clone(), g.worker_stats().to_vec());
        let watcher = std::thread::spawn(move || {
            let until = t0 + Duration::from_secs(30);
            while Instant::now() < until {
                if stats.iter().any(|s| s.tunnels.load(Ordering::Relaxed) > 0) {
                    *seen.lock().unwrap() = Some(Instant::now());
                    return;
                }
                std::hint::spin_loop();
            }
        });
        let mut ws = ws_connect(g.client_addr, &format!("/actors/echo/cold-{run}-{i}"));
        let ready = Instant::now();
        ws.write_all(&client_frame(b"first")).unwrap();
        let echo = read_frame(&mut ws);
        let done = Instant::now();
        assert_eq!(echo, b"first");
        watcher.join().unwrap();
        let tunnel = up.lock().unwrap().expect("a tunnel came up");
        let us = |d: Duration| d.as_micros() as u64;
        samples.push([
            us(done - t0),
            us(tunnel - t0),
            us(ready.saturating_duration_since(tunnel)),
            us(done - ready),
        ]);
        drop(ws);
    }
    let med = |k: usize| {
        let mut v: Vec<u64> = samples.iter().map(|s| s[k]).collect();
        v.sort_unstable();
        v[v.len() / 2]
    };
    Cold {
        total: med(0),
        dial_back: med(1),
        ready: med(2),
        echo: med(3),
        max: samples.iter().map(|s| s[0]).max().unwrap_or(0),
    }
}

struct Handover {
    drains: u64,
    p50: u64,
    p99: u64,
    max: u64,
    client_max_p50: u64,
    errors: u64,
    messages: u64,
}

/// `tether_serverless_retirements_total{reason="lifespan"}` from /metrics.
fn lifespan_drains(admin: SocketAddr) -> u64 {
    let mut s = TcpStream::connect(admin).unwrap();
    let req = format!("GET /metrics HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .find(|l| {
            l.starts_with("tether_serverless_retirements_total")
                && l.contains("reason=\"lifespan\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// One client: numbered messages in a closed loop; every reply's gap
/// since the previous one.
fn client(addr: SocketAddr, actor: usize, stop: Arc<AtomicBool>) -> (Histogram<u64>, u64, u64) {
    let mut ws = ws_connect(addr, &format!("/actors/echo/hand-over-{actor}"));
    ws.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut gaps = Histogram::<u64>::new(3).unwrap();
    let (mut errors, mut n) = (0u64, 0u64);
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        ws.write_all(&client_frame(&n.to_be_bytes())).unwrap();
        let reply = read_frame(&mut ws);
        let now = Instant::now();
        if reply != n.to_be_bytes() {
            errors += 1;
        }
        let _ = gaps.record((now - last).as_micros() as u64);
        last = now;
        n += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    (gaps, errors, n)
}

fn handover(g: &Gateway, args: &Args) -> Handover {
    let before = lifespan_drains(g.admin_addr);
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..args.clients)
        .map(|i| {
            let (addr, stop, actor) = (g.client_addr, stop.clone(), i % args.actors);
            std::thread::spawn(move || client(addr, actor, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(args.handover_secs));
    stop.store(true, Ordering::Relaxed);
    let mut all = Histogram::<u64>::new(3).unwrap();
    let mut maxima = Vec::new();
    let (mut errors, mut messages) = (0, 0);
    for c in clients {
        let (gaps, e, n) = c.join().unwrap();
        maxima.push(gaps.max());
        all.add(&gaps).unwrap();
        errors += e;
        messages += n;
    }
    maxima.sort_unstable();
    Handover {
        drains: lifespan_drains(g.admin_addr) - before,
        p50: all.value_at_quantile(0.5),
        p99: all.value_at_quantile(0.99),
        max: all.max(),
        client_max_p50: maxima[maxima.len() / 2],
        errors,
        messages,
    }
}
