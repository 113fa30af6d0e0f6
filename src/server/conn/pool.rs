//! Per-worker pool of IO buffers, lent only while bytes are in flight.
//!
//! An idle connection holds no buffer at all: it waits for readability, then
//! borrows one, and gives it back as soon as everything in it is consumed.
//!
//! Two sizes: most messages are small, so a read or an outbox starts with a
//! small buffer and moves to a large one only when the bytes need it (a
//! read that filled its buffer, frames that outgrow it). A 16 KiB buffer
//! holding one 70-byte frame still costs a resident page per connection in
//! flight; small ones share pages. Buffers idle for a whole quiet period
//! are freed by the worker's sweep (`trim`).

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::shelf::Shelf;

/// Size of the small buffers (or `read_buffer_bytes`, if that is smaller):
/// a few dozen small frames, an HTTP request head, a handshake reply.
pub(crate) const SMALL_BUFFER_BYTES: usize = 2048;

/// Buffers idle for this long (unused for a whole period) are freed.
pub(crate) const QUIET_PERIOD: Duration = Duration::from_secs(2);

/// Buffers of each size kept through a quiet period, for the next burst.
const KEPT_WHEN_QUIET: usize = 4;

pub(crate) struct BufferPool {
    small: RefCell<Shelf>,
    large: RefCell<Shelf>,
    last_trim: Cell<Instant>,
}

impl BufferPool {
    /// `large_bytes`: the large size (`client.read_buffer_bytes`);
    /// `max_idle`: buffers of each size kept for reuse at most.
    pub fn new(large_bytes: usize, max_idle: usize) -> Self {
        let small_bytes = SMALL_BUFFER_BYTES.min(large_bytes);
        Self {
            small: RefCell::new(Shelf::new(small_bytes, max_idle)),
            large: RefCell::new(Shelf::new(large_bytes, max_idle)),
            last_trim: Cell::new(Instant::now()),
        }
    }

    pub fn small_bytes(&self) -> usize {
        self.small.borrow().bytes()
    }

    pub fn large_bytes(&self) -> usize {
        self.large.borrow().bytes()
    }

    /// A small buffer (grown by `make_room` when needed).
    pub fn take(&self) -> BytesMut {
        self.small.borrow_mut().take()
    }

    fn take_large(&self) -> BytesMut {
        self.large.borrow_mut().take()
    }

    /// How much the next read asks for: a large buffer's worth only while
    /// reads bring that much (`big_reads`, see `reads_big`).
    pub fn read_room(&self, big_reads: bool) -> usize {
        if big_reads {
            self.large_bytes()
        } else {
            self.small_bytes()
        }
    }

    /// Whether reads should go on asking for a large buffer, after one that
    /// asked for `room` bytes brought `got`: yes when it (nearly) filled a
    /// small buffer's worth, so a stream of big messages is not read in
    /// small pieces, and no as soon as a read brings less. "Nearly": over
    /// TLS `got` is plaintext, a little less than what was read.
    pub fn reads_big(&self, room: usize, got: usize) -> bool {
        let small = self.small_bytes().min(room);
        got >= small - small / 8
    }

    /// Makes `buf` hold at least `room` free bytes: an empty buffer is
    /// swapped for a pooled one of the size that fits; bytes that outgrow
    /// a small buffer move to a pooled large one (a copy of at most a small
    /// buffer, instead of an allocation); anything bigger grows in place.
    pub fn make_room(&self, buf: &mut BytesMut, room: usize) {
        if buf.capacity() - buf.len() >= room {
            return;
        }
        let large = self.large_bytes();
        if buf.is_empty() && room <= large {
            let fresh = if room <= self.small_bytes() {
                self.take()
            } else {
                self.take_large()
            };
            self.give_back(std::mem::replace(buf, fresh));
        } else if buf.len() + room <= large && buf.capacity() < large {
            let mut fresh = self.take_large();
            fresh.extend_from_slice(buf);
            let mut old = std::mem::replace(buf, fresh);
            old.clear();
            self.give_back(old);
        }
        if buf.capacity() - buf.len() < room {
            buf.reserve(room);
        }
    }

