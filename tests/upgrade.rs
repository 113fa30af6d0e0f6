//! `tether upgrade`: the running gateway hands its listeners and every
//! client WebSocket to a new process; no client notices beyond a pause.
//!
//! 1,000 clients: half on echo actors, sending numbered messages without
//! pause; half on counter actors that hibernate. Two upgrades in a row.
//! Every echo must come back exactly once and in order, no client may see a
//! close, and the hibernated ones must wake their actors afterwards in the
//! third process. The pause each active client saw around each upgrade is
//! printed (bench/README.md records it).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const ACTIVE: usize = 500;
const HIBERNATED: usize = 500;
const ADMIN_TOKEN: &str = "upgrade-test-admin";

/// Every gateway process the test started (the first one, then each one an
/// upgrade started, found in the pid file), stopped when the test ends.
struct Gateways {
    first: Child,
    pid_file: PathBuf,
    seen: Mutex<Vec<u32>>,
}

impl Gateways {
    fn current(&self) -> u32 {
        let pid = std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .expect("a pid in the pid file");
        self.seen.lock().unwrap().push(pid);
        pid
    }
}

impl Drop for Gateways {
    fn drop(&mut self) {
        let _ = self.first.kill();
        let _ = self.first.wait();
        let mut pids = self.seen.lock().unwrap().clone();
        if let Some(pid) = std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            pids.push(pid);
        }
        for pid in pids {
            // SAFETY: kill(2) on a gateway this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(dir: &Path) -> PathBuf {
    config_with(dir, 2)
}

fn config_with(dir: &Path, workers: usize) -> PathBuf {
    let cfg = dir.join("tether.toml");
    let body = format!(
        "[server]\nworkers = {workers}\npid_file = \"{}\"\nshutdown_drain = \"1s\"\n\
         [client]\nlisten = \"127.0.0.1:0\"\n\
         [runners]\nlisten = \"127.0.0.2:0\"\n\
         [admin]\nlisten = \"127.0.0.3:0\"\ntoken = \"{ADMIN_TOKEN}\"\n\
         [actors]\nidle_timeout = \"1s\"\n",
        dir.join("tether.pid").display()
    );
    std::fs::write(&cfg, body).unwrap();
    cfg
}

/// `name=ADDR` from the "tether is serving" line.
fn address(line: &str, name: &str) -> SocketAddr {
    line.split(&format!("{name}="))
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|a| a.trim_matches(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':')))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no {name} address in {line}"))
}

/// Starts the gateway; returns it and its client, runner and admin addresses.
/// Its stderr (and that of the processes upgrades start, which inherit it)
/// is drained by a thread, so no gateway ever blocks on logging.
fn start_gateway(cfg: &Path, pid_file: PathBuf) -> (Gateways, [SocketAddr; 3]) {
    start_gateway_from(Path::new(env!("CARGO_BIN_EXE_tether")), cfg, pid_file)
}

fn start_gateway_from(exe: &Path, cfg: &Path, pid_file: PathBuf) -> (Gateways, [SocketAddr; 3]) {
    let mut child = Command::new(exe)
        .env("RUST_LOG", "info,tether::server::actors=debug")
        .arg("--config")
        .arg(cfg)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    // Every line is kept beside the config (left there if the test fails).
    let mut log = std::fs::File::create(cfg.with_file_name("gateway.log")).unwrap();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = writeln!(log, "{line}");
            if std::env::var_os("TETHER_TEST_VERBOSE").is_some() || line.contains("upgrade") {
                eprintln!("gateway: {line}");
            }
            let _ = tx.send(line);
        }
    });
    let serving = loop {
        let line = rx.recv_timeout(common::WAIT).expect("the gateway serves");
        if line.contains("tether is serving") {
            break line;
        }
    };
    let addrs = ["client", "runners", "admin"].map(|n| address(&serving, n));
    let gateways = Gateways {
        first: child,
        pid_file,
        seen: Mutex::new(Vec::new()),
    };
    (gateways, addrs)
}

