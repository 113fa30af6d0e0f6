//! Threads, drivers, shutdown and the command line, over real sockets and processes.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use tether::config::IoDriver;
use tether::runner::{BuiltinActors, Runner, RunnerOptions};

#[test]
fn two_workers_run_on_two_threads_and_both_accept() {
    let gw = start_default();
    let conns: Vec<RawWs> = (0..64)
        .map(|i| RawWs::connect(gw.client_addr, &format!("/actors/echo/{i}")))
        .collect();
    let stats = gw.worker_stats();
    assert_eq!(stats.len(), 2);
    let accepted: Vec<u64> = stats
        .iter()
        .map(|s| s.accepted.load(Ordering::Relaxed))
        .collect();
    assert!(
        accepted.iter().all(|&n| n > 0),
        "both workers accept: {accepted:?}"
    );
    assert_eq!(accepted.iter().sum::<u64>(), 64);
    let tids: Vec<u64> = stats
        .iter()
        .map(|s| s.thread_id.load(Ordering::Relaxed))
        .collect();
    assert!(
        tids[0] != 0 && tids[0] != tids[1],
        "distinct OS threads: {tids:?}"
    );
    drop(conns);
    gw.shutdown();
}

#[test]
fn echo_works_on_the_epoll_driver_too() {
    let mut c = test_config();
    c.server.io_driver = IoDriver::Epoll;
    let gw = start(c);
    assert_eq!(gw.driver, tether::server::Driver::Epoll);
    let mut ws = RawWs::connect(gw.client_addr, "/actors/echo/epoll");
    ws.send(true, 2, &[1, 2, 3]);
    assert_eq!(ws.recv().unwrap().payload, vec![1, 2, 3]);
    gw.shutdown();
}

