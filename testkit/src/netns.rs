//! Several hosts on one machine (the cluster tests, and the `cluster`
//! benchmark's `--partition` scenario): a small network of Linux network
//! namespaces, so that a cluster test can cut one node off the network (a
//! partition: its packets are dropped silently, its peers see no reset)
//! instead of only killing it. Needs root and iproute2's `ip`; tests print
//! SKIPPED and pass without them (`available()`).
//!
//! A `Lab` is, in the root namespace, a bridge with the address
//! `10.A.B.1/24` (a /24 of its own, not on any interface or route when the
//! lab is made), and per node a namespace whose `eth0` (`10.A.B.(10+i)/24`,
//! default route via the bridge) is one end of a veth pair whose other end
//! is a port of the bridge. The test itself, and anything it runs in the
//! root namespace (etcd, a gateway), reach node i at `node_addr(i)`; the
//! nodes reach the root namespace at `bridge_addr()` (so a server there
//! must listen on it or on 0.0.0.0, not on 127.0.0.1) and each other
//! through the bridge.
//!
//! Names carry the creating process's pid (bridge `tb<pid>x<n>`, root-side
//! veths `tv<pid>x<n>x<i>`, namespaces `tether-netns-<pid>-<n>-<i>`), so that
//! `Lab::new` can remove what labs of dead processes left behind (a test
//! binary that was killed runs no destructor). Interface names are at most
//! 15 bytes: a lab has at most 100 nodes and the lab counter wraps at 100.
//!
//! How `cut` partitions (measured on this kernel, Linux 6.18): it takes the
//! root-side veth of the node down. The bridge then has no port to forward
//! to and the node's `eth0` loses its carrier (its qdisc drops), so every
//! packet between the node and the rest is dropped without an error: an
//! established TCP connection stalls (writes succeed, nothing comes back,
//! the kernel retransmits) and resumes after `heal`, its data intact (the
//! next retransmission, 1–3 s later with the backoff, delivers it).
//! A link going down alone is not enough, though: neighbour entries learnt
//! by ARP expire during the cut, and once resolution has failed (a few
//! seconds in) a `connect` to the node fails with "No route to host"
//! (EHOSTUNREACH) in milliseconds (measured: 0.07 s), which a real
//! partition does not do. So the lab pins every neighbour entry (`nud
//! permanent`, MAC addresses chosen by the lab): a `connect` to a cut node
//! then times out, as across a real partition. (tc or iptables drops would
//! have needed the same pinning, and iptables is not installed here.)

use std::ffi::OsStr;
use std::io::Read;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long lab setup steps may take.
const WAIT: Duration = Duration::from_secs(20);

/// Whether labs can be made here: root, `ip` present, and a throwaway
/// namespace can be created and deleted. Prints `SKIPPED: <reason>` when
/// not.
pub fn available() -> bool {
    static WHY_NOT: OnceLock<Option<String>> = OnceLock::new();
    match WHY_NOT.get_or_init(why_not) {
        None => true,
        Some(reason) => {
            eprintln!("SKIPPED: {reason}");
            false
        }
    }
}

fn why_not() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("network namespaces need root".into());
    }
    if let Err(e) = run_ip(&["-V"]) {
        return Some(format!("no usable `ip` (iproute2): {e}"));
    }
    let probe = format!("tether-netns-{}-probe", std::process::id());
    if let Err(e) = run_ip(&["netns", "add", &probe]) {
        return Some(format!("cannot create a network namespace: {e}"));
    }
    if let Err(e) = run_ip(&["netns", "del", &probe]) {
        return Some(format!("cannot delete a network namespace: {e}"));
    }
    None
}

/// A bridge in the root namespace and `n` namespaces on it; all removed
/// (and every process still running in the namespaces killed) on drop.
pub struct Lab {
    bridge: String,
    bridge_addr: Ipv4Addr,
    nodes: Vec<Node>,
}

struct Node {
    ns: String,
    /// The veth end on the bridge, in the root namespace.
    veth: String,
    addr: Ipv4Addr,
    mac: String,
}

/// Held while a lab picks its subnet and while leftovers are removed: an
/// exclusive `flock`, which serialises threads (each opens the file) and
/// test binaries alike.
struct SetupLock(std::fs::File);

