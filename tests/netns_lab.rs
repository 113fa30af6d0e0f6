//! The network-namespace lab (testkit/src/netns.rs) the cluster tests use
//! to partition a node: connectivity between the root namespace and the
//! nodes and among the nodes, what a cut does to new and established TCP
//! connections, healing, cleanup, and labs side by side. Skipped (SKIPPED)
//! without root or iproute2.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::netns::{self, Lab};
use common::{wait_for, WAIT};

/// How long a connection attempt to a cut node is given (it must not
/// succeed, nor fail other than by timing out, in this time).
const CUT_PROBE: Duration = Duration::from_millis(1500);

/// Echoes every connection accepted on `listener` until dropped.
struct Echo {
    stop: Arc<AtomicBool>,
    pub addr: SocketAddr,
}

impl Echo {
    fn serve(listener: TcpListener) -> Echo {
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        std::thread::spawn(move || {
                            let mut buf = [0u8; 4096];
                            while let Ok(n @ 1..) = s.read(&mut buf) {
                                if s.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        });
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
        });
        Echo { stop, addr }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Sends `text` and reads it back within `WAIT`.
#[track_caller]
fn echo(s: &mut TcpStream, text: &str) {
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(text.as_bytes()).unwrap();
    let mut got = vec![0u8; text.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, text.as_bytes());
}

fn connect(to: SocketAddr, within: Duration) -> std::io::Result<TcpStream> {
    TcpStream::connect_timeout(&to, within)
}

/// Waits for `child` to exit within `WAIT` (killing it if not) and
/// returns its output.
#[track_caller]
fn output_within(mut child: Child) -> Output {
    let until = Instant::now() + WAIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= until {
            let _ = child.kill();
            panic!(
                "child still running after {WAIT:?}: {:?}",
                child.wait_with_output()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn root_and_nodes_reach_each_other() {
    if !netns::available() {
        return;
    }
    let lab = Lab::new(2);

    // A process in node 0 (bash's /dev/tcp) reaches a listener in the root
    // namespace on the bridge address, from its node address.
    let root = TcpListener::bind((lab.bridge_addr(), 0)).unwrap();
    let port = root.local_addr().unwrap().port();
    let script = format!(
        "exec 3<>/dev/tcp/{}/{port}; echo hello-from-node >&3; read -r -t 10 line <&3; echo \"$line\"",
        lab.bridge_addr()
    );
    let child = lab
        .command(0, "bash")
        .arg("-c")
        .arg(script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut conn, peer) = root.accept().unwrap();
    assert_eq!(peer.ip(), lab.node_addr(0));
    conn.set_read_timeout(Some(WAIT)).unwrap();
    let mut line = [0u8; 16];
    conn.read_exact(&mut line).unwrap();
    assert_eq!(&line, b"hello-from-node\n");
    conn.write_all(b"hello-from-root\n").unwrap();
    let out = output_within(child);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello-from-root\n");

    // Node 1 reaches a listener made in node 0's namespace, and so does
    // the root namespace (from the bridge address).
    let node0 = lab.node_addr(0);
    let echo0 = Echo::serve(lab.in_ns(0, || TcpListener::bind((node0, 0)).unwrap()));
    let mut from1 = lab.in_ns(1, || connect(echo0.addr, WAIT).unwrap());
    assert_eq!(from1.local_addr().unwrap().ip(), lab.node_addr(1));
    echo(&mut from1, "node 1 to node 0");
    let mut from_root = connect(echo0.addr, WAIT).unwrap();
    assert_eq!(from_root.local_addr().unwrap().ip(), lab.bridge_addr());
    echo(&mut from_root, "root to node 0");

    // A node has a network of its own: the root namespace's loopback
    // listener is not there.
    let loopback = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let at = loopback.local_addr().unwrap();
    let err = lab.in_ns(0, || connect(at, WAIT).unwrap_err());
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
}

#[test]
fn a_cut_node_is_partitioned_and_heals() {
    if !netns::available() {
        return;
    }
    let lab = Lab::new(2);
    let node0 = lab.node_addr(0);
    let echo0 = Echo::serve(lab.in_ns(0, || TcpListener::bind((node0, 0)).unwrap()));
    let root = Echo::serve(TcpListener::bind((lab.bridge_addr(), 0)).unwrap());

    let mut from_root = connect(echo0.addr, WAIT).unwrap();
    echo(&mut from_root, "before");
    let mut from1 = lab.in_ns(1, || connect(echo0.addr, WAIT).unwrap());
    echo(&mut from1, "before");

    lab.cut(0);

    // Probed all at once, so that the cut is short (the stalled
    // connections' retransmission backoff grows with it).
    std::thread::scope(|scope| {
        // Established connections stall: the write is accepted, nothing
        // comes back, and the connection is not reset.
        for s in [&mut from_root, &mut from1] {
            scope.spawn(move || {
                s.write_all(b"during").unwrap();
                s.set_read_timeout(Some(CUT_PROBE)).unwrap();
                let mut buf = [0u8; 16];
                match s.read(&mut buf) {
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    other => panic!("a read across the cut should time out, got {other:?}"),
                }
            });
        }
        // New connections, from either side, neither succeed nor fail
        // fast (no refusal, no "no route to host"): they time out.
        let expect_timeout = |what: &'static str, r: std::io::Result<TcpStream>| match r {
            Err(e) if e.kind() == ErrorKind::TimedOut => {}
            other => panic!("{what} across the cut should time out, got {other:?}"),
        };
        let (lab, echo0, root) = (&lab, &echo0, &root);
        scope.spawn(move || expect_timeout("root to node 0", connect(echo0.addr, CUT_PROBE)));
        scope.spawn(move || {
            let r = lab.in_ns(1, || connect(echo0.addr, CUT_PROBE));
            expect_timeout("node 1 to node 0", r)
        });
        scope.spawn(move || {
            let r = lab.in_ns(0, || connect(root.addr, CUT_PROBE));
            expect_timeout("node 0 to root", r)
        });
        // The rest of the lab is unaffected.
        scope.spawn(move || lab.in_ns(1, || connect(root.addr, WAIT)).unwrap());
    });

    lab.heal(0);
    let healed = Instant::now();

    // The stalled connections deliver what was written during the cut
    // (retransmitted), and new connections work again.
    for s in [&mut from_root, &mut from1] {
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut got = [0u8; 6];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"during");
        echo(s, "after");
    }
    eprintln!(
        "stalled connections resumed {:?} after the heal",
        healed.elapsed()
    );
    echo(&mut connect(echo0.addr, WAIT).unwrap(), "new, after");
    let mut to_root = lab.in_ns(0, || connect(root.addr, WAIT).unwrap());
    echo(&mut to_root, "node 0 to root, after");
}

#[test]
fn a_dropped_lab_leaves_nothing() {
    if !netns::available() {
        return;
    }
    let lab = Lab::new(2);
    let namespaces = [lab.ns_name(0).to_string(), lab.ns_name(1).to_string()];
    let bridge = lab.bridge_name().to_string();
    let veths = [lab.veth_name(0).to_string(), lab.veth_name(1).to_string()];
    let mut sleeper = lab.command(1, "sleep").arg("1000").spawn().unwrap();
    wait_for("the sleeper to be in node 1", || {
        lab.pids(1).contains(&sleeper.id())
    });
    // A socket made in a namespace keeps the namespace alive; not its
    // interfaces, nor its name.
    let node0 = lab.node_addr(0);
    let _listener = lab.in_ns(0, || TcpListener::bind((node0, 0)).unwrap());

    drop(lab);

    let status = exit_within(&mut sleeper);
    assert!(!status.success(), "killed: {status:?}");
    let list = netns::run_ip(&["netns", "list"]).unwrap();
    for ns in &namespaces {
        assert!(!list.contains(ns.as_str()), "{ns} still in {list}");
    }
    for link in veths.iter().chain([&bridge]) {
        assert!(
            netns::run_ip(&["link", "show", "dev", link]).is_err(),
            "{link} is left"
        );
    }
}

fn exit_within(child: &mut Child) -> std::process::ExitStatus {
    let until = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < until, "child still running");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn leftovers_of_dead_processes_are_removed() {
    if !netns::available() {
        return;
    }
    // A pid that was in use and is not any more: a test binary that died
    // without its destructors.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let ns = format!("tether-netns-{dead}-0-0");
    let bridge = format!("tb{dead}x0");
    netns::run_ip(&["netns", "add", &ns]).unwrap();
    netns::run_ip(&["link", "add", "name", &bridge, "type", "bridge"]).unwrap();

    let _lab = Lab::new(1);

    let list = netns::run_ip(&["netns", "list"]).unwrap();
    assert!(!list.contains(&ns), "{list}");
    assert!(netns::run_ip(&["link", "show", "dev", &bridge]).is_err());
}

#[test]
fn labs_side_by_side_do_not_interfere() {
    if !netns::available() {
        return;
    }
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Lab::new(2));
        let b = s.spawn(|| Lab::new(2));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(a.bridge_name(), b.bridge_name());
    assert_ne!(a.ns_name(0), b.ns_name(0));
    let subnet = |ip: Ipv4Addr| ip.octets()[..3].to_vec();
    assert_ne!(subnet(a.bridge_addr()), subnet(b.bridge_addr()));

    let serve = |lab: &Lab| {
        let addr = lab.node_addr(0);
        Echo::serve(lab.in_ns(0, || TcpListener::bind((addr, 0)).unwrap()))
    };
    let (echo_a, echo_b) = (serve(&a), serve(&b));
    let mut to_b = connect(echo_b.addr, WAIT).unwrap();

    a.cut(0);
    match connect(echo_a.addr, CUT_PROBE) {
        Err(e) if e.kind() == ErrorKind::TimedOut => {}
        other => panic!("lab a's node 0 is cut, got {other:?}"),
    }
    echo(&mut to_b, "lab b's node 0 is not");
    echo(&mut connect(echo_b.addr, WAIT).unwrap(), "new connection");
    a.heal(0);
    echo(&mut connect(echo_a.addr, WAIT).unwrap(), "healed");
}
