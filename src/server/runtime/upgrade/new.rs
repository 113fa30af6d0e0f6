//! The new process's side of an upgrade (on its main thread): take the
//! listeners, start the workers on them, then receive the connections and
//! give each to its actor's home worker.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, warn};

use super::channel::Channel;
use super::{Inherited, UPGRADE_FD_ENV};
use crate::config::Config;
use crate::handover::Note;
use crate::http::route::ActorPath;
use crate::server::actors::home_worker;
use crate::server::runtime::handoff::HandoffQueues;
use crate::server::runtime::Gateway;

/// How long the old process may take to send the listeners.
const LISTENERS_TIMEOUT: Duration = Duration::from_secs(30);
/// How long it may pause between two connections (it stops its actors
/// first: up to `actors.stop_timeout`).
const CONNS_TIMEOUT: Duration = Duration::from_secs(120);
/// Connections waiting for each worker (the sender waits when it is full).
const INBOX: usize = 4096;

/// A process started as the new one of an upgrade.
pub struct Inheriting {
    channel: Channel,
}

/// The new process's workers run; the connections are still to come.
pub struct TakingOver {
    channel: Channel,
    inbox: Arc<HandoffQueues<Inherited>>,
    workers: usize,
}

impl Inheriting {
    /// `Some` when this process was started by an upgrade.
    pub fn from_env() -> Option<Result<Inheriting, String>> {
        let value = std::env::var(UPGRADE_FD_ENV).ok()?;
        // Not passed on to a later upgrade's child by accident.
        std::env::remove_var(UPGRADE_FD_ENV);
        adopt_watchdog();
        Some(channel_end(&value).map(|channel| Inheriting { channel }))
    }

    /// Takes the old process's listeners and starts the workers on them.
    pub fn start(self, config: Config) -> Result<(Gateway, TakingOver), String> {
        let _ = self.channel.set_timeout(Some(LISTENERS_TIMEOUT));
        let (note, fds) = self
            .channel
            .receive()
            .map_err(|e| format!("upgrade: {e}"))?;
        let Note::Listeners { client, runner } = note else {
            return Err(format!("upgrade: expected the listeners, got {note:?}"));
        };
        let workers = config.worker_count();
        if client as usize != workers || runner as usize != workers {
            return Err(format!(
                "upgrade: the running gateway has {client} workers, this configuration {workers}: restart instead"
            ));
        }
        let inbox = Arc::new(HandoffQueues::new(workers, INBOX));
        let gateway = Gateway::start_inheriting(config, fds, (client, runner), inbox.clone())?;
        let taking = TakingOver {
            channel: self.channel,
            inbox,
            workers,
        };
        Ok((gateway, taking))
    }
}

/// systemd watches the old process (`WATCHDOG_PID`, our parent): once this
/// one takes over (and says MAINPID), it must be the one feeding the
/// watchdog. Called before any other thread runs.
fn adopt_watchdog() {
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() } as u32;
    let watched = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse().ok());
    if watched == Some(parent) {
        std::env::set_var("WATCHDOG_PID", std::process::id().to_string());
    }
}

fn channel_end(value: &str) -> Result<Channel, String> {
    let fd: i32 = value
        .parse()
        .ok()
        .filter(|fd| *fd > 2)
        .ok_or_else(|| format!("{UPGRADE_FD_ENV}={value:?} is not a descriptor"))?;
    // SAFETY: fcntl only queries/sets flags of `fd`; from_raw_fd takes the
    // descriptor the old process passed for this purpose (checked open).
    unsafe {
        if libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) != 0 {
            return Err(format!("{UPGRADE_FD_ENV}={fd} is not open"));
        }
        Ok(Channel::from_fd(OwnedFd::from_raw_fd(fd)))
    }
}

impl TakingOver {
    /// Tells the old process to send the connections, and gives each to its
    /// home worker; then every worker wakes what was awake and starts
    /// accepting. Returns how many connections came.
    pub fn receive_connections(self) -> u64 {
        let mut received = 0;
        let result = self.receive_all(&mut received);
        // Even after a failure, the workers serve what came: the old
        // process has given those connections away.
        for worker in 0..self.workers {
            self.deliver(worker, Inherited::Done);
        }
        match result {
            Ok(()) => {
                if let Err(e) = self.channel.send(&Note::Taken, &[]) {
                    warn!(error = %e, "upgrade: cannot tell the old process we are done");
                }
                info!(
                    connections = received,
                    "upgrade: every connection taken over"
                );
            }
            Err(e) => {
                error!(
                    connections = received,
                    "{e}; serving the connections that came"
                )
            }
        }
        received
    }

    fn receive_all(&self, received: &mut u64) -> Result<(), String> {
        self.channel
            .send(&Note::Ready, &[])
            .map_err(|e| format!("upgrade: {e}"))?;
        let _ = self.channel.set_timeout(Some(CONNS_TIMEOUT));
        loop {
            let (note, fds) = self
                .channel
                .receive()
                .map_err(|e| format!("upgrade: {e}"))?;
            match note {
                Note::Conn(record) => {
                    // The channel checked that it has its socket, unless closed.
                    let fd = fds.into_iter().next();
                    let path = ActorPath {
                        ns: record.ns.clone(),
                        name: record.name.clone(),
                        key: record.key.clone(),
                        query: None,
                    };
                    let home = home_worker(&path, self.workers);
                    self.deliver(home, Inherited::Conn(record, fd));
                    *received += 1;
                }
                Note::Done { conns } if conns == *received => return Ok(()),
                Note::Done { conns } => {
                    return Err(format!(
                        "upgrade: {conns} connections announced, {received} came"
                    ))
                }
                other => return Err(format!("upgrade: unexpected {other:?}")),
            }
        }
    }

    /// Waits while the worker's inbox is full (it empties as it adopts).
    fn deliver(&self, worker: usize, mut item: Inherited) {
        while let Err(back) = self.inbox.send(worker, item) {
            item = back;
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
