//! systemd's notify protocol (`sd_notify(3)`): datagrams to
//! `$NOTIFY_SOCKET` saying READY=1 once every worker listens, STATUS=…
//! lines, STOPPING=1 when the drain begins, and WATCHDOG=1 only while
//! every worker's loop is turning (`$WATCHDOG_USEC`): a stuck worker stops
//! the feed, and systemd restarts the service.
//!
//! Without `$NOTIFY_SOCKET` (not under systemd, or `Type=` not notify)
//! nothing is sent and no thread is started.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::server::conn::admission::Admission;
use crate::server::conn::stats::WorkerStats;

/// A connection to systemd's notify socket.
pub struct Notifier {
    socket: UnixDatagram,
    to: SocketAddr,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` names, if any (a path, or `@name` for
    /// an abstract socket).
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let path = path.to_str()?;
        let to = match path.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name.as_bytes()).ok()?
            }
            None => SocketAddr::from_pathname(path).ok()?,
        };
        let socket = UnixDatagram::unbound().ok()?;
        Some(Notifier { socket, to })
    }

    /// Sends `state` (newline-separated `KEY=value` lines).
    pub fn send(&self, state: &str) -> io::Result<()> {
        self.socket
            .send_to_addr(state.as_bytes(), &self.to)
            .map(|_| ())
    }
}

/// How often systemd wants to hear WATCHDOG=1 (`$WATCHDOG_USEC`), if it
/// watches this process (`$WATCHDOG_PID`, when set, names it).
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        if pid.to_str()?.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Decides whether the watchdog may be fed: every worker's loop must have
/// turned (its heartbeat counter moved) since the last check. Sans IO.
pub struct Watchdog {
    seen: Vec<u64>,
}

impl Watchdog {
    pub fn new(workers: usize) -> Watchdog {
        Watchdog {
            seen: vec![0; workers],
        }
    }

    /// True if every heartbeat advanced since the previous call.
    pub fn all_turning(&mut self, heartbeats: impl Iterator<Item = u64>) -> bool {
        let mut all = true;
        for (seen, now) in self.seen.iter_mut().zip(heartbeats) {
            all &= now != *seen;
            *seen = now;
        }
        all
    }
}

/// What the watchdog and STATUS lines read of a running gateway.
#[derive(Clone)]
pub struct Vitals {
    pub(super) stats: Vec<Arc<WorkerStats>>,
    pub(super) admission: Arc<Admission>,
}

impl Vitals {
    pub fn workers(&self) -> usize {
        self.stats.len()
    }

    /// Each worker's heartbeat count.
    pub fn heartbeats(&self) -> impl Iterator<Item = u64> + '_ {
        self.stats
            .iter()
            .map(|s| s.heartbeats.load(Ordering::Relaxed))
    }

    /// A `STATUS=` line: what an operator sees in `systemctl status`.
    pub fn status_line(&self) -> String {
        let sum = |f: fn(&WorkerStats) -> &AtomicU64| -> u64 {
            self.stats
                .iter()
                .map(|s| f(s).load(Ordering::Relaxed))
                .sum()
        };
        let (hibernated, tunnels) = (sum(|s| &s.parked), sum(|s| &s.tunnels));
        let connections = self.admission.open();
        format!(
            "STATUS=connections {connections}, hibernated {hibernated}, runner tunnels {tunnels}"
        )
    }
}

/// How often a worker counts a heartbeat when systemd watches it: often
/// enough that a check every half watchdog interval sees each one move.
pub fn heartbeat_period(watchdog: Duration) -> Duration {
    (watchdog / 4).min(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_whose_loop_stopped_stops_the_feed() {
        let mut dog = Watchdog::new(2);
        assert!(
            dog.all_turning([1, 1].into_iter()),
            "both turned since start"
        );
        assert!(dog.all_turning([2, 5].into_iter()));
        assert!(!dog.all_turning([3, 5].into_iter()), "worker 1 is stuck");
        assert!(!dog.all_turning([3, 6].into_iter()), "now worker 0 is");
        assert!(dog.all_turning([4, 7].into_iter()), "both turn again");
    }
}
