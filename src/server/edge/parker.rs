//! Parking hibernated connections: no task, no buffer, no timer.
//!
//! A connection whose actor sleeps needs only its socket watched. Its session
//! task ends and hands the socket, its small session state and its registry
//! entry to the worker's parker, which arms a one-shot `PollAdd` on a
//! dedicated io_uring ring (the slot index and a generation in `user_data`).
//! The ring signals an eventfd that one parker task per worker awaits.
//! A parked connection is woken back into a session task when
//! - its socket becomes readable (a ping, a message, a close, EOF), or
//! - its `ConnControl` is woken (a published message, a close request, the
//!   keepalive sweep): the control reports the parked slot's token to the
//!   worker's `Wakeups`, which wakes the parker, and the parker cancels the
//!   poll.
//!
//! Memory per parked connection: a 48-byte slab slot with the session state
//! instead of a task, a pending monoio operation and a monoio socket object
//! (see bench/README.md for the figures).

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use io_uring::{opcode, types, IoUring};
use slab::Slab;
use tracing::warn;

use super::session::ClientRole;
use super::EdgeSide;
use crate::server::conn::registry::{Dormant, Registration};
use crate::server::conn::session::Session;
use crate::server::conn::stats::WorkerStats;
use crate::server::conn::stream::{attach_fd, Detached, Stream, TlsConn};
use crate::server::conn::wakeups::Wakeups;
use crate::ws::keepalive::{Keepalive, PackedKeepalive};
use monoio::net::TcpStream;

/// Entries of each worker's parking ring (completions beyond it overflow
/// and are drained explicitly, see `completions`).
const RING_ENTRIES: u32 = 1024;

struct Parked {
    /// The socket and its TLS session, if any.
    stream: Detached,
    /// Resumed because the socket is readable: read before parking again.
    readable: bool,
    role: ClientRole,
    keepalive: Keepalive,
    registration: Dormant,
}

/// A parked connection as the slab keeps it, in the slab's own array (no
/// allocation of its own): 48 bytes, the slab's vacancy marker included
/// (it lives in the descriptor's niche).
struct Kept {
    fd: OwnedFd,
    generation: u32,
    registration: Dormant,
    /// Its TLS session's key in `Parker::tls`, plus one (0: plain).
    tls: u32,
    role: ClientRole,
    /// Relative to the parker's epoch.
    keepalive: PackedKeepalive,
}

/// Parked connections of one worker.
pub(crate) struct Parker {
    ring: RefCell<IoUring>,
    slots: RefCell<Slab<Kept>>,
    /// TLS sessions of parked connections (boxed already while active).
    tls: RefCell<Slab<Box<TlsConn>>>,
    next_generation: Cell<u32>,
    /// What parked keepalive instants are counted from.
    epoch: Instant,
    /// Signalled by the ring on every completion.
    eventfd: OwnedFd,
    /// Where woken parked connections are reported.
    wakeups: Rc<Wakeups>,
    stats: Arc<WorkerStats>,
}

fn user_data(key: usize, generation: u32) -> u64 {
    ((generation as u64) << 32) | key as u64
}

impl Parker {
    pub fn new(wakeups: Rc<Wakeups>, stats: Arc<WorkerStats>) -> io::Result<Rc<Parker>> {
        let ring = IoUring::new(RING_ENTRIES)?;
        // SAFETY: eventfd has no memory preconditions; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor we own.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        ring.submitter().register_eventfd(eventfd.as_raw_fd())?;
        Ok(Rc::new(Parker {
            ring: RefCell::new(ring),
            slots: RefCell::new(Slab::new()),
            tls: RefCell::new(Slab::new()),
            next_generation: Cell::new(1),
            epoch: Instant::now(),
            eventfd,
            wakeups,
            stats,
        }))
    }

    /// Takes over an idle session. If the socket cannot be watched, the
    /// session simply goes on as a task.
    pub fn park(
        self: &Rc<Self>,
        stream: Stream,
        session: Session<ClientRole>,
        registration: Registration,
    ) {
        let generation = self.next_generation.get();
        self.next_generation.set(generation.wrapping_add(1).max(1));
        let detached = match stream.detach() {
            Ok(d) => d,
            Err(stream) => {
                monoio::spawn(session.run(stream, BytesMut::new(), registration));
                return;
            }
        };
        let mut slots = self.slots.borrow_mut();
        let entry = slots.vacant_entry();
        let key = entry.key();
        let poll = opcode::PollAdd::new(
            types::Fd(detached.fd.as_raw_fd()),
            (libc::POLLIN | libc::POLLRDHUP) as u32,
        )
        .build()
        .user_data(user_data(key, generation));
        let mut ring = self.ring.borrow_mut();
        // SAFETY: the fd stays open (owned by the slot) until the poll completes or is cancelled.
        let pushed = unsafe { ring.submission().push(&poll) }.is_ok() || {
            let _ = ring.submit();
            unsafe { ring.submission().push(&poll) }.is_ok()
        };
        if !pushed || ring.submit().is_err() {
            warn!("cannot arm a poll on the parking ring: the connection keeps its task");
            if let Ok(stream) = Stream::attach(detached) {
                monoio::spawn(session.run(stream, BytesMut::new(), registration));
            }
            return;
        }
        registration.control.park_at(user_data(key, generation));
        let (role, keepalive) = session.into_parts();
        let Detached { fd, tls } = detached;
        let tls = tls.map_or(0, |t| self.tls.borrow_mut().insert(t) as u32 + 1);
        entry.insert(Kept {
            fd,
            generation,
            registration: registration.into_dormant(),
            tls,
            role,
            keepalive: keepalive.pack(self.epoch),
        });
        self.stats.parked.fetch_add(1, Ordering::Relaxed);
    }

