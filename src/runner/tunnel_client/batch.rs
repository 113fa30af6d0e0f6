//! One received batch of tunnel frames: which bytes of the answer each
//! actor produced, the group commit of the actors it changed (their
//! records, each with the batch's output and a number the output's mark
//! carries), and what an actor whose save failed must take back.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tracing::warn;

use super::kept::{self, Kept};
use super::outbox;
use super::{Batch, TunnelState};
use crate::runner::state::{Record, SaveRequest};
use crate::runner::Shared;
use crate::tunnel::{encode_frame, Frame};

impl TunnelState {
    /// Handles one frame of a batch, noting which bytes of the batch's
    /// output belong to which actor. An actor about to stop is saved first
    /// (a migration stops it in the same batch as its last messages).
    pub(super) fn handle_in_batch(
        &mut self,
        shared: &Arc<Shared>,
        frame: Frame,
        index: u32,
        batch: &mut Batch,
    ) {
        if let Frame::RestoreConn { .. } = &frame {
            return self.queued_restores.push((frame, index));
        }
        self.flush_restores(shared, batch);
        if let Frame::StopActor { actor_id } = &frame {
            if self.dirty.remove(actor_id) {
                let failed = self.save_actors(shared, [*actor_id].into(), batch);
                batch.failed.extend(failed);
            }
        }
        let actor = self.actor_of(&frame);
        let start = batch.out.len();
        self.handle(shared, frame, index, &mut batch.out);
        if let Some(actor_id) = actor {
            batch.touched.push((actor_id, start..batch.out.len()));
        }
    }

    /// Saves what the batch changed; what an actor whose save failed did is
    /// withdrawn. Returns what may leave.
    pub(super) fn finish_batch(&mut self, shared: &Arc<Shared>, mut batch: Batch) -> BytesMut {
        self.flush_restores(shared, &mut batch);
        self.resent_attachments.clear();
        self.mark_resent(&mut batch.out);
        let dirty = std::mem::take(&mut self.dirty);
        let failed = self.save_actors(shared, dirty, &mut batch);
        batch.failed.extend(failed);
        if batch.failed.is_empty() {
            return batch.out;
        }
        self.withdraw(shared, batch.out, &batch.touched, batch.failed)
    }

    /// Kept output sent again this batch ends with its own (older) mark:
    /// the gateways then know it arrived, and the next restore does not
    /// send it a third time. (A save in this batch marks a later number.)
    fn mark_resent(&mut self, out: &mut BytesMut) {
        for (actor_id, seq) in self.resent_marks.drain() {
            if self.marks {
                encode_frame(out, &Frame::OutputMark { actor_id, seq });
            }
        }
    }

    /// The actor a frame makes handle something (and so dirties).
    fn actor_of(&self, frame: &Frame) -> Option<u64> {
        match frame {
            Frame::Message { conn_id, .. } | Frame::Close { conn_id, .. } => {
                self.conn_actor.get(conn_id).copied()
            }
            Frame::HttpRequest(r) => Some(r.actor_id).filter(|a| self.actors.contains_key(a)),
            Frame::HttpBody { req_id, .. }
            | Frame::HttpEnd { req_id }
            | Frame::HttpCancel { req_id, .. }
            | Frame::HttpCredit { req_id, .. } => self.io.requests.actor_of(*req_id),
            _ => None,
        }
    }

    /// A save failed: what those actors did in this batch (their output and
    /// acknowledgements) is withdrawn from `out`, and they stop, so that the
    /// gateway restarts them from their last saved state and sends the
    /// unacknowledged messages again. Nothing is acknowledged that is not
    /// durable.
    fn withdraw(
        &mut self,
        shared: &Shared,
        out: BytesMut,
        touched: &[(u64, std::ops::Range<usize>)],
        failed: Vec<(u64, String)>,
    ) -> BytesMut {
        let is_failed = |id: &u64| failed.iter().any(|(f, _)| f == id);
        let mut kept = BytesMut::with_capacity(out.len());
        let mut at = 0;
        for (actor_id, range) in touched {
            if is_failed(actor_id) {
                kept.extend_from_slice(&out[at..range.start]);
                at = range.end;
            }
        }
        kept.extend_from_slice(&out[at..]);
        for (actor_id, reason) in failed {
            if let Some(slot) = self.actors.remove(&actor_id) {
                shared.running.fetch_sub(1, Ordering::AcqRel);
                for c in slot.conns {
                    self.forget_conn(c);
                }
            }
            let reason = format!("state save failed: {reason}");
            encode_frame(&mut kept, &Frame::ActorStopped { actor_id, reason });
        }
        kept
    }

