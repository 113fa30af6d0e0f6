//! The targets of the side-by-side benchmarks, each started fresh per
//! run: a plain WebSocket server (`ws_server`, also the proxies' backend),
//! Tether in a child process with its reference runner's listener, and
//! nginx or HAProxy (bench/proxies/start.sh) in front of `ws_server` (or,
//! for the `http` workload, of the plain HTTP server `http_server`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::TestPki;

/// A server process this benchmark started; killed when dropped.
pub struct Server {
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

pub struct Target {
    pub name: String,
    pub url: String,
    /// Where `url` points (for the bench's own echo client).
    pub port: u16,
    /// The listener speaks TLS (`url` is `wss://`).
    pub tls: bool,
    /// Tether: where the load test's reference runner connects.
    pub runner_url: Option<String>,
    /// The process whose CPU and RSS count (none for direct).
    pub measured: Option<u32>,
    _servers: Vec<Server>,
}

pub fn free_port() -> u16 {
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

pub fn start_ws_server(workers: usize) -> (u16, Server) {
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

/// The plain HTTP backend of the `http` workload (`http_server`).
pub fn start_http_server(workers: usize) -> (u16, Server) {
    let port = free_port();
    let child = Command::new(sibling("http_server"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--threads", &workers.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .expect("start http_server");
    wait_listening(port, "http_server");
    (port, Server { child, _dir: None })
}

fn start_tether(workers: usize, tls: Option<&TestPki>) -> Target {
    let (port, runner_port, admin_port) = (free_port(), free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("tether-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("tether.toml");
    let client_tls = tls.map_or(String::new(), |pki| {
        format!(
            "[[client.tls]]\nchain = {:?}\nkey = {:?}\n",
            pki.cert().display().to_string(),
            pki.key().display().to_string()
        )
    });
    std::fs::write(
        &config,
        format!(
            // Every load-test client comes from 127.0.0.1: no per-address limits.
            "[server]\nworkers = {workers}\nlog_level = \"warn\"\n[client]\nlisten = \"127.0.0.1:{port}\"\nmax_connections_per_address = 1000000\nnew_per_second_per_address = 1000000\nnew_burst_per_address = 1000000\n{client_tls}[runners]\nlisten = \"127.0.0.1:{runner_port}\"\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n[actors]\nnew_per_second_per_address = 1000000\nnew_burst_per_address = 1000000\n"
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
        url: format!("{}://127.0.0.1:{port}", scheme(tls.is_some())),
        port,
        tls: tls.is_some(),
        runner_url: Some(format!("ws://127.0.0.1:{runner_port}")),
        measured: Some(pid),
        _servers: vec![Server {
            child,
            _dir: Some(TempDir(dir)),
        }],
    }
}

fn scheme(tls: bool) -> &'static str {
    if tls {
        "wss"
    } else {
        "ws"
    }
}

fn proxy_target(name: &str, backend: u16, workers: usize, tls: Option<&TestPki>) -> Target {
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
        .args(tls.map(|pki| pki.dir()))
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    wait_listening(port, name);
    Target {
        name: name.into(),
        url: format!("{}://127.0.0.1:{port}", scheme(tls.is_some())),
        port,
        tls: tls.is_some(),
        runner_url: None,
        measured: Some(child.id()),
        _servers: vec![Server {
            child,
            _dir: Some(TempDir(dir)),
        }],
    }
}

/// Starts `name`; with `tls`, its client side speaks TLS (not `direct`:
/// `ws_server` has no TLS, it stays the plain baseline).
pub fn start_target(
    name: &str,
    backend_port: u16,
    workers: usize,
    tls: Option<&TestPki>,
) -> Target {
    match name {
        "direct" => Target {
            name: "direct".into(),
            url: format!("ws://127.0.0.1:{backend_port}"),
            port: backend_port,
            tls: false,
            runner_url: None,
            measured: None,
            _servers: Vec::new(),
        },
        "tether" => start_tether(workers, tls),
        "nginx" | "haproxy" => proxy_target(name, backend_port, workers, tls),
        other => panic!("unknown target {other} (direct, tether, nginx, haproxy)"),
    }
}
