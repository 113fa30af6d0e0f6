//! Bytes queued for one connection as a list of parts, written with
//! vectored writes: frames copied into one pooled buffer, and shared
//! `Bytes` (a large payload, or a broadcast frame encoded once for all its
//! recipients) written where they are.

use std::future::Future;
use std::io;

use bytes::{Buf, Bytes, BytesMut};
use monoio::buf::IoVecBuf;
use monoio::io::AsyncWriteRent;

use super::io::write_sealed;
use super::pool::BufferPool;
use super::stream::Stream;

/// Parts handed to one `writev` at most (each part is a frame or a run of
/// copied frames, so this is rarely the bound).
const MAX_IOVECS: usize = 16;

pub(crate) enum Part {
    /// `tail[start..end]`.
    Copied {
        start: usize,
        end: usize,
    },
    Shared(Bytes),
}

/// Everything queued for one flush, in wire order. Boxed by its owner, so
/// the iovecs built into it keep their address while the kernel reads them.
pub(crate) struct Gathered {
    parts: Vec<Part>,
    /// The copy buffer, taken from the pool when a frame is first copied.
    tail: Option<BytesMut>,
    /// Parts fully written, and bytes written of the next one.
    done_parts: usize,
    done_in_part: usize,
    remaining: usize,
    iovecs: [libc::iovec; MAX_IOVECS],
    iovec_count: usize,
}

impl Default for Gathered {
    fn default() -> Self {
        let empty = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        Gathered {
            parts: Vec::new(),
            tail: None,
            done_parts: 0,
            done_in_part: 0,
            remaining: 0,
            iovecs: [empty; MAX_IOVECS],
            iovec_count: 0,
        }
    }
}

impl Gathered {
    /// Appends what `encode` writes (at most `room` bytes) to the copy
    /// buffer, extending the last part when it is the copy buffer's end.
    /// Bytes that outgrow a small buffer move to a pooled large one, where
    /// they keep their offsets.
    pub fn copy(&mut self, pool: &BufferPool, room: usize, encode: impl FnOnce(&mut BytesMut)) {
        let tail = self.tail.get_or_insert_with(|| pool.take());
        pool.make_room(tail, room);
        let start = tail.len();
        encode(tail);
        let end = tail.len();
        if end == start {
            return; // an empty part would stall a reader of `chunk()`
        }
        self.remaining += end - start;
        match self.parts.last_mut() {
            Some(Part::Copied { end: last, .. }) if *last == start => *last = end,
            _ => self.parts.push(Part::Copied { start, end }),
        }
    }

    /// Appends `bytes` without copying them.
    pub fn share(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.remaining += bytes.len();
            self.parts.push(Part::Shared(bytes));
        }
    }

    /// The copy buffer, emptied, for the pool.
    pub fn into_tail(self) -> Option<BytesMut> {
        let mut tail = self.tail?;
        tail.clear();
        Some(tail)
    }

    fn part(&self, index: usize) -> &[u8] {
        match &self.parts[index] {
            Part::Copied { start, end } => match &self.tail {
                Some(tail) => &tail[*start..*end],
                None => &[],
            },
            Part::Shared(bytes) => bytes,
        }
    }

    /// Points the iovecs at what is left to write (up to `MAX_IOVECS` parts).
    fn prepare_iovecs(&mut self) {
        let mut count = 0;
        for index in self.done_parts..self.parts.len().min(self.done_parts + MAX_IOVECS) {
            let skip = if index == self.done_parts {
                self.done_in_part
            } else {
                0
            };
            let rest = &self.part(index)[skip..];
            self.iovecs[count] = libc::iovec {
                iov_base: rest.as_ptr() as *mut libc::c_void,
                iov_len: rest.len(),
            };
            count += 1;
        }
        self.iovec_count = count;
    }
}

impl Buf for Gathered {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        if self.done_parts == self.parts.len() {
            return &[];
        }
        &self.part(self.done_parts)[self.done_in_part..]
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.remaining, "advanced past the end");
        self.remaining -= cnt;
        while cnt > 0 {
            let left = self.part(self.done_parts).len() - self.done_in_part;
            if cnt < left {
                self.done_in_part += cnt;
                return;
            }
            cnt -= left;
            self.done_parts += 1;
            self.done_in_part = 0;
        }
    }
}

/// A boxed `Gathered` lent to the kernel for one `writev`.
struct Vectored(Box<Gathered>);

// SAFETY: the iovecs live inside the box, whose heap address does not move
// while the runtime owns the value, and point into buffers the box owns
// (the copy buffer is not appended to while it is lent); `iovec_count` of
// them are initialised by `prepare_iovecs`.
unsafe impl IoVecBuf for Vectored {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.0.iovecs.as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        self.0.iovec_count
    }
}

