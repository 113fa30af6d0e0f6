//! SIGINT/SIGTERM (stop), SIGHUP (reload) and SIGUSR2 (upgrade) delivered synchronously to
//! one thread.
//!
//! The signals are blocked before any worker starts (threads inherit the
//! mask), so only the thread calling `wait` ever sees them.

use std::io;

pub struct TerminationSignals {
    set: libc::sigset_t,
}

/// Blocks SIGINT, SIGTERM, SIGHUP and SIGUSR2 in the calling thread and
/// all it spawns afterwards.
pub fn block_termination_signals() -> io::Result<TerminationSignals> {
    // SAFETY: sigset_t is plain data initialised by sigemptyset before use;
    // pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(TerminationSignals { set })
    }
}

impl TerminationSignals {
    /// Blocks until SIGINT, SIGTERM, SIGHUP or SIGUSR2 arrives; returns its number.
    pub fn wait(&self) -> i32 {
        loop {
            let mut sig = 0;
            // SAFETY: `self.set` is a valid, initialised signal set.
            if unsafe { libc::sigwait(&self.set, &mut sig) } == 0 {
                return sig;
            }
        }
    }

    /// Like `wait`, but gives up after `timeout` (`None`).
    pub fn wait_timeout(&self, timeout: std::time::Duration) -> Option<i32> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `self.set` is a valid signal set; a null siginfo is allowed.
        let sig = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) };
        (sig > 0).then_some(sig)
    }
}
