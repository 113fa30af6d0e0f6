//! The running process's side of an upgrade (on its signal thread).
//!
//! Nothing is stopped until the new binary has taken the listeners and
//! started its workers: if it cannot (it is missing, its config is invalid,
//! it crashes), the upgrade fails with the reason and this process serves
//! on as if nothing happened.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::info;

use super::channel::{self, Channel};
use super::{Export, UPGRADE_FD_ENV};
use crate::handover::Note;
use crate::server::runtime::shutdown::ShutdownSignal;

/// How long the new process may take to start its workers.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long it may take to take the connections once they are all sent.
const TAKE_TIMEOUT: Duration = Duration::from_secs(120);
/// The descriptor number the new process finds its channel end at.
const CHILD_FD: i32 = 3;

/// The binary to start and its arguments (those this process started with).
#[derive(Debug, Clone)]
pub struct NewBinary {
    pub exe: PathBuf,
    pub args: Vec<OsString>,
}

/// What a gateway needs to hand itself over (see [`crate::Gateway::upgrader`]).
#[derive(Clone)]
pub struct Upgrader {
    /// Copies of the listening sockets: client ×`split.0`, runner ×`split.1`,
    /// admin. Emptied when the gateway stops (so the ports close with it).
    pub(crate) listeners: Arc<Mutex<Vec<OwnedFd>>>,
    pub(crate) split: (u32, u32),
    pub(crate) signal: Arc<ShutdownSignal>,
    pub(crate) exports: Arc<Mutex<Option<Receiver<Export>>>>,
    pub(crate) workers: usize,
}

/// Why an upgrade did not complete.
#[derive(Debug)]
pub enum UpgradeError {
    /// Before anything was handed over: this process serves on.
    NotStarted(String),
    /// After the hand-over began (the new process failed meanwhile): this
    /// process has stopped its actors and given its connections away, and
    /// must exit with a failure so that the service manager restarts it.
    Broken(String),
}

impl std::fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpgradeError::NotStarted(e) => write!(f, "{e}; this process goes on serving"),
            UpgradeError::Broken(e) => {
                write!(f, "{e}; the hand-over broke off: this process exits")
            }
        }
    }
}

/// A completed upgrade.
#[derive(Debug)]
pub struct Upgraded {
    pub pid: u32,
    pub connections: u64,
}

impl Upgrader {
    /// Starts `binary` and hands everything over to it. On an error before
    /// the hand-over began, this process goes on serving (the error says so).
    pub fn upgrade(&self, binary: &NewBinary) -> Result<Upgraded, UpgradeError> {
        let exports = self.take_exports()?;
        let started = self.start_new(binary);
        let (channel, child) = match started {
            Ok(started) => started,
            Err(e) => {
                // Nothing was stopped: the next SIGUSR2 may try again.
                *self.exports.lock().unwrap_or_else(|e| e.into_inner()) = Some(exports);
                return Err(UpgradeError::NotStarted(e));
            }
        };
        self.signal.trigger();
        let finish = || {
            let connections = forward(&channel, &exports, self.workers)?;
            channel
                .send(&Note::Done { conns: connections }, &[])
                .map_err(|e| format!("upgrade: {e}"))?;
            let _ = channel.set_timeout(Some(TAKE_TIMEOUT));
            expect(&channel, Note::Taken)?;
            Ok(connections)
        };
        match finish() {
            Ok(connections) => Ok(Upgraded {
                pid: child.id(),
                connections,
            }),
            Err(e) => Err(UpgradeError::Broken(e)),
        }
    }

    fn take_exports(&self) -> Result<Receiver<Export>, UpgradeError> {
        let mut slot = self.exports.lock().unwrap_or_else(|e| e.into_inner());
        let busy = || UpgradeError::NotStarted("an upgrade is already under way".into());
        slot.take().ok_or_else(busy)
    }