/// Timers fire every millisecond while a message trickles in; not one byte
/// may be lost to a cancelled read.
#[test]
fn timeouts_firing_mid_stream_lose_no_bytes() {
    for driver in [IoDriver::IoUring, IoDriver::Epoll] {
        let mut c = test_config();
        c.server.io_driver = driver;
        c.client.ping_interval = Duration::from_millis(1);
        c.client.ping_timeout = Duration::from_secs(30);
        let gw = start(c);
        let mut ws = RawWs::connect(gw.client_addr, "/actors/echo/trickle");
        ws.stream.set_nodelay(true).unwrap();
        let payload: Vec<u8> = (0..20_000u32).map(|i| (i % 253) as u8).collect();
        let frame = client_frame(true, 2, &payload);
        let mut seed = 7u32;
        let mut pos = 0;
        while pos < frame.len() {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let n = (1 + (seed >> 16) as usize % 700).min(frame.len() - pos);
            ws.send_raw(&frame[pos..pos + n]);
            pos += n;
            if seed % 3 == 0 {
                // The trickle itself (the scenario), not a wait.
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let echoed = loop {
            let f = ws.recv().expect("connection stays open");
            if f.opcode == 2 {
                break f.payload;
            }
            assert_eq!(f.opcode, 9, "only pings besides the echo");
        };
        assert!(
            echoed == payload,
            "{driver:?}: echo differs from what was sent"
        );
        gw.shutdown();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_config(dir: &str, body: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("tether-test-{dir}-{}.toml", std::process::id()));
    std::fs::write(&path, body).unwrap();
    path
}

fn wait_for_listener(addr: SocketAddr) {
    wait_for(&format!("the gateway to listen on {addr}"), || {
        TcpStream::connect(addr).is_ok()
    });
}

#[test]
fn sigterm_closes_clients_with_1001_after_the_drain_and_exits_0() {
    let (client, runners, admin) = (free_port(), free_port(), free_port());
    let cfg = write_config(
        "sigterm",
        &format!("[server]\nworkers = 2\nshutdown_drain = \"300ms\"\n[client]\nlisten = \"127.0.0.1:{client}\"\n[runners]\nlisten = \"127.0.0.1:{runners}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n"),
    );
    let child = Command::new(env!("CARGO_BIN_EXE_tether"))
        .arg("--config")
        .arg(&cfg)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut proc = Proc(child);
    let addr: SocketAddr = format!("127.0.0.1:{client}").parse().unwrap();
    wait_for_listener(addr);
    let runner = Runner::start(
        RunnerOptions::new(
            &format!("ws://127.0.0.1:{runners}"),
            tether::config::DEV_RUNNER_TOKEN,
        ),
        BuiltinActors,
    );
    assert!(runner.wait_connected(Duration::from_secs(10)));
    let mut ws = RawWs::connect(addr, "/actors/echo/term");
    let sent = Instant::now();
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(proc.0.id() as i32, libc::SIGTERM) };
    // Still served during the drain...
    ws.send(true, 1, b"during drain");
    assert_eq!(ws.recv().unwrap().payload, b"during drain");
    // ...then closed with 1001 once it is over.
    let close = ws.recv().unwrap();
    assert_eq!(close.close_code(), Some(1001));
    assert!(
        sent.elapsed() >= Duration::from_millis(250),
        "{:?}",
        sent.elapsed()
    );
    ws.send(true, 8, &1001u16.to_be_bytes());
    // New connections are refused once accepting has stopped.
    assert!(TcpStream::connect(addr).is_err());
    let until = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = proc.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < until, "tether did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    runner.stop();
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn a_second_gateway_on_the_same_port_refuses_to_start() {
    // The first gateway picks its own port (choosing a free one first and
    // binding it later raced with other tests taking it meanwhile).
    let gw = start(test_config());
    let port = gw.client_addr.port();
    let cfg = write_config(
        "dup",
        &format!(
            "[client]\nlisten = \"127.0.0.1:{port}\"\n[admin]\nlisten = \"127.0.0.1:{}\"\n",
            free_port()
        ),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("port {port}")) && stderr.contains("already in use"),
        "{stderr}"
    );
    // The first gateway keeps all the traffic.
    let mut ws = RawWs::connect(gw.client_addr, "/actors/echo/still-mine");
    ws.send(true, 1, b"ok");
    assert_eq!(ws.recv().unwrap().payload, b"ok");
    gw.shutdown();
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn check_config_reports_every_error_with_line_and_column() {
    let good = write_config("good", "[client]\nping_interval = \"10s\"\n");
    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .arg("check-config")
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let bad = write_config(
        "bad",
        "[client]\nlisten = \"127.0.0.1:7000\"\nping_intervall = \"10s\"\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 3, column 1") && stderr.contains("ping_intervall"),
        "{stderr}"
    );

    let clash = write_config("clash", "[client]\nlisten = \"127.0.0.1:7000\"\nread_buffer_bytes = 100\n[admin]\nlisten = \"127.0.0.1:7000\"\n");
    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .arg("check-config")
        .arg(&clash)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 3, column 1: client.read_buffer_bytes"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 5, column 1: admin.listen"),
        "{stderr}"
    );

    let exposed = write_config("exposed", "[runners]\nlisten = \"0.0.0.0:8081\"\n");
    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .arg("check-config")
        .arg(&exposed)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("development token"),
        "{stderr}"
    );
    let _ = std::fs::remove_file(exposed);

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/tether.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .arg("check-config")
        .arg(example)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for f in [good, bad, clash] {
        let _ = std::fs::remove_file(f);
    }
}

#[test]
fn healthz_answers_while_a_client_misbehaves() {
    let gw = start_default();
    // A client that sends garbage forever must not stop others being served.
    let mut junk = TcpStream::connect(gw.client_addr).unwrap();
    let _ = junk.write_all(&[b'x'; 10_000]);
    let mut s = TcpStream::connect(gw.client_addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert_eq!(status_of(&out), 200);
    gw.shutdown();
}
