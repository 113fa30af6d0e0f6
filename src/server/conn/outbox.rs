//! Frames waiting to be written to a client, coalesced into few writes.
//!
//! Small frames are copied into one pooled buffer; a large payload is written
//! from its own `Bytes` after its header, never copied. Nothing is held once
//! everything is written.

use std::collections::VecDeque;
use std::io;

use super::stream::Stream;
use bytes::{Bytes, BytesMut};

use super::control::ConnControl;
use super::io::write_all_unless;
use super::pool::BufferPool;
use crate::ws::close::encode_close;
use crate::ws::frame::{encode_frame, encode_header};
use crate::ws::{CloseCode, OpCode};

/// Payloads up to this size are copied next to their header.
const COPY_LIMIT: usize = 16 * 1024;

/// The longest header of a frame the gateway sends (unmasked).
const FRAME_HEADER_BYTES: usize = 10;

/// Boxed, and present only while something is queued: an idle connection
/// pays one pointer for its outbox.
#[derive(Default)]
pub(crate) struct Outbox {
    queued: Option<Box<Queued>>,
}

struct Queued {
    /// Ready chunks, in wire order, ahead of `tail`.
    chunks: VecDeque<Bytes>,
    tail: BytesMut,
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.queued.is_none()
    }

    fn queued(&mut self, pool: &BufferPool) -> &mut Queued {
        self.queued.get_or_insert_with(|| {
            Box::new(Queued {
                chunks: VecDeque::new(),
                tail: pool.take(),
            })
        })
    }

    pub fn push(&mut self, pool: &BufferPool, opcode: OpCode, payload: &Bytes) {
        let q = self.queued(pool);
        let copied = payload.len() <= COPY_LIMIT;
        // Frames that outgrow the small buffer move to a pooled large one.
        let len = if copied { payload.len() } else { 0 };
        pool.make_room(&mut q.tail, FRAME_HEADER_BYTES + len);
        if copied {
            encode_frame(&mut q.tail, opcode, payload);
        } else {
            encode_header(&mut q.tail, true, opcode, payload.len());
            let header = q.tail.split().freeze();
            q.chunks.push_back(header);
            q.chunks.push_back(payload.clone());
        }
    }

    pub fn push_close(&mut self, pool: &BufferPool, code: Option<CloseCode>, reason: &str) {
        let tail = &mut self.queued(pool).tail;
        match code {
            Some(code) => encode_close(tail, code, reason),
            None => encode_frame(tail, OpCode::Close, &[]),
        }
    }

    /// Writes everything queued; afterwards the outbox holds no buffer.
    /// Gives up with `TimedOut` when `control`'s deadline passes first.
    pub async fn flush(
        &mut self,
        stream: &mut Stream,
        pool: &BufferPool,
        control: &ConnControl,
    ) -> io::Result<()> {
        let Some(mut q) = self.queued.take() else {
            return Ok(());
        };
        while let Some(chunk) = q.chunks.pop_front() {
            write_all_unless(stream, chunk, || control.timer()).await?;
        }
        let mut tail = if q.tail.is_empty() {
            q.tail
        } else {
            write_all_unless(stream, q.tail, || control.timer()).await?
        };
        tail.clear();
        pool.give_back(tail);
        Ok(())
    }
}