fn start_runner(runner_addr: SocketAddr, state: &Path) -> Reaped {
    Reaped(
        Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(["runner", "--gateway", &format!("ws://{runner_addr}")])
            .arg("--state-dir")
            .arg(state)
            .stderr(match std::env::var_os("TETHER_TEST_VERBOSE") {
                Some(_) => Stdio::inherit(),
                None => Stdio::null(),
            })
            .spawn()
            .unwrap(),
    )
}

fn hibernated(admin: SocketAddr) -> u64 {
    metric(admin, "tether_hibernated_connections")
}

/// The sum of a series' samples on the admin listener's /metrics.
fn metric(admin: SocketAddr, name: &str) -> u64 {
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n"
    );
    let text = common::raw_exchange(admin, request.as_bytes());
    text.lines()
        .filter(|l| l.split([' ', '{']).next() == Some(name))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects, trying again while the runner's tunnels are still coming up
/// (503 no_runner), as a client would.
async fn connect(url: &str) -> Ws {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match tokio_tungstenite::connect_async(url).await {
            Ok((ws, _)) => return ws,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("connect {url}: {e}"),
        }
    }
}

/// How many sockets process `pid` holds.
fn sockets_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

/// What one active client saw.
#[derive(Default)]
struct Seen {
    /// When each echo arrived, in order.
    arrivals: Vec<Instant>,
    /// What went wrong (out of order, duplicate, close, error).
    faults: Vec<String>,
}

struct Active {
    sent: AtomicU64,
    seen: Mutex<Seen>,
}

