//! A real etcd for the cluster tests: Debian's `etcd-server` (installed by
//! `scripts/install-etcd` if missing; tests print SKIPPED and pass without
//! it), started on free loopback ports with a data directory of its own,
//! killed and removed on drop.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::child::{temp_dir, Reaped};
use super::pki::Pki;
use super::WAIT;

/// Whether an `etcd` binary is on PATH, running the install script once if
/// not; prints why a test skips when there is none.
pub fn available() -> bool {
    if on_path() {
        return true;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install-etcd");
    let installed = Command::new(script)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        && on_path();
    if !installed {
        eprintln!("SKIPPED: etcd not installed and scripts/install-etcd could not install it");
    }
    installed
}

fn on_path() -> bool {
    Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One single-member etcd on a loopback address of its own.
pub struct Etcd {
    /// `http://127.0.0.x:port`, for clients.
    pub endpoint: String,
    pub client_addr: SocketAddr,
    /// `https://127.0.0.x:port` when started with `start_tls`.
    pub tls_endpoint: Option<String>,
    dir: PathBuf,
    // Killed (on drop) before the directory goes.
    child: Option<Reaped>,
}

impl Etcd {
    /// Starts etcd and returns once it answers `/health`; panics with its
    /// log if it does not within the tests' deadline. Call after
    /// `Etcd::available()`.
    pub fn start() -> Etcd {
        Etcd::start_with(None)
    }

    /// Also serves clients over TLS, on a second port, with a leaf of
    /// `pki`'s CA for its IP (health checks keep the plain port).
    pub fn start_tls(pki: &Pki) -> Etcd {
        Etcd::start_with(Some(pki))
    }

    fn start_with(pki: Option<&Pki>) -> Etcd {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let pick = || {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            Ipv4Addr::new(127, 0, 0, 10 + (n % 200) as u8)
        };
        Etcd::start_at(pick, pki)
    }

    /// As `start`, listening on `ip` (a lab's bridge address, where nodes
    /// in network namespaces reach it).
    pub fn start_on(ip: Ipv4Addr) -> Etcd {
        Etcd::start_at(|| ip, None)
    }

    fn start_at(pick: impl Fn() -> Ipv4Addr, pki: Option<&Pki>) -> Etcd {
        static TOKENS: AtomicUsize = AtomicUsize::new(0);
        // Several 127.0.0.x addresses: tests run in parallel and a port
        // picked by binding to :0 is free only until someone else takes it,
        // so a start that loses such a race is retried on fresh ports.
        let mut last_log = String::new();
        for _ in 0..3 {
            let n = TOKENS.fetch_add(1, Ordering::Relaxed);
            let ip = pick();
            let client = free_addr(ip);
            let peer = free_addr(ip);
            let dir = temp_dir("etcd");
            let log_path = dir.join("etcd.log");
            let log = std::fs::File::create(&log_path).unwrap();
            let mut urls = format!("http://{client}");
            let mut tls_args = Vec::new();
            let mut tls_endpoint = None;
            if let Some(pki) = pki {
                let tls = free_addr(ip);
                let leaf = pki.leaf(&format!("etcd-{n}"), &[&ip.to_string()]);
                urls.push_str(&format!(",https://{tls}"));
                tls_args = vec![
                    "--cert-file".into(),
                    leaf.chain,
                    "--key-file".into(),
                    leaf.key,
                ];
                tls_endpoint = Some(format!("https://{tls}"));
            }
            let child = Command::new("etcd")
                .args(&tls_args)
                .arg("--name")
                .arg("test")
                .arg("--data-dir")
                .arg(dir.join("data"))
                .arg("--listen-client-urls")
                .arg(&urls)
                .arg("--advertise-client-urls")
                .arg(&urls)
                .arg("--listen-peer-urls")
                .arg(format!("http://{peer}"))
                .arg("--initial-advertise-peer-urls")
                .arg(format!("http://{peer}"))
                .arg("--initial-cluster")
                .arg(format!("test=http://{peer}"))
                .arg("--initial-cluster-state")
                .arg("new")
                .arg("--initial-cluster-token")
                .arg(format!("tether-test-{}-{n}", std::process::id()))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("spawn etcd");
            let mut etcd = Etcd {
                endpoint: format!("http://{client}"),
                client_addr: client,
                tls_endpoint,
                dir,
                child: Some(Reaped(child)),
            };
            if etcd.wait_healthy() {
                return etcd;
            }
            last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
        }
        panic!("etcd did not become healthy; its last log:\n{last_log}");
    }

    /// Polls `/health` until it says true; false if the process exited or
    /// the deadline passed.
    fn wait_healthy(&mut self) -> bool {
        let until = Instant::now() + WAIT;
        while Instant::now() < until {
            let child = &mut self.child.as_mut().unwrap().0;
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if health(self.client_addr) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The data directory (holds `etcd.log`).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        drop(self.child.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_addr(ip: Ipv4Addr) -> SocketAddr {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap()
}

/// `GET /health` over HTTP/1.0: etcd answers `{"health":"true",…}` once it
/// has a leader and serves requests.
fn health(addr: SocketAddr) -> bool {
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
    body.starts_with("HTTP/1.") && body.contains("\"health\":\"true\"")
}
