//! Per-worker pool of IO buffers, lent only while bytes are in flight.
//!
//! An idle connection holds no buffer at all: it waits for readability, then
//! borrows one, and gives it back as soon as everything in it is consumed.

use std::cell::RefCell;

use bytes::BytesMut;

pub(crate) struct BufferPool {
    buffer_bytes: usize,
    max_idle: usize,
    idle: RefCell<Vec<BytesMut>>,
}

impl BufferPool {
    pub fn new(buffer_bytes: usize, max_idle: usize) -> Self {
        Self {
            buffer_bytes,
            max_idle,
            idle: RefCell::new(Vec::new()),
        }
    }

    pub fn buffer_bytes(&self) -> usize {
        self.buffer_bytes
    }

    pub fn take(&self) -> BytesMut {
        self.idle
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| BytesMut::with_capacity(self.buffer_bytes))
    }

    /// Keeps `buf` for reuse if it is empty, of the usual size and the pool has room.
    pub fn give_back(&self, mut buf: BytesMut) {
        if !buf.is_empty() {
            return;
        }
        // Frames split off the front shrink the visible capacity; once they
        // are dropped the whole allocation can be taken back without copying.
        buf.clear();
        let _reclaimed = buf.try_reclaim(self.buffer_bytes);
        let cap = buf.capacity();
        let mut idle = self.idle.borrow_mut();
        if cap >= self.buffer_bytes && cap <= 4 * self.buffer_bytes && idle.len() < self.max_idle {
            idle.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_only_clean_buffers_of_the_usual_size() {
        let pool = BufferPool::new(1024, 2);
        let a = pool.take();
        let ptr = a.as_ptr();
        pool.give_back(a);
        assert_eq!(pool.take().as_ptr(), ptr);
        pool.give_back(BytesMut::with_capacity(1 << 20));
        pool.give_back(BytesMut::from(&b"data"[..]));
        assert!(pool.idle.borrow().is_empty());
    }
}