    /// Keeps `buf` for reuse if it is empty, of one of the two sizes (or
    /// a little more) and the pool has room for it.
    pub fn give_back(&self, mut buf: BytesMut) {
        if !buf.is_empty() {
            return;
        }
        // Frames split off the front shrink the visible capacity; once they
        // are dropped the whole allocation can be taken back without copying.
        buf.clear();
        if !buf.try_reclaim(self.large_bytes()) {
            let _ = buf.try_reclaim(self.small_bytes());
        }
        let cap = buf.capacity();
        // Small first: with `read_buffer_bytes` at the small size, both
        // shelves hold one size, and `take` draws from the small one.
        // A large size within twice the small one must not land on the
        // small shelf, or large buffers would never be reused.
        let small = self.small.borrow().fits(cap)
            && (cap < self.large_bytes() || self.small_bytes() == self.large_bytes());
        let shelf = if small {
            &self.small
        } else if self.large.borrow().fits(cap) {
            &self.large
        } else {
            return;
        };
        shelf.borrow_mut().put(buf);
    }

    /// Whether idle buffers are waiting to be trimmed: the sweep then
    /// comes back within its tick even if no connection needs it.
    pub fn has_surplus(&self) -> bool {
        self.small.borrow().idle() > KEPT_WHEN_QUIET || self.large.borrow().idle() > KEPT_WHEN_QUIET
    }