impl SetupLock {
    fn take() -> SetupLock {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(std::env::temp_dir().join("tether-netns.lock"))
            .expect("open the netns lock file");
        let until = Instant::now() + WAIT;
        loop {
            // SAFETY: flock on an fd this function owns.
            let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if r == 0 {
                return SetupLock(file);
            }
            assert!(
                Instant::now() < until,
                "the netns lock file stayed locked for {WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for SetupLock {
    fn drop(&mut self) {
        // SAFETY: as above; closing the file would release it too.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

impl Lab {
    /// Makes a lab of `nodes` namespaces (at most 100). Call after
    /// `available()`; panics with the failing command's stderr.
    pub fn new(nodes: usize) -> Lab {
        assert!(
            (1..=100).contains(&nodes),
            "a lab has 1 to 100 nodes, not {nodes}"
        );
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % 100;
        let pid = std::process::id();

        let _lock = SetupLock::take();
        remove_leftovers();
        let (a, b) = free_subnet(pid, n);
        let mac = |kind: u8, i: usize| format!("02:74:{a:02x}:{b:02x}:{kind:02x}:{i:02x}");

        // Built up in a value whose Drop removes whatever exists so far, so
        // that a failure half-way leaves nothing behind.
        let mut lab = Lab {
            bridge: format!("tb{pid}x{n}"),
            bridge_addr: Ipv4Addr::new(10, a, b, 1),
            nodes: Vec::new(),
        };
        ip(&["link", "add", "name", &lab.bridge, "type", "bridge"]);
        // Set explicitly, so that the bridge does not take on its ports'
        // addresses as they come and go (the pinned neighbour entries use it).
        let bridge_mac = mac(0, 0);
        ip(&["link", "set", &lab.bridge, "address", &bridge_mac]);
        let bridge_cidr = format!("{}/24", lab.bridge_addr);
        ip(&["addr", "add", &bridge_cidr, "dev", &lab.bridge]);
        ip(&["link", "set", &lab.bridge, "up"]);

        for i in 0..nodes {
            let node = Node {
                ns: format!("tether-netns-{pid}-{n}-{i}"),
                veth: format!("tv{pid}x{n}x{i}"),
                addr: Ipv4Addr::new(10, a, b, 10 + i as u8),
                mac: mac(1, i),
            };
            ip(&["netns", "add", &node.ns]);
            lab.nodes.push(node);
            let node = lab.nodes.last().unwrap();
            let root_mac = mac(2, i);
            #[rustfmt::skip]
            ip(&["link", "add", "name", &node.veth, "address", &root_mac, "type", "veth",
                 "peer", "name", "eth0", "address", &node.mac, "netns", &node.ns]);
            ip(&["link", "set", &node.veth, "master", &lab.bridge, "up"]);
            let cidr = format!("{}/24", node.addr);
            let gateway = lab.bridge_addr.to_string();
            ip(&["-n", &node.ns, "addr", "add", &cidr, "dev", "eth0"]);
            ip(&["-n", &node.ns, "link", "set", "lo", "up"]);
            ip(&["-n", &node.ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &node.ns, "route", "add", "default", "via", &gateway]);
        }
        // Pinned neighbour entries (see the module comment): the root
        // namespace knows every node, every node knows the bridge and the
        // other nodes.
        for node in &lab.nodes {
            let addr = node.addr.to_string();
            #[rustfmt::skip]
            ip(&["neigh", "replace", &addr, "lladdr", &node.mac, "dev", &lab.bridge, "nud", "permanent"]);
            let bridge_addr = lab.bridge_addr.to_string();
            #[rustfmt::skip]
            ip(&["-n", &node.ns, "neigh", "replace", &bridge_addr, "lladdr", &bridge_mac, "dev", "eth0", "nud", "permanent"]);
            for other in lab.nodes.iter().filter(|o| o.ns != node.ns) {
                let other_addr = other.addr.to_string();
                #[rustfmt::skip]
                ip(&["-n", &node.ns, "neigh", "replace", &other_addr, "lladdr", &other.mac, "dev", "eth0", "nud", "permanent"]);
            }
        }
        for i in 0..nodes {
            lab.wait_linked(i);
        }
        lab
    }

    /// Node i's address (`10.A.B.(10+i)`), reachable from the root namespace.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn node_addr(&self, i: usize) -> Ipv4Addr {
        self.nodes[i].addr
    }

    /// The bridge's address in the root namespace (`10.A.B.1`): where the
    /// nodes reach a server running in the root namespace.
    pub fn bridge_addr(&self) -> Ipv4Addr {
        self.bridge_addr
    }

    pub fn bridge_name(&self) -> &str {
        &self.bridge
    }

    /// The root-side end of node i's veth pair (what `cut` takes down).
    pub fn veth_name(&self, i: usize) -> &str {
        &self.nodes[i].veth
    }

    /// Node i's namespace (for `ip netns exec` / `ip -n`).
    pub fn ns_name(&self, i: usize) -> &str {
        &self.nodes[i].ns
    }

    /// `program` inside node i's namespace (`ip netns exec NS program`,
    /// which execs it: the child's pid is the program's). Add arguments
    /// and spawn as with any `Command`; whatever is still running there
    /// when the lab drops is killed.
    pub fn command(&self, i: usize, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.arg("netns")
            .arg("exec")
            .arg(&self.nodes[i].ns)
            .arg(program);
        c
    }

    /// Runs `f` on a thread of its own that has entered node i's network
    /// namespace: sockets it creates belong to that namespace for good (a
    /// listener bound there, or a client connecting from there), and can be
    /// used from any thread afterwards.
    pub fn in_ns<T: Send>(&self, i: usize, f: impl FnOnce() -> T + Send) -> T {
        let path = Path::new("/run/netns").join(&self.nodes[i].ns);
        let ns =
            std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: setns on a namespace fd this function owns; it
                    // changes only this (scoped, short-lived) thread.
                    let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(
                        r,
                        0,
                        "setns into {}: {}",
                        path.display(),
                        std::io::Error::last_os_error()
                    );
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Partitions node i from the bridge (and so from the root namespace
    /// and every other node): its root-side veth goes down. Packets either
    /// way are dropped silently; see the module comment.
    pub fn cut(&self, i: usize) {
        ip(&["link", "set", &self.nodes[i].veth, "down"]);
    }

    /// Undoes `cut`: the veth goes up again; returns once the bridge port
    /// forwards and both ends report the link up (the node's `eth0` drops
    /// packets until the kernel's link watcher has seen its carrier).
    pub fn heal(&self, i: usize) {
        ip(&["link", "set", &self.nodes[i].veth, "up"]);
        self.wait_linked(i);
    }

    /// Waits until node i's link is up end to end.
    fn wait_linked(&self, i: usize) {
        let node = &self.nodes[i];
        let state = format!("/sys/class/net/{}/brport/state", node.veth);
        let until = Instant::now() + WAIT;
        loop {
            // 3 is BR_STATE_FORWARDING.
            let forwarding = std::fs::read_to_string(&state).is_ok_and(|s| s.trim() == "3");
            let linked = forwarding
                && operstate_up(&["link", "show", "dev", &node.veth])
                && operstate_up(&["link", "show", "dev", &self.bridge])
                && operstate_up(&["-n", &node.ns, "link", "show", "dev", "eth0"]);
            if linked {
                return;
            }
            assert!(
                Instant::now() < until,
                "node {i}'s link ({}) not up after {WAIT:?}",
                node.veth
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The pids of the processes running in node i's namespace.
    pub fn pids(&self, i: usize) -> Vec<u32> {
        ns_pids(&self.nodes[i].ns)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // No panics here (a test that is already failing would abort):
        // what cannot be removed is reported, and the next lab's
        // `remove_leftovers` tries again once this process has exited.
        for node in &self.nodes {
            kill_all_in(&node.ns);
            if let Err(e) = run_ip(&["netns", "del", &node.ns]) {
                eprintln!("netns lab: {e}");
            }
            // Deleting one end deletes the pair. The namespace itself
            // lives on while a socket made in it (`in_ns`) is open, and
            // with it its `eth0`, unless the pair goes now.
            if let Err(e) = run_ip(&["link", "del", &node.veth]) {
                if !e.contains("Cannot find device") {
                    eprintln!("netns lab: {e}");
                }
            }
        }
        if let Err(e) = run_ip(&["link", "del", &self.bridge]) {
            eprintln!("netns lab: {e}");
        }
    }
}

fn operstate_up(args: &[&str]) -> bool {
    run_ip(args).is_ok_and(|out| out.contains("state UP"))
}

/// Kills (SIGKILL) every process in the namespace and waits until none is
/// left there (a killed child of ours that is not reaped yet is a zombie,
/// which belongs to no namespace any more).
fn kill_all_in(ns: &str) {
    let until = Instant::now() + WAIT;
    loop {
        let pids = ns_pids(ns);
        if pids.is_empty() {
            return;
        }
        if Instant::now() >= until {
            eprintln!("netns lab: processes {pids:?} still in {ns} after {WAIT:?}");
            return;
        }
        for pid in pids {
            // SAFETY: kill(2); the pid was in the lab's namespace just now.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ns_pids(ns: &str) -> Vec<u32> {
    run_ip(&["netns", "pids", ns])
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Removes the interfaces and namespaces of labs whose process is gone.
/// Called with the setup lock held.
fn remove_leftovers() {
    remove_labs_where(|pid| !Path::new(&format!("/proc/{pid}")).exists());
}

/// Removes every lab this process made (namespaces with whatever still
/// runs in them, veths, bridges): for a signal handler, where no `Drop`
/// runs.
pub fn remove_own() {
    let me = std::process::id();
    remove_labs_where(|pid| pid == me);
}

fn remove_labs_where(gone: impl Fn(u32) -> bool) {
    for line in run_ip(&["netns", "list"]).unwrap_or_default().lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix("tether-netns-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if gone(pid) {
            kill_all_in(name);
            let _ = run_ip(&["netns", "del", name]);
        }
    }
    for line in run_ip(&["-o", "link", "show"]).unwrap_or_default().lines() {
        // "7: tv123x0x1@if2: <BROADCAST,…"
        let Some(name) = line
            .split(": ")
            .nth(1)
            .map(|n| n.split('@').next().unwrap_or(n))
        else {
            continue;
        };
        let Some(pid) = ["tb", "tv"]
            .iter()
            .find_map(|prefix| name.strip_prefix(prefix))
            .and_then(|rest| rest.split_once('x'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if gone(pid) {
            let _ = run_ip(&["link", "del", name]);
        }
    }
}

/// A /24 in 10.100.0.0–10.199.255.0 that no address or route here
/// overlaps, starting from one derived from the pid and the lab counter
/// (so that parallel test binaries usually start apart; the setup lock
/// makes the check and the taking one step).
fn free_subnet(pid: u32, n: u32) -> (u8, u8) {
    let taken: Vec<(u32, u32)> = [
        run_ip(&["-4", "-o", "addr", "show"]),
        run_ip(&["-4", "route", "show", "table", "all"]),
    ]
    .into_iter()
    .map(|out| out.unwrap_or_else(|e| panic!("{e}")))
    .flat_map(|out| {
        out.split_whitespace()
            .filter_map(parse_prefix)
            .collect::<Vec<_>>()
    })
    .collect();
    const SPAN: u32 = 100 * 256;
    let start = (pid.wrapping_mul(131) + n.wrapping_mul(7919)) % SPAN;
    for k in 0..SPAN {
        let idx = (start + k) % SPAN;
        let (a, b) = ((100 + idx / 256) as u8, (idx % 256) as u8);
        let net = u32::from(Ipv4Addr::new(10, a, b, 0));
        let overlaps = taken.iter().any(|&(addr, len)| {
            let len = len.min(24);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            addr & mask == net & mask
        });
        if !overlaps {
            return (a, b);
        }
    }
    panic!("no free /24 in 10.100.0.0/16–10.199.0.0/16");
}

/// `a.b.c.d` or `a.b.c.d/len` as (address, prefix length).
fn parse_prefix(token: &str) -> Option<(u32, u32)> {
    let (addr, len) = match token.split_once('/') {
        Some((addr, len)) => (addr, len.parse().ok().filter(|l| *l <= 32)?),
        None => (token, 32),
    };
    Some((u32::from(addr.parse::<Ipv4Addr>().ok()?), len))
}

/// `ip ARGS`; panics with its stderr if it fails.
#[track_caller]
fn ip(args: &[&str]) -> String {
    run_ip(args).unwrap_or_else(|e| panic!("{e}"))
}

/// `ip ARGS`, killed after `WAIT`: its stdout, or what went wrong (the
/// command and its stderr).
pub fn run_ip(args: &[&str]) -> Result<String, String> {
    let what = format!("ip {}", args.join(" "));
    let mut child = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    // Read both pipes on threads, so that a large output cannot block it.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let until = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("{what}: {e}"))? {
            break status;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{what}: still running after {WAIT:?}, killed"));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    if status.success() {
        Ok(out)
    } else {
        Err(format!("{what}: {status}: {}", err.trim()))
    }
}