    /// Starts the new binary, sends it the listeners and waits until its
    /// workers run; a child that does not get there is killed.
    fn start_new(&self, binary: &NewBinary) -> Result<(Channel, Child), String> {
        let (channel, theirs) = channel::pair().map_err(|e| format!("upgrade channel: {e}"))?;
        let mut child = spawn(binary, theirs)?;
        info!(pid = child.id(), exe = %binary.exe.display(), "upgrade: new process started");
        match self.send_listeners(&channel) {
            Ok(()) => Ok((channel, child)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// Sends the listeners and waits until the new process's workers run.
    fn send_listeners(&self, channel: &Channel) -> Result<(), String> {
        channel
            .set_timeout(Some(START_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let (client, runner) = self.split;
        let listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        if listeners.is_empty() {
            return Err("the gateway is stopping".into());
        }
        let fds: Vec<i32> = listeners.iter().map(AsRawFd::as_raw_fd).collect();
        channel
            .send(&Note::Listeners { client, runner }, &fds)
            .map_err(|e| format!("cannot send the listeners: {e}"))?;
        expect(channel, Note::Ready)
    }
}

fn spawn(binary: &NewBinary, theirs: OwnedFd) -> Result<Child, String> {
    let raw = theirs.as_raw_fd();
    let mut command = Command::new(&binary.exe);
    command
        .args(&binary.args)
        .env(UPGRADE_FD_ENV, CHILD_FD.to_string());
    // SAFETY: between fork and exec only async-signal-safe calls (dup2,
    // fcntl, close_range, getrlimit).
    unsafe {
        command.pre_exec(move || {
            if raw == CHILD_FD {
                let flags = libc::fcntl(raw, libc::F_GETFD);
                libc::fcntl(raw, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else if libc::dup2(raw, CHILD_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            close_inherited_descriptors();
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.exe.display()))?;
    // Ours closed: if the child dies, reading the channel ends at once.
    drop(theirs);
    Ok(child)
}

/// In the child, before exec: marks every descriptor above the channel's
/// close-on-exec. Sockets monoio accepts through io_uring are not, so the
/// new binary would otherwise hold a second copy of each (its peer would
/// never see a FIN from a connection the new process closes). Marked, not
/// closed: std reports a failed exec through a pipe of its own among them.
///
/// # Safety
/// Only between fork and exec.
unsafe fn close_inherited_descriptors() {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    let first = (CHILD_FD + 1) as libc::c_uint;
    let all = libc::c_uint::MAX;
    if libc::syscall(libc::SYS_close_range, first, all, CLOSE_RANGE_CLOEXEC) == 0 {
        return;
    }
    // Kernels before 5.11: one by one, up to the descriptor limit.
    let mut limit: libc::rlimit = std::mem::zeroed();
    let highest = match libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) {
        0 => limit.rlim_cur.min(1 << 20) as libc::c_int,
        _ => 1 << 16,
    };
    for fd in first as libc::c_int..highest {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}

fn expect(channel: &Channel, want: Note) -> Result<(), String> {
    match channel.receive() {
        Ok((note, _)) if note == want => Ok(()),
        Ok((note, _)) => Err(format!("upgrade: expected {want:?}, got {note:?}")),
        Err(e) => Err(format!("upgrade: the new process did not answer: {e}")),
    }
}

/// Sends every connection the workers hand over; returns how many.
fn forward(channel: &Channel, exports: &Receiver<Export>, workers: usize) -> Result<u64, String> {
    let (mut done, mut sent) = (0, 0u64);
    while done < workers {
        match exports.recv() {
            Ok(Export::Conn(record, fd)) => {
                let note = Note::Conn(record);
                let fds: Vec<i32> = fd.iter().map(AsRawFd::as_raw_fd).collect();
                channel
                    .send(&note, &fds)
                    .map_err(|e| format!("upgrade: cannot send a connection: {e}"))?;
                sent += 1;
            }
            Ok(Export::WorkerDone) => done += 1,
            Err(_) => return Err("upgrade: a worker ended before handing over".into()),
        }
    }
    Ok(sent)
}
