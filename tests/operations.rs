//! Running under systemd: logs fit for the journal and for log shippers,
//! the notify protocol, the unit file, readiness.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::child::{temp_dir, ChildGateway, Reaped};

/// The gateway's first log lines (until it serves), started on free ports
/// with `extra` config, its stderr a pipe (not a terminal).
fn first_log_lines(extra: &str) -> Vec<String> {
    // A directory per call: tests run in parallel and each removes its own.
    let dir = temp_dir("ops");
    let cfg = dir.join("tether.toml");
    let body = format!(
        "[server]\nworkers = 1\n{extra}\n[client]\nlisten = \"127.0.0.1:0\"\n[runners]\nlisten = \"127.0.0.2:0\"\n[admin]\nlisten = \"127.0.0.3:0\"\n"
    );
    std::fs::write(&cfg, body).unwrap();
    let mut child = Reaped(
        Command::new(env!("CARGO_BIN_EXE_tether"))
            .arg("--config")
            .arg(&cfg)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = read_until_serving(&mut child.0);
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
    lines
}

fn read_until_serving(child: &mut Child) -> Vec<String> {
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut lines = Vec::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        let done = line.contains("tether is serving");
        lines.push(line);
        if done {
            break;
        }
    }
    lines
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let lines = first_log_lines("");
    assert!(
        lines.iter().any(|l| l.contains("tether is serving")),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.contains('\u{1b}')), "{lines:?}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let lines = first_log_lines("log_format = \"json\"");
    assert!(!lines.is_empty());
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v.get("level").is_some() && v.get("fields").is_some(),
            "{line}"
        );
    }
}

/// systemd's side of the notify protocol: a datagram socket the gateway is
/// told about in `$NOTIFY_SOCKET`, read until `wanted` arrives.
struct FakeSystemd {
    socket: std::os::unix::net::UnixDatagram,
    path: std::path::PathBuf,
    heard: Vec<String>,
}

impl FakeSystemd {
    fn new() -> FakeSystemd {
        FakeSystemd::new_named("notify")
    }

    /// One per test: tests run in parallel in one process.
    fn new_named(name: &str) -> FakeSystemd {
        let pid = std::process::id();
        let path = std::env::temp_dir().join(format!("tether-{name}-{pid}.sock"));
        let _ = std::fs::remove_file(&path);
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        FakeSystemd {
            socket,
            path,
            heard: Vec::new(),
        }
    }

    /// Reads messages until one contains `wanted`; returns it.
    fn until(&mut self, wanted: &str) -> String {
        let mut buf = [0u8; 4096];
        loop {
            let n = match self.socket.recv(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("no {wanted} from the gateway ({e}); heard {:?}", self.heard),
            };
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.heard.push(message.clone());
            if message.contains(wanted) {
                return message;
            }
        }
    }
}

impl FakeSystemd {
    /// Waits until `unwanted` has not come for `quiet` in a row (a few
    /// already on their way are let through), within 20 s.
    fn expect_silence(&mut self, unwanted: &str, quiet: std::time::Duration) {
        self.socket.set_read_timeout(Some(quiet)).unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut buf = [0u8; 4096];
        let mut last = std::time::Instant::now();
        while last.elapsed() < quiet {
            assert!(
                std::time::Instant::now() < until,
                "{unwanted} kept coming: {:?}",
                self.heard
            );
            if let Ok(n) = self.socket.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                if message.contains(unwanted) {
                    last = std::time::Instant::now();
                }
                self.heard.push(message);
            }
        }
        self.socket
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
    }
}