    fn take(&self, token: u64) -> Option<Parked> {
        let key = (token & 0xFFFF_FFFF) as usize;
        let generation = (token >> 32) as u32;
        let mut slots = self.slots.borrow_mut();
        if slots.get(key).is_some_and(|k| k.generation == generation) {
            self.stats.parked.fetch_sub(1, Ordering::Relaxed);
            Some(self.release(slots.remove(key)))
        } else {
            None // a stale completion of an earlier parking
        }
    }

    fn release(&self, k: Kept) -> Parked {
        let tls = (k.tls != 0).then(|| self.tls.borrow_mut().remove(k.tls as usize - 1));
        Parked {
            stream: Detached { fd: k.fd, tls },
            readable: false,
            role: k.role,
            keepalive: Keepalive::unpack(k.keepalive, self.epoch),
            registration: k.registration,
        }
    }

    /// Starts the parker task. The eventfd's watch is made here, before
    /// the worker reports ready, so that a ready worker opens no more
    /// descriptors of its own.
    pub fn start(self: Rc<Self>, edge: Rc<EdgeSide>) {
        // The eventfd as a monoio socket, only to await its readability.
        match self.eventfd.try_clone().and_then(attach_fd) {
            Ok(watch) => {
                monoio::spawn(self.run(edge, watch));
            }
            Err(e) => {
                warn!(error = %e, "cannot watch the parking ring; hibernated sockets keep their tasks")
            }
        }
    }

    /// The parker task: turns readiness and wake-ups back into session tasks.
    async fn run(self: Rc<Self>, edge: Rc<EdgeSide>, watch: TcpStream) {
        loop {
            let readable = watch.readable(false);
            let unparked = self.wakeups.unparked();
            monoio::select! {
                _ = readable => {
                    let mut counter = [0u8; 8];
                    // SAFETY: reading 8 bytes into an 8-byte buffer from our nonblocking eventfd.
                    unsafe { libc::read(self.eventfd.as_raw_fd(), counter.as_mut_ptr().cast(), 8) };
                }
                _ = unparked => {}
            }
            for token in self.completions() {
                if let Some(mut p) = self.take(token) {
                    p.readable = true;
                    resume(&edge, p);
                }
            }
            let woken = self.wakeups.take_unparked();
            let mut cancels = Vec::with_capacity(woken.len());
            for token in woken {
                if let Some(p) = self.take(token) {
                    cancels.push(token);
                    resume(&edge, p);
                }
            }
            self.cancel_polls(&cancels);
        }
    }

    /// Every completion, including those the kernel kept aside when the
    /// completion queue overflowed: those do not signal the eventfd again,
    /// so they are flushed (a GETEVENTS enter) and drained here, or a
    /// readable socket would stay parked for good.
    fn completions(&self) -> Vec<u64> {
        let mut ring = self.ring.borrow_mut();
        let mut tokens = Vec::new();
        loop {
            tokens.extend(ring.completion().map(|c| c.user_data()));
            if !ring.submission().cq_overflow() {
                return tokens;
            }
            let _ = ring.submit();
        }
    }

    /// Cancels the polls of connections unparked by a wake-up, in one submission.
    fn cancel_polls(&self, tokens: &[u64]) {
        let mut ring = self.ring.borrow_mut();
        for &token in tokens {
            let cancel = opcode::AsyncCancel::new(token).build().user_data(u64::MAX);
            // SAFETY: AsyncCancel references no memory.
            while unsafe { ring.submission().push(&cancel) }.is_err() {
                if ring.submit().is_err() {
                    return; // a stale completion later is harmless
                }
            }
        }
        if !tokens.is_empty() {
            let _ = ring.submit();
        }
    }
}

/// Gives a parked connection a session task again.
fn resume(edge: &Rc<EdgeSide>, p: Parked) {
    let registration = edge.env.registry.wake(p.registration);
    registration.control.unparked();
    let session = Session::resume(edge.clone(), p.role, p.keepalive, p.readable);
    match Stream::attach(p.stream) {
        Ok(stream) => {
            monoio::spawn(session.run(stream, BytesMut::new(), registration));
        }
        Err(e) => warn!(error = %e, "cannot resume a parked connection"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parked connection is its slab entry (bench: `hibernate`), and a
    /// TLS one its session besides, boxed as it was while active.
    #[test]
    fn a_parked_slot_stays_small() {
        // The slab's own entry type, which is private.
        #[allow(dead_code)]
        enum Entry {
            Vacant(usize),
            Occupied(Kept),
        }
        let entry = std::mem::size_of::<Entry>();
        assert_eq!(entry, 48, "a parked slot grew to {entry} bytes");
    }
}