    /// Saves these actors' records together (one group commit for the
    /// batch so far), each with its output in the batch, and marks each
    /// saved actor's output with its record's number; returns those whose
    /// save failed, with why.
    pub(super) fn save_actors(
        &mut self,
        shared: &Shared,
        dirty: BTreeSet<u64>,
        batch: &mut Batch,
    ) -> Vec<(u64, String)> {
        let Some(store) = &shared.options.state else {
            return Vec::new();
        };
        let mut records: Vec<(u64, u64, Vec<u8>, Kept)> = dirty
            .into_iter()
            .filter_map(|id| {
                let sent = outbox::of_actor(&batch.out, &batch.touched, id);
                let (seq, record, kept) = self.record_of(id, sent)?;
                Some((id, seq, record, kept))
            })
            .collect();
        let requests: Vec<SaveRequest<'_>> = records
            .iter()
            .filter_map(|(id, _, record, _)| {
                let slot = self.actors.get(id)?;
                Some(SaveRequest {
                    name: &slot.name,
                    key: &slot.key,
                    record,
                })
            })
            .collect();
        let results = store.save_batch(&requests);
        let mut failed = Vec::new();
        for ((id, seq, _, kept), result) in records.iter_mut().zip(results) {
            let Some(slot) = self.actors.get_mut(id) else {
                continue;
            };
            match result {
                Ok(()) => {
                    slot.saved_seq = *seq;
                    slot.kept = std::mem::take(kept);
                    let oldest = slot.kept.front().map_or(*seq, |(s, _)| *s);
                    slot.members.prune(oldest);
                    // The start's mark judged the restores of the start;
                    // a connection restored from now on (another node's
                    // client rejoining) says its own, or is judged by its
                    // indices: the actor has moved on since.
                    slot.output_seen = 0;
                    if self.marks {
                        let mark = Frame::OutputMark {
                            actor_id: *id,
                            seq: *seq,
                        };
                        encode_frame(&mut batch.out, &mark);
                    }
                }
                Err(e) => {
                    warn!(actor = %slot.name, key = ?slot.key, error = %e, "cannot save actor state: it stops and is restarted from its last saved state");
                    failed.push((*id, e.to_string()));
                }
            }
        }
        failed
    }

    /// One actor's next record (its number, last handled index per
    /// connection, what it sent in this batch and the earlier batches'
    /// output still kept, and its state), if it keeps state; with the kept
    /// outputs it holds.
    fn record_of(&self, actor_id: u64, outbox: Bytes) -> Option<(u64, Vec<u8>, Kept)> {
        let slot = self.actors.get(&actor_id)?;
        let state = slot.actor.save_state()?;
        let seq = slot.next_seq();
        let outbox = kept::resendable(outbox);
        let kept = kept::keep(slot.kept.clone(), seq, outbox.clone());
        // The newest kept output is this batch's own, if it sent anything.
        let mut earlier: Vec<(u64, Bytes)> = kept.iter().cloned().collect();
        if !outbox.is_empty() {
            earlier.pop();
        }
        let oldest = kept.front().map_or(seq, |(s, _)| *s);
        let record = Record {
            seq,
            // Every member, also one that sent nothing yet: a connection
            // neither here nor in `spans` was a member of no kept output.
            handled: slot
                .conns
                .iter()
                .map(|c| (*c, self.last_index.get(c).copied().unwrap_or(0)))
                .collect(),
            outbox,
            earlier,
            spans: slot.members.to_record(oldest),
            state: state.into(),
        };
        Some((seq, record.encode().to_vec(), kept))
    }
}

pub(super) fn load_record(shared: &Shared, name: &str, key: &[String]) -> Record {
    let Some(store) = &shared.options.state else {
        return Record::default();
    };
    match store.load(name, key) {
        Ok(Some(bytes)) => Record::decode(bytes).unwrap_or_else(|| {
            warn!(actor = %name, ?key, "saved actor state is corrupt: starting afresh");
            Record::default()
        }),
        Ok(None) => Record::default(),
        Err(e) => {
            warn!(actor = %name, ?key, error = %e, "cannot load actor state: starting afresh");
            Record::default()
        }
    }
}
