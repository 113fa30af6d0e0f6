//! Idle buffers of one size, for the worker's [`BufferPool`], and how many
//! of them went unused since the last trim.
//!
//! [`BufferPool`]: super::pool::BufferPool

use bytes::BytesMut;

pub(crate) struct Shelf {
    bytes: usize,
    max_idle: usize,
    /// Most recently given back last: `take` pops the warmest buffer, and
    /// the front holds those unused longest.
    idle: Vec<BytesMut>,
    /// The fewest idle buffers since the last trim: that many stayed
    /// unused the whole time.
    low_water: usize,
}

impl Shelf {
    pub fn new(bytes: usize, max_idle: usize) -> Self {
        Shelf {
            bytes,
            max_idle,
            idle: Vec::new(),
            low_water: 0,
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn idle(&self) -> usize {
        self.idle.len()
    }

    /// A buffer of this size's capacity (or a little more: growth by
    /// `reserve` rounds up) belongs here.
    pub fn fits(&self, capacity: usize) -> bool {
        capacity >= self.bytes && capacity <= 2 * self.bytes
    }

    pub fn take(&mut self) -> BytesMut {
        match self.idle.pop() {
            Some(buf) => {
                self.low_water = self.low_water.min(self.idle.len());
                buf
            }
            None => {
                self.low_water = 0;
                BytesMut::with_capacity(self.bytes)
            }
        }
    }

    /// Keeps `buf` (empty, and `fits`) unless the shelf is full.
    pub fn put(&mut self, buf: BytesMut) {
        if self.idle.len() < self.max_idle {
            self.idle.push(buf);
        }
    }

    /// Frees the buffers unused since the last trim, keeping at least
    /// `keep`; starts counting again.
    pub fn trim(&mut self, keep: usize) {
        let unused = self.low_water.min(self.idle.len().saturating_sub(keep));
        self.idle.drain(..unused);
        self.low_water = self.idle.len();
    }
}