/// An echo client: sends "n" (1, 2, …) every 10 ms while `sending`, and
/// checks that every echo is the next number.
async fn active_client(addr: SocketAddr, i: usize, me: Arc<Active>, sending: Arc<AtomicBool>) {
    let url = format!("ws://{addr}/actors/echo/e{}", i % 100);
    let ws = connect(&url).await;
    let (mut tx, mut rx) = ws.split();
    let writer = {
        let me = me.clone();
        tokio::spawn(async move {
            while sending.load(Ordering::Relaxed) {
                let n = me.sent.load(Ordering::Relaxed) + 1;
                if tx.send(Message::text(n.to_string())).await.is_err() {
                    return;
                }
                me.sent.store(n, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            std::future::pending::<()>().await
        })
    };
    let mut expected = 1u64;
    while let Some(message) = rx.next().await {
        let mut seen = me.seen.lock().unwrap();
        match message {
            Ok(Message::Text(t)) if t.as_str() == expected.to_string() => {
                seen.arrivals.push(Instant::now());
                expected += 1;
            }
            Ok(Message::Text(t)) => seen.faults.push(format!("got {t}, expected {expected}")),
            Ok(Message::Close(c)) => seen.faults.push(format!("closed: {c:?}")),
            Ok(_) => {}
            Err(e) => seen.faults.push(format!("error: {e}")),
        }
    }
    me.seen.lock().unwrap().faults.push("stream ended".into());
    writer.abort();
}

/// A counter client: connects, then waits (its actor sleeps) until told to
/// send `get`, and reports the answer.
async fn hibernated_client(
    addr: SocketAddr,
    i: usize,
    go: Arc<tokio::sync::Notify>,
    answers: Arc<AtomicU64>,
    faults: Arc<Mutex<Vec<String>>>,
) {
    let url = format!("ws://{addr}/actors/counter/c{}", i % 50);
    let mut ws = connect(&url).await;
    go.notified().await;
    let fault = |f: String| faults.lock().unwrap().push(f);
    if let Err(e) = ws.send(Message::text("get")).await {
        return fault(format!("send after the upgrades: {e}"));
    }
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.parse::<i64>().is_ok() => {
                answers.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Some(Ok(Message::Text(_)))
            | Some(Ok(Message::Ping(_)))
            | Some(Ok(Message::Pong(_))) => {}
            other => return fault(format!("hibernated client: {other:?}")),
        }
    }
}

/// The longest gap between two echoes a client saw within `window`.
fn pause_within(arrivals: &[Instant], window: (Instant, Instant)) -> Duration {
    arrivals
        .windows(2)
        .filter(|w| w[1] >= window.0 && w[0] <= window.1)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn a_thousand_clients_stay_connected_through_two_upgrades() {
    let dir = std::env::temp_dir().join(format!("tether-upgrade-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("state")).unwrap();
    let cfg = config(&dir);
    let pid_file = dir.join("tether.pid");
    let (gateways, [client, runner_addr, admin]) = start_gateway(&cfg, pid_file.clone());
    let _runner = start_runner(runner_addr, &dir.join("state"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sending = Arc::new(AtomicBool::new(true));
    let actives: Vec<Arc<Active>> = (0..ACTIVE)
        .map(|_| {
            Arc::new(Active {
                sent: AtomicU64::new(0),
                seen: Mutex::default(),
            })
        })
        .collect();
    let go = Arc::new(tokio::sync::Notify::new());
    let answers = Arc::new(AtomicU64::new(0));
    let faults = Arc::new(Mutex::new(Vec::new()));
    for i in 0..HIBERNATED {
        let (go, answers, faults) = (go.clone(), answers.clone(), faults.clone());
        rt.spawn(hibernated_client(client, i, go, answers, faults));
    }
    common::wait_for_within(
        "the counter clients to hibernate",
        Duration::from_secs(60),
        || hibernated(admin) == HIBERNATED as u64,
    );
    for (i, me) in actives.iter().enumerate() {
        rt.spawn(active_client(client, i, me.clone(), sending.clone()));
    }
    let echoed = |a: &Active| a.seen.lock().unwrap().arrivals.len() as u64;
    // A client that saw a fault fails the test at once, saying what.
    let no_faults = || {
        for (i, a) in actives.iter().enumerate() {
            let seen = a.seen.lock().unwrap();
            assert!(seen.faults.is_empty(), "client {i}: {:?}", seen.faults);
        }
    };
    let all_echoing = |at_least: &[u64]| {
        no_faults();
        actives
            .iter()
            .zip(at_least)
            .all(|(a, n)| echoed(a) >= n + 20)
    };
    let none: Vec<u64> = vec![0; ACTIVE];
    common::wait_for_within(
        "every echo client to be served",
        Duration::from_secs(60),
        || all_echoing(&none),
    );

    let mut windows = Vec::new();
    for round in 1..=2 {
        let before: Vec<u64> = actives.iter().map(|a| echoed(a)).collect();
        let old = gateways.current();
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(["upgrade", "--pid-file"])
            .arg(&pid_file)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "upgrade {round}: {said} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let new = gateways.current();
        assert_ne!(old, new, "upgrade {round}: a new process serves");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !all_echoing(&before) {
            if Instant::now() > deadline {
                let lagging: Vec<String> = (actives.iter().zip(&before).enumerate())
                    .filter(|(_, (a, n))| echoed(a) < *n + 20)
                    .map(|(i, (a, n))| {
                        format!(
                            "#{i} echoed {} of {} (had {n})",
                            echoed(a),
                            a.sent.load(Ordering::Relaxed)
                        )
                    })
                    .take(10)
                    .collect();
                panic!(
                    "upgrade {round}: clients not served again: {lagging:?}; log in {}",
                    dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        windows.push((started, Instant::now()));
        println!("upgrade {round}: {said}");
    }

    assert_eq!(
        metric(admin, "tether_upgrades_total"),
        1,
        "counted by the new process"
    );
    // The new process holds each client's socket once: none leaked into it
    // from its parent through exec (listeners, tunnels and its own
    // descriptors aside).
    let sockets = sockets_of(gateways.current());
    let clients = ACTIVE + HIBERNATED;
    assert!(
        sockets < clients + 40,
        "{sockets} sockets for {clients} clients"
    );
    // The hibernated clients wake their actors in the third process.
    go.notify_waiters();
    common::wait_for_within(
        "every hibernated client's answer",
        Duration::from_secs(60),
        || {
            answers.load(Ordering::Relaxed) == HIBERNATED as u64
                || !faults.lock().unwrap().is_empty()
        },
    );
    assert!(
        faults.lock().unwrap().is_empty(),
        "{:?}",
        faults.lock().unwrap()
    );

    // Every message sent comes back, once, in order.
    sending.store(false, Ordering::Relaxed);
    common::wait_for_within("the last echoes", Duration::from_secs(30), || {
        actives
            .iter()
            .all(|a| echoed(a) == a.sent.load(Ordering::Relaxed))
    });
    for (i, a) in actives.iter().enumerate() {
        let seen = a.seen.lock().unwrap();
        assert!(seen.faults.is_empty(), "client {i}: {:?}", seen.faults);
    }
    let total: u64 = actives.iter().map(|a| a.sent.load(Ordering::Relaxed)).sum();
    println!("{total} messages echoed exactly once, in order");
    for (round, window) in windows.iter().enumerate() {
        let mut pauses: Vec<Duration> = actives
            .iter()
            .map(|a| pause_within(&a.seen.lock().unwrap().arrivals, *window))
            .collect();
        pauses.sort();
        println!(
            "upgrade {}: pause per active client p50 {:?}, p99 {:?}, max {:?}",
            round + 1,
            percentile(&pauses, 0.5),
            percentile(&pauses, 0.99),
            pauses[pauses.len() - 1]
        );
    }
    drop(rt);
    drop(gateways);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `tether upgrade --pid-file F`: whether it succeeded, and what it said.
fn run_upgrade(pid_file: &Path, timeout: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["upgrade", "--timeout", timeout, "--pid-file"])
        .arg(pid_file)
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), said)
}

/// An upgrade that cannot start (no binary at the path, or a configuration
/// the new binary refuses: another worker count) changes nothing: the
/// running process serves on, its clients notice nothing, and the next
/// upgrade, once both are right, goes through.
#[test]
fn a_refused_upgrade_leaves_the_gateway_serving_and_a_later_one_succeeds() {
    let dir = std::env::temp_dir().join(format!("tether-upgrade-refused-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("state")).unwrap();
    let cfg = config_with(&dir, 1);
    let pid_file = dir.join("tether.pid");
    // A copy of the binary, to take away and bring back.
    let exe = dir.join("tether-under-test");
    std::fs::copy(env!("CARGO_BIN_EXE_tether"), &exe).unwrap();
    let (gateways, [client, runner_addr, _]) = start_gateway_from(&exe, &cfg, pid_file.clone());
    let _runner = start_runner(runner_addr, &dir.join("state"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut ws = rt.block_on(connect(&format!("ws://{client}/actors/echo/refused")));
    let mut echo = |text: &str| {
        rt.block_on(async {
            ws.send(Message::text(text)).await.unwrap();
            match ws.next().await {
                Some(Ok(Message::Text(t))) => t.to_string(),
                other => panic!("no echo of {text}: {other:?}"),
            }
        })
    };
    assert_eq!(echo("one"), "one");
    let first = gateways.current();
    // No binary at the path: the upgrade fails at once, nothing stops.
    std::fs::remove_file(&exe).unwrap();
    let (ok, said) = run_upgrade(&pid_file, "3s");
    assert!(!ok, "{said}");
    assert_eq!(gateways.current(), first, "the same process serves");
    assert_eq!(echo("one and a half"), "one and a half");
    std::fs::copy(env!("CARGO_BIN_EXE_tether"), &exe).unwrap();
    // A configuration the new binary refuses: the same.
    config_with(&dir, 2);
    let (ok, said) = run_upgrade(&pid_file, "3s");
    assert!(!ok, "{said}");
    assert_eq!(gateways.current(), first, "the same process serves");
    assert_eq!(echo("two"), "two");
    config_with(&dir, 1);
    let (ok, said) = run_upgrade(&pid_file, "30s");
    assert!(ok, "{said}");
    assert_ne!(gateways.current(), first);
    assert_eq!(echo("three"), "three");
    drop(gateways);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `wss://` clients keep their connections through two upgrades: a TLS 1.3
/// session moves with its traffic keys (hibernated ones too); a TLS 1.2
/// one cannot and is closed with 1012, for its client to reconnect.
#[test]
fn tls13_clients_stay_connected_through_upgrades_and_tls12_ones_are_told_to_reconnect() {
    use common::wss::{echo, tls_with, upgrade};
    let dir = std::env::temp_dir().join(format!("tether-upgrade-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("state")).unwrap();
    let pki = common::pki::Pki::new();
    let leaf = pki.leaf("gw", &["gw.test"]);
    let cfg = config_with(&dir, 2);
    let tls = format!(
        "\n[[client.tls]]\nchain = \"{}\"\nkey = \"{}\"\n",
        leaf.chain.display(),
        leaf.key.display()
    );
    let body = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, body.replace("[runners]", &format!("{tls}[runners]"))).unwrap();
    let pid_file = dir.join("tether.pid");
    let (gateways, [client, runner_addr, admin]) = start_gateway(&cfg, pid_file.clone());
    let _runner = start_runner(runner_addr, &dir.join("state"));
    let ca = pki.ca_path();
    let connect = |path: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let stream = common::wss::tls_to(client, "gw.test", &ca).expect("TLS");
            let request = format!("ws://gw.test{path}");
            use tungstenite::client::IntoClientRequest;
            match tungstenite::client::client(request.into_client_request().unwrap(), stream) {
                Ok((ws, _)) => return ws,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => panic!("{e}"),
            }
        }
    };
    let mut echoes: Vec<_> = (0..10)
        .map(|i| connect(&format!("/actors/echo/t{i}")))
        .collect();
    let mut sleepers: Vec<_> = (0..3)
        .map(|i| connect(&format!("/actors/counter/t{i}")))
        .collect();
    let old_only = {
        let mut provider = rustls::crypto::ring::default_provider();
        provider
            .cipher_suites
            .retain(|s| s.version() == &rustls::version::TLS12);
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(&ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        std::sync::Arc::new(config)
    };
    let stream = tls_with(client, "gw.test", old_only).unwrap();
    assert_eq!(
        stream.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let mut tls12 = upgrade(stream, "gw.test", "/actors/echo/old");
    assert_eq!(echo(&mut tls12, "1.2"), "1.2");
    for (i, ws) in echoes.iter_mut().enumerate() {
        assert_eq!(echo(ws, &format!("{i}:0")), format!("{i}:0"));
    }
    common::wait_for("the counter clients to hibernate", || {
        hibernated(admin) == 3
    });
    let first = gateways.current();
    for round in 1..=2 {
        let (ok, said) = run_upgrade(&pid_file, "60s");
        assert!(ok, "upgrade {round}: {said}");
        for (i, ws) in echoes.iter_mut().enumerate() {
            let text = format!("{i}:{round}");
            assert_eq!(echo(ws, &text), text, "client {i} after upgrade {round}");
        }
        for ws in &mut sleepers {
            assert!(echo(ws, "get").parse::<i64>().is_ok());
        }
    }
    assert_ne!(gateways.current(), first);
    let closed = loop {
        match tls12.read() {
            Ok(tungstenite::Message::Close(frame)) => break frame.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(e) => panic!("the TLS 1.2 client saw no close frame: {e}"),
        }
    };
    assert_eq!(closed, Some(1012));
    drop(gateways);
    let _ = std::fs::remove_dir_all(&dir);
}
