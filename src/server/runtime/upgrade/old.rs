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

/// A completed upgrade.
#[derive(Debug)]
pub struct Upgraded {
    pub pid: u32,
    pub connections: u64,
}

impl Upgrader {
    /// Starts `binary` and hands everything over to it. On an error before
    /// the hand-over began, this process goes on serving (the error says so).
    pub fn upgrade(&self, binary: &NewBinary) -> Result<Upgraded, String> {
        let exports = self.take_exports()?;
        let (channel, theirs) = channel::pair().map_err(|e| format!("upgrade channel: {e}"))?;
        let mut child = spawn(binary, theirs)?;
        info!(pid = child.id(), exe = %binary.exe.display(), "upgrade: new process started");
        if let Err(e) = self.start_new(&channel) {
            let _ = child.kill();
            let _ = child.wait();
            *self.exports.lock().unwrap_or_else(|e| e.into_inner()) = Some(exports);
            return Err(format!("{e}; this process goes on serving"));
        }
        self.signal.trigger();
        let connections = forward(&channel, &exports, self.workers)?;
        channel
            .send(&Note::Done { conns: connections }, &[])
            .map_err(|e| format!("upgrade: {e}"))?;
        let _ = channel.set_timeout(Some(TAKE_TIMEOUT));
        expect(&channel, Note::Taken)?;
        Ok(Upgraded {
            pid: child.id(),
            connections,
        })
    }

    fn take_exports(&self) -> Result<Receiver<Export>, String> {
        let mut slot = self.exports.lock().unwrap_or_else(|e| e.into_inner());
        slot.take()
            .ok_or_else(|| "an upgrade is already under way".to_string())
    }

    /// Sends the listeners and waits until the new process's workers run.
    fn start_new(&self, channel: &Channel) -> Result<(), String> {
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
    // SAFETY: between fork and exec only async-signal-safe calls (dup2, fcntl).
    unsafe {
        command.pre_exec(move || {
            if raw == CHILD_FD {
                let flags = libc::fcntl(raw, libc::F_GETFD);
                libc::fcntl(raw, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else if libc::dup2(raw, CHILD_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
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
                channel
                    .send(&note, &[fd.as_raw_fd()])
                    .map_err(|e| format!("upgrade: cannot send a connection: {e}"))?;
                sent += 1;
            }
            Ok(Export::WorkerDone) => done += 1,
            Err(_) => return Err("upgrade: a worker ended before handing over".into()),
        }
    }
    Ok(sent)
}
