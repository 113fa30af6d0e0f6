//! Upgrading the gateway without dropping a WebSocket (SIGUSR2, `tether
//! upgrade`): the running process starts the new binary and hands it its
//! listening sockets and every client connection over a Unix socket
//! (docs/ARCHITECTURE.md, "Upgrade").
//!
//! - `old.rs`: the running process's side, on its signal thread: start the
//!   new binary, send the listeners, wait until it is up, then have every
//!   worker hand its connections over (`hand_over.rs`) and send them on.
//! - `new.rs`: the new process's side, on its main thread: take the
//!   listeners, start the workers, receive the connections and give each to
//!   its actor's home worker (`take_over.rs`), then start accepting.
//! - `channel.rs`: the Unix socket, notes beside descriptors (SCM_RIGHTS).

mod channel;
pub(crate) mod hand_over;
pub mod new;
pub mod old;
pub(crate) mod take_over;

use std::os::fd::OwnedFd;

use crate::handover::ConnRecord;

/// The environment variable that tells a process it is the new one of an
/// upgrade, and which descriptor is its end of the channel.
pub const UPGRADE_FD_ENV: &str = "TETHER_UPGRADE_FD";

/// What a worker of the old process sends on during an upgrade.
pub(crate) enum Export {
    /// A connection and its socket (none for one its client closed).
    Conn(Box<ConnRecord>, Option<OwnedFd>),
    /// The worker handed over everything it had.
    WorkerDone,
}

/// What a worker of the new process receives during an upgrade.
pub(crate) enum Inherited {
    Conn(Box<ConnRecord>, Option<OwnedFd>),
    /// Every connection is in: wake what was awake, start accepting.
    Done,
}
