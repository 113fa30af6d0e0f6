//! Frames waiting to be written to a client, gathered into few writes.
//!
//! Small frames are copied into one pooled buffer; a large payload is kept
//! as its own `Bytes` after its header, and a frame encoded once for many
//! connections (a broadcast) is kept as the shared `Bytes` it is: neither
//! is copied. Everything queued goes out in one vectored write where the
//! socket takes it. Nothing is held once everything is written.

use std::io;

use bytes::Bytes;

use super::control::ConnControl;
use super::gather::{write_gathered, Gathered};
use super::pool::BufferPool;
use super::stream::Stream;
use crate::ws::close::encode_close;
use crate::ws::frame::{encode_frame, encode_header};
use crate::ws::{CloseCode, OpCode};

/// Payloads up to this size are copied next to their header; larger ones
/// are written from their own `Bytes`.
pub(crate) const COPY_LIMIT: usize = 16 * 1024;

/// The longest header of a frame the gateway sends (unmasked).
const FRAME_HEADER_BYTES: usize = 10;

/// Present only while something is queued: an idle connection pays one
/// pointer for its outbox.
#[derive(Default)]
pub(crate) struct Outbox {
    queued: Option<Box<Gathered>>,
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.queued.is_none()
    }

    fn queued(&mut self) -> &mut Gathered {
        self.queued.get_or_insert_with(Default::default)
    }

    /// Encodes a frame of `payload`.
    pub fn push(&mut self, pool: &BufferPool, opcode: OpCode, payload: &Bytes) {
        let q = self.queued();
        if payload.len() <= COPY_LIMIT {
            let room = FRAME_HEADER_BYTES + payload.len();
            q.copy(pool, room, |tail| encode_frame(tail, opcode, payload));
        } else {
            q.copy(pool, FRAME_HEADER_BYTES, |tail| {
                encode_header(tail, true, opcode, payload.len())
            });
            q.share(payload.clone());
        }
    }

    /// Queues a frame already encoded (shared with other connections).
    pub fn push_encoded(&mut self, frame: Bytes) {
        self.queued().share(frame);
    }

    pub fn push_close(&mut self, pool: &BufferPool, code: Option<CloseCode>, reason: &str) {
        let room = FRAME_HEADER_BYTES + 2 + reason.len();
        self.queued().copy(pool, room, |tail| match code {
            Some(code) => encode_close(tail, code, reason),
            None => encode_frame(tail, OpCode::Close, &[]),
        });
    }

    /// Writes everything queued; afterwards the outbox holds no buffer.
    /// Gives up with `TimedOut` when `control`'s deadline passes first.
    pub async fn flush(
        &mut self,
        stream: &mut Stream,
        pool: &BufferPool,
        control: &ConnControl,
    ) -> io::Result<()> {
        let Some(q) = self.queued.take() else {
            return Ok(());
        };
        let written = write_gathered(stream, q, || control.timer()).await?;
        if let Some(tail) = written.into_tail() {
            pool.give_back(tail);
        }
        Ok(())
    }
}
