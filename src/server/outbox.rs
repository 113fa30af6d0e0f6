//! Frames waiting to be written to a client, coalesced into few writes.
//!
//! Small frames are copied into one pooled buffer; a large payload is written
//! from its own `Bytes` after its header, never copied. Nothing is held once
//! everything is written.

use std::collections::VecDeque;
use std::io;

use bytes::{Bytes, BytesMut};
use monoio::net::TcpStream;

use super::io::write_all_unless;
use super::pool::BufferPool;
use super::registry::ConnControl;
use crate::ws::close::encode_close;
use crate::ws::frame::{encode_frame, encode_header};
use crate::ws::{CloseCode, OpCode};

/// Payloads up to this size are copied next to their header.
const COPY_LIMIT: usize = 16 * 1024;

#[derive(Default)]
pub(crate) struct Outbox {
    /// Ready chunks, in wire order, ahead of `tail`.
    chunks: VecDeque<Bytes>,
    tail: Option<BytesMut>,
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.tail.as_ref().is_none_or(|t| t.is_empty())
    }

    pub fn push(&mut self, pool: &BufferPool, opcode: OpCode, payload: &Bytes) {
        let tail = self.tail.get_or_insert_with(|| pool.take());
        if payload.len() <= COPY_LIMIT {
            encode_frame(tail, opcode, payload);
        } else {
            encode_header(tail, true, opcode, payload.len());
            self.chunks.push_back(tail.split().freeze());
            self.chunks.push_back(payload.clone());
        }
    }

    pub fn push_close(&mut self, pool: &BufferPool, code: Option<CloseCode>, reason: &str) {
        let tail = self.tail.get_or_insert_with(|| pool.take());
        match code {
            Some(code) => encode_close(tail, code, reason),
            None => encode_frame(tail, OpCode::Close, &[]),
        }
    }

    /// Writes everything queued; afterwards the outbox holds no buffer.
    /// Gives up with `TimedOut` when `control`'s deadline passes first.
    pub async fn flush(
        &mut self,
        stream: &mut TcpStream,
        pool: &BufferPool,
        control: &ConnControl,
    ) -> io::Result<()> {
        while let Some(chunk) = self.chunks.pop_front() {
            write_all_unless(stream, chunk, || control.timer()).await?;
        }
        if let Some(tail) = self.tail.take() {
            let mut tail = if tail.is_empty() {
                tail
            } else {
                write_all_unless(stream, tail, || control.timer()).await?
            };
            tail.clear();
            pool.give_back(tail);
        }
        Ok(())
    }
}