    /// Called by the worker's sweep: once per quiet period, frees the
    /// buffers that stayed idle the whole period (all but a few kept for
    /// the next burst). A busy pool keeps what it uses.
    pub fn trim(&self, now: Instant) {
        if now.saturating_duration_since(self.last_trim.get()) < QUIET_PERIOD {
            return;
        }
        self.last_trim.set(now);
        self.small.borrow_mut().trim(KEPT_WHEN_QUIET);
        self.large.borrow_mut().trim(KEPT_WHEN_QUIET);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LARGE: usize = 16 * 1024;

    fn pool() -> BufferPool {
        BufferPool::new(LARGE, 8)
    }

    #[test]
    fn reuses_only_clean_buffers_of_the_two_sizes() {
        let pool = pool();
        let a = pool.take();
        assert_eq!(a.capacity(), SMALL_BUFFER_BYTES);
        let ptr = a.as_ptr();
        pool.give_back(a);
        assert_eq!(pool.take().as_ptr(), ptr);
        pool.give_back(BytesMut::with_capacity(1 << 20));
        pool.give_back(BytesMut::with_capacity(100));
        pool.give_back(BytesMut::from(&b"data"[..]));
        assert_eq!(
            (pool.small.borrow().idle(), pool.large.borrow().idle()),
            (0, 0)
        );
        pool.give_back(BytesMut::with_capacity(LARGE));
        assert_eq!(pool.large.borrow().idle(), 1);
    }

    #[test]
    fn a_large_size_near_the_small_one_goes_back_to_the_large_shelf() {
        let pool = BufferPool::new(2 * SMALL_BUFFER_BYTES, 8);
        let large = pool.take_large();
        let ptr = large.as_ptr();
        pool.give_back(large);
        assert_eq!(pool.take_large().as_ptr(), ptr, "reused as a large buffer");
        assert_eq!(pool.take().capacity(), SMALL_BUFFER_BYTES);
    }

    #[test]
    fn a_buffer_whose_frames_were_split_off_comes_back_whole() {
        let pool = pool();
        let mut buf = pool.take();
        buf.extend_from_slice(&[7; 100]);
        drop(buf.split_to(100).freeze());
        pool.give_back(buf);
        assert_eq!(pool.take().capacity(), SMALL_BUFFER_BYTES);
    }

    #[test]
    fn reads_start_small_and_grow_only_while_reads_fill_them() {
        let pool = pool();
        let small = pool.read_room(false);
        assert_eq!(small, SMALL_BUFFER_BYTES);
        assert!(!pool.reads_big(small, 70), "a small message");
        assert!(
            pool.reads_big(small, small),
            "a read that filled its buffer"
        );
        // Over TLS a full read yields a little less plaintext.
        assert!(pool.reads_big(small, small - 30));
        let large = pool.read_room(true);
        assert_eq!(large, LARGE);
        assert!(
            pool.reads_big(large, 4096),
            "4 KiB messages stay on large reads"
        );
        assert!(!pool.reads_big(large, 200), "back to small ones");
    }

    #[test]
    fn make_room_takes_the_size_that_fits_without_allocating_when_pooled() {
        let pool = pool();
        let (small, large) = (pool.take(), pool.take_large());
        let (small_ptr, large_ptr) = (small.as_ptr(), large.as_ptr());
        pool.give_back(small);
        pool.give_back(large);
        let mut buf = BytesMut::new();
        pool.make_room(&mut buf, 100);
        assert_eq!(buf.as_ptr(), small_ptr);
        // Bytes that outgrow the small buffer move to the pooled large one,
        // and the small one goes back to the pool.
        buf.extend_from_slice(&[1; 2000]);
        pool.make_room(&mut buf, 1000);
        assert_eq!(buf.as_ptr(), large_ptr);
        assert_eq!(&buf[..], &[1; 2000][..]);
        assert_eq!(pool.take().as_ptr(), small_ptr);
        // More than a large buffer: grown in place.
        pool.make_room(&mut buf, 100_000);
        assert!(buf.capacity() - buf.len() >= 100_000);
        assert_eq!(&buf[..], &[1; 2000][..]);
    }

    #[test]
    fn small_messages_reuse_two_small_buffers_in_steady_state() {
        let pool = pool();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            // A read of one 70-byte frame, decoded (split off), then echoed.
            let mut read = BytesMut::new();
            pool.make_room(&mut read, pool.read_room(false));
            read.extend_from_slice(&[0; 70]);
            let frame = read.split_to(70).freeze();
            let mut tail = pool.take();
            pool.make_room(&mut tail, 10 + frame.len());
            tail.extend_from_slice(&frame);
            drop(frame);
            seen.extend([read.as_ptr() as usize - 70, tail.as_ptr() as usize]);
            pool.give_back(read);
            tail.clear();
            pool.give_back(tail);
        }
        assert_eq!(seen.len(), 2, "no buffer allocated past the first two");
        assert_eq!(pool.large.borrow().idle(), 0, "no large one needed");
    }

    #[test]
    fn a_quiet_pool_frees_what_it_did_not_use() {
        let pool = pool();
        let t0 = Instant::now();
        let bufs: Vec<BytesMut> = (0..8).map(|_| pool.take()).collect();
        bufs.into_iter().for_each(|b| pool.give_back(b));
        assert!(pool.has_surplus());
        // Within the quiet period nothing is freed.
        pool.trim(t0);
        assert_eq!(pool.small.borrow().idle(), 8);
        // The burst drew the pool down to empty: all of it was in use.
        pool.trim(t0 + QUIET_PERIOD);
        assert_eq!(pool.small.borrow().idle(), 8);
        // A period in which only two were in use at once: six went unused,
        // and all but the few kept are freed.
        for _ in 0..3 {
            let (a, b) = (pool.take(), pool.take());
            pool.give_back(a);
            pool.give_back(b);
        }
        pool.trim(t0 + 2 * QUIET_PERIOD);
        assert_eq!(pool.small.borrow().idle(), KEPT_WHEN_QUIET);
        assert!(!pool.has_surplus());
    }

    #[test]
    fn one_size_when_read_buffers_are_small() {
        let pool = BufferPool::new(1024, 8);
        let a = pool.take();
        let ptr = a.as_ptr();
        pool.give_back(a);
        assert_eq!(pool.take().as_ptr(), ptr);
        assert_eq!(pool.read_room(true), 1024);
    }
}