/// Writes all of `queued`, racing each write against a fresh `stop()`;
/// fails with `TimedOut` if `stop` wins. Over TLS everything is sealed
/// into records first. Hands `queued` back, written.
pub(crate) async fn write_gathered<S, F>(
    stream: &mut Stream,
    queued: Box<Gathered>,
    mut stop: S,
) -> io::Result<Box<Gathered>>
where
    S: FnMut() -> F,
    F: Future<Output = ()>,
{
    if stream.is_tls() {
        return write_sealed(stream, queued, stop).await;
    }
    let mut buf = Vectored(queued);
    while buf.0.has_remaining() {
        buf.0.prepare_iovecs();
        let (r, b) = monoio::select! {
            done = stream.tcp.writev(buf) => done,
            _ = stop() => return Err(io::ErrorKind::TimedOut.into()),
        };
        buf = b;
        match r {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf.0.advance(n),
            Err(e) => return Err(e),
        }
    }
    Ok(buf.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::conn::pool::BufferPool;
    use std::io::Read;

    fn queue_of(pool: &BufferPool, pieces: &[(&'static [u8], bool)]) -> Box<Gathered> {
        let mut q = Box::<Gathered>::default();
        for (bytes, shared) in pieces {
            if *shared {
                q.share(Bytes::from_static(bytes));
            } else {
                q.copy(pool, bytes.len(), |tail| tail.extend_from_slice(bytes));
            }
        }
        q
    }

    #[test]
    fn copies_side_by_side_are_one_part_and_shared_bytes_their_own() {
        let pool = BufferPool::new(64, 1);
        let pieces = [
            (&b"ab"[..], false),
            (b"cd", false),
            (b"EF", true),
            (b"gh", false),
        ];
        let q = queue_of(&pool, &pieces);
        assert_eq!(q.parts.len(), 3);
        assert_eq!(q.remaining(), 8);
    }

    #[test]
    fn nothing_copied_is_no_part() {
        let pool = BufferPool::new(64, 1);
        let mut q = queue_of(&pool, &[(&b"EF"[..], true)]);
        q.copy(&pool, 0, |_| {});
        assert_eq!(q.parts.len(), 1);
        assert_eq!(q.chunk(), b"EF");
    }

    #[test]
    fn reading_it_as_a_buffer_gives_the_parts_in_order_across_any_advance() {
        let pool = BufferPool::new(64, 1);
        let pieces = [
            (&b"abc"[..], false),
            (b"DEFG", true),
            (b"hi", false),
            (b"J", true),
        ];
        for step in 1..=10 {
            let mut q = queue_of(&pool, &pieces);
            let mut seen = Vec::new();
            while q.has_remaining() {
                let take = step.min(q.chunk().len());
                seen.extend_from_slice(&q.chunk()[..take]);
                q.advance(take);
            }
            assert_eq!(seen, b"abcDEFGhiJ", "step {step}");
        }
    }

    #[test]
    fn the_iovecs_start_where_the_last_write_stopped() {
        let pool = BufferPool::new(64, 1);
        let mut q = queue_of(&pool, &[(&b"abc"[..], false), (b"DEFG", true)]);
        q.advance(4);
        q.prepare_iovecs();
        assert_eq!(q.iovec_count, 1);
        assert_eq!(q.iovecs[0].iov_len, 3); // "EFG"
    }

    /// Many parts (more than one writev takes) and a payload larger than
    /// the socket buffers (partial writes) arrive whole and in order.
    #[test]
    fn a_vectored_write_delivers_every_part_in_order_over_a_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let big: Bytes = (0..4 << 20)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into();
        let mut expected = Vec::new();
        let pool = BufferPool::new(1024, 1);
        let mut q = Box::<Gathered>::default();
        for i in 0..40u8 {
            let piece = Bytes::from(vec![i; 1 + i as usize]);
            expected.extend_from_slice(&piece);
            match i % 3 {
                0 => q.share(piece),
                _ => q.copy(&pool, piece.len(), |tail| tail.extend_from_slice(&piece)),
            }
        }
        expected.extend_from_slice(&big);
        q.share(big);
        let len = expected.len();
        let reader = std::thread::spawn(move || {
            let mut got = vec![0; len];
            let mut client = client;
            client.read_exact(&mut got).unwrap();
            got
        });
        let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async move {
            let tcp = monoio::net::TcpStream::from_std(server).unwrap();
            let mut stream = Stream::plain(tcp);
            let never = || std::future::pending::<()>();
            let written = write_gathered(&mut stream, q, never).await.unwrap();
            assert!(!written.has_remaining());
        });
        assert_eq!(reader.join().unwrap(), expected);
    }
}
