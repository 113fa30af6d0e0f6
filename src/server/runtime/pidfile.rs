//! The pid file (`server.pid_file`), and `tether upgrade`: signal the
//! gateway whose pid it holds and wait for the new process to write its own.

use std::path::Path;
use std::time::{Duration, Instant};

/// Writes this process's pid to `path` (through a temporary file and a
/// rename, so a reader never sees half of it).
pub fn write(path: &Path) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{}\n", std::process::id()))?;
    std::fs::rename(&tmp, path)
}

/// Removes `path` if it still names this process (after an upgrade it
/// names the new one, which must find it there).
pub fn remove_if_mine(path: &Path) {
    if read(path) == Some(std::process::id()) {
        let _ = std::fs::remove_file(path);
    }
}

pub fn read(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn is_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

/// Sends SIGUSR2 to the gateway `pid`; with a pid file, waits until it
/// names another live process (the new one writes it once it holds every
/// connection; the old one exits when it holds nothing), within `timeout`.
/// Returns the new pid.
pub fn upgrade(
    pid: u32,
    pid_file: Option<&Path>,
    timeout: Duration,
) -> Result<Option<u32>, String> {
    // SAFETY: kill with a plain signal number has no memory effects.
    if unsafe { libc::kill(pid as libc::pid_t, libc::SIGUSR2) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!("cannot signal pid {pid}: {e}"));
    }
    let Some(file) = pid_file else {
        return Ok(None);
    };
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match read(file) {
            Some(new) if new != pid && is_alive(new) => return Ok(Some(new)),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    Err(format!(
        "the gateway (pid {pid}) did not hand over to a new process within {timeout:?}: its log says why (it keeps serving)"
    ))
}