impl Drop for FakeSystemd {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn systemd_hears_ready_status_watchdog_and_stopping() {
    let mut systemd = FakeSystemd::new();
    let dir = std::env::temp_dir().join(format!("tether-notify-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("tether.toml");
    std::fs::write(
        &cfg,
        "[server]\nworkers = 2\nshutdown_drain = \"100ms\"\n[client]\nlisten = \"127.0.0.1:0\"\n[runners]\nlisten = \"127.0.0.2:0\"\n[admin]\nlisten = \"127.0.0.3:0\"\n",
    )
    .unwrap();
    let mut child = Reaped(
        Command::new(env!("CARGO_BIN_EXE_tether"))
            .arg("--config")
            .arg(&cfg)
            .env("NOTIFY_SOCKET", &systemd.path)
            .env("WATCHDOG_USEC", "200000")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ready = systemd.until("READY=1");
    assert!(ready.contains("STATUS=connections 0"), "{ready}");
    // Fed while both workers turn: twice, to see it is a feed.
    systemd.until("WATCHDOG=1");
    systemd.until("WATCHDOG=1");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    systemd.until("STOPPING=1");
    assert!(child.0.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// systemd-analyze, installed by scripts/install-systemd-tools if missing.
fn systemd_analyze() -> Option<&'static str> {
    let found = |p: &str| std::path::Path::new(p).exists();
    if !found("/usr/bin/systemd-analyze") {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install-systemd-tools");
        let installed = Command::new(script).status().is_ok_and(|s| s.success());
        if !installed {
            eprintln!("SKIPPED: systemd-analyze is missing and could not be installed");
            return None;
        }
    }
    Some("/usr/bin/systemd-analyze")
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/tether.service"
    ))
    .unwrap();
    // verify checks that ExecStart's binary exists: point it at this build's.
    let unit = unit.replace("/usr/local/bin/tether", env!("CARGO_BIN_EXE_tether"));
    let dir = std::env::temp_dir().join(format!("tether-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tether.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        !said.contains("tether.service"),
        "warnings about the unit: {said}"
    );
}

#[test]
fn readyz_waits_for_a_runner_when_told_to() {
    use tether::runner::BuiltinActors;
    let mut c = common::test_config();
    c.admin.ready_needs_runner = true;
    let mut h = common::start_bare(c);
    let ready = |h: &common::Harness| {
        let request = "GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        common::status_of(&common::raw_exchange(h.admin_addr, request.as_bytes()))
    };
    assert_eq!(ready(&h), 503, "no runner yet");
    let o = h.runner_options();
    h.add_runner(o, BuiltinActors);
    common::wait_for("readyz to say ready", || ready(&h) == 200);
    let healthz = "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    assert_eq!(
        common::status_of(&common::raw_exchange(h.admin_addr, healthz.as_bytes())),
        200
    );
    h.shutdown();
}

#[test]
fn sighup_reloads_and_says_what_needs_a_restart_and_keeps_running_on_a_bad_file() {
    let base = "[server]\nworkers = 1\n[client]\nlisten = \"127.0.0.1:0\"\n[runners]\nlisten = \"127.0.0.2:0\"\n[admin]\nlisten = \"127.0.0.3:0\"\ntoken = \"hup\"\n";
    let mut gateway = ChildGateway::start(base);
    let admin = gateway.admin_addr;
    let reloads = |result: &str| reloads_counted(admin, result);
    assert_eq!((reloads("applied"), reloads("invalid")), (0.0, 0.0));
    let changed = base
        .replace("[client]\n", "[client]\nmax_connections = 5\n")
        .replace("workers = 1\n", "workers = 1\nlog_level = \"debug\"\n");
    let said = gateway.reload(&changed);
    let applied = "applied=[\"client.max_connections\", \"server.log_level\"]";
    assert!(said.contains(applied), "{said}");
    assert!(said.contains("needs_restart=[]"), "{said}");
    // The new level is in force: a refused request now logs at debug.
    let request = b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n";
    let _ = common::raw_exchange(gateway.client_addr, request);
    gateway.line_with("refusing request");
    assert_eq!((reloads("applied"), reloads("invalid")), (1.0, 0.0));
    // A broken file: every error with its place, and the gateway runs on.
    let said = gateway.reload("[client]\nmax_connections = \"many\"\n");
    assert!(said.contains("configuration not reloaded"), "{said}");
    assert!(said.contains("line 2"), "{said}");
    assert_eq!((reloads("applied"), reloads("invalid")), (1.0, 1.0));
    assert!(gateway.is_running(), "still running");
    // ...on what it ran before: the same good file again changes nothing.
    let said = gateway.reload(&changed);
    assert!(said.contains("applied=[] needs_restart=[]"), "{said}");
}

/// `tether_reloads_total{result}` from the admin listener at `admin`
/// (admin token "hup").
fn reloads_counted(admin: std::net::SocketAddr, result: &str) -> f64 {
    let request = "GET /metrics HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer hup\r\n\r\n";
    let response = common::raw_exchange(admin, request.as_bytes());
    let (_, body) = response.split_once("\r\n\r\n").expect("a response");
    common::metrics::Metrics::parse(body).value("tether_reloads_total", &[("result", result)])
}

/// A worker stuck in a blocking call stops the watchdog feed, and the feed
/// resumes when the worker does. The worker is stuck the way a real one
/// can be: its log writes block because nobody reads its stderr (a stalled
/// journal), while it logs a line per refused request (debug level).
#[test]
fn a_stuck_worker_stops_the_watchdog_feed() {
    let mut systemd = FakeSystemd::new_named("stuck");
    let env = [
        ("NOTIFY_SOCKET", systemd.path.as_os_str()),
        ("WATCHDOG_USEC", "200000".as_ref()),
    ];
    let mut gateway = LoggingGateway::start("stuck", "", &env);
    systemd.until("WATCHDOG=1");
    systemd.until("WATCHDOG=1");
    gateway.block_its_worker();
    // At most a feed or two already on its way; then silence.
    systemd.expect_silence("WATCHDOG=1", std::time::Duration::from_secs(1));
    // Reading its stderr unblocks the worker: the feed resumes.
    let mut stderr = gateway.stderr.take().unwrap();
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    systemd.until("WATCHDOG=1");
}

/// A stop is bounded even when a worker is stuck (here: blocked writing
/// logs nobody reads): the process ends `shutdown_drain` + 10 s after
/// SIGTERM, with status 1 (the drain did not finish).
#[test]
fn a_stop_ends_within_its_bound_even_with_a_stuck_worker() {
    let mut gateway = LoggingGateway::start("bound", "shutdown_drain = \"100ms\"\n", &[]);
    gateway.block_its_worker();
    let stopped = std::time::Instant::now();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(gateway.child.0.id() as i32, libc::SIGTERM) };
    let status = loop {
        if let Some(status) = gateway.child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped.elapsed() < std::time::Duration::from_secs(20),
            "no exit"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let took = stopped.elapsed();
    assert_eq!(status.code(), Some(1), "{status:?}");
    assert!(took >= std::time::Duration::from_secs(10), "{took:?}");
}

/// A one-worker gateway logging at debug to a pipe this test reads only
/// when it wants to (its own temp directory, removed when dropped).
struct LoggingGateway {
    child: Reaped,
    stderr: Option<BufReader<std::process::ChildStderr>>,
    client: std::net::SocketAddr,
    dir: std::path::PathBuf,
}

impl LoggingGateway {
    fn start(name: &str, server: &str, env: &[(&str, &std::ffi::OsStr)]) -> LoggingGateway {
        let dir = std::env::temp_dir().join(format!("tether-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("tether.toml");
        let body = format!(
            "[server]\nworkers = 1\nlog_level = \"debug\"\n{server}[client]\nlisten = \"127.0.0.1:0\"\n[runners]\nlisten = \"127.0.0.2:0\"\n[admin]\nlisten = \"127.0.0.3:0\"\n"
        );
        std::fs::write(&cfg, body).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_tether"));
        command.arg("--config").arg(&cfg).stderr(Stdio::piped());
        command.envs(env.iter().copied());
        let mut child = Reaped(command.spawn().unwrap());
        let mut stderr = BufReader::new(child.0.stderr.take().unwrap());
        let mut serving = String::new();
        while !serving.contains("tether is serving") {
            serving.clear();
            stderr.read_line(&mut serving).unwrap();
        }
        let client = address(&serving, "client=");
        LoggingGateway {
            child,
            stderr: Some(stderr),
            client,
            dir,
        }
    }

    /// Refused requests until the worker no longer answers: its stderr
    /// pipe is full and it blocks writing the next log line.
    fn block_its_worker(&self) {
        let deadline = std::time::Instant::now() + common::WAIT;
        while answers(self.client) {
            assert!(
                std::time::Instant::now() < deadline,
                "the worker never blocked"
            );
        }
    }
}

impl Drop for LoggingGateway {
    fn drop(&mut self) {
        let _ = self.child.0.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether the gateway answers a request on `addr` within half a second.
fn answers(addr: std::net::SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let half = Some(std::time::Duration::from_millis(500));
    s.set_read_timeout(half).unwrap();
    s.set_write_timeout(half).unwrap();
    let request = b"GET /a-path-that-does-not-exist-and-is-logged HTTP/1.1\r\nHost: t\r\n\r\n";
    if s.write_all(request).is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(n) if n > 0)
}

fn address(serving: &str, key: &str) -> std::net::SocketAddr {
    serving
        .split(key)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|a| a.trim_matches(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':')))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no {key} address in {serving}"))
}
