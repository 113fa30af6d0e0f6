//! What restores show never arrived is sent again (PROTOCOL §5a), before
//! anything the restored actor says: the kept outputs of saved batches
//! (`kept.rs`) that a connection's gateway has no mark for, or, where no
//! gateway knows marks, the output of the batch the actor started from
//! when the connections' indices show it was lost.
//!
//! A batch's restores are gathered (a gateway sends all of a start's
//! restores before anything else) and answered together: each frame kept
//! goes once, a broadcast to all the restored connections it was for.

use std::sync::Arc;

use bytes::BytesMut;

use super::kept::{self, Target};
use super::{outbox, Batch, TunnelState};
use crate::runner::Shared;
use crate::tunnel::Frame;

/// What a restore says about what its connection received.
struct Seen {
    conn: u64,
    last_index: u64,
    /// `RestoreConn.output_seen`.
    output_seen: u64,
}

/// How one connection's lost output goes again.
enum Judged {
    /// From this record on (its gateway's mark, the start's, or the
    /// indices after the actor saved again: the start's record).
    From(u64),
    /// With the start's batch output, whole (indices, no mark known).
    Whole,
    Nothing,
}

impl TunnelState {
    /// Handles the restores gathered in this batch: what their
    /// connections missed goes first, then the restores themselves (the
    /// actor's `on_restore`), in the order they came.
    pub(super) fn flush_restores(&mut self, shared: &Arc<Shared>, batch: &mut Batch) {
        let queued = std::mem::take(&mut self.queued_restores);
        let mut closed = Vec::new();
        let mut actors: Vec<u64> = Vec::new();
        for (frame, _) in &queued {
            if let Frame::RestoreConn { actor_id, .. } = frame {
                if !actors.contains(actor_id) {
                    actors.push(*actor_id);
                }
            }
        }
        for actor_id in actors {
            self.save_before_restores(shared, actor_id, batch);
            let seen: Vec<Seen> = queued
                .iter()
                .filter_map(|(f, _)| seen_of(f, actor_id))
                .collect();
            closed.extend(self.resend_lost_output(actor_id, &seen, batch));
        }
        for (frame, index) in queued {
            if let Frame::RestoreConn { conn_id, .. } = &frame {
                // The actor had closed it (the close went again): a restore
                // would bring back a connection no one holds.
                if closed.contains(conn_id) {
                    continue;
                }
            }
            self.handle(shared, frame, index, &mut batch.out);
        }
    }

    /// What the actor said earlier in this batch was not for the
    /// connections restored now: it is saved as a record of its own, which
    /// they join after (and which a later save of this batch does not
    /// count again).
    fn save_before_restores(&mut self, shared: &Arc<Shared>, actor_id: u64, batch: &mut Batch) {
        let said = batch
            .touched
            .iter()
            .any(|(a, r)| *a == actor_id && !r.is_empty());
        if !self.dirty.remove(&actor_id) && !said {
            return;
        }
        let failed = self.save_actors(shared, [actor_id].into(), batch);
        if failed.is_empty() {
            batch.touched.retain(|(a, _)| *a != actor_id);
        }
        batch.failed.extend(failed);
    }

    /// Sends again what the restored connections of `actor_id` missed;
    /// returns those whose close went again.
    fn resend_lost_output(&mut self, actor_id: u64, seen: &[Seen], batch: &mut Batch) -> Vec<u64> {
        let marks = self.marks;
        if let Some(slot) = self.actors.get_mut(&actor_id).filter(|_| marks) {
            let highest = seen.iter().map(|s| s.output_seen).max().unwrap_or(0);
            slot.marks_seen = slot.marks_seen.max(highest);
        }
        let judged: Vec<(u64, Judged)> = seen
            .iter()
            .map(|s| (s.conn, self.judge(actor_id, s)))
            .collect();
        let mut closed = self.resend_own(actor_id, &judged, &mut batch.out);
        if judged.iter().any(|(_, j)| matches!(j, Judged::Whole)) {
            // Those served by their own gateway's mark are left out.
            let except: Vec<u64> = judged
                .iter()
                .filter(|(_, j)| matches!(j, Judged::From(_)))
                .map(|(c, _)| *c)
                .collect();
            let start = batch.out.len();
            closed.extend(self.resend_whole(actor_id, &except, &mut batch.out));
            // Counted as the actor's output of this batch: if the runner
            // dies again before it leaves, the next save keeps it too.
            batch.touched.push((actor_id, start..batch.out.len()));
        }
        closed
    }

    /// Each connection judged `From` a record gets what it missed from
    /// there on; returns those whose close went again.
    fn resend_own(
        &mut self,
        actor_id: u64,
        judged: &[(u64, Judged)],
        out: &mut BytesMut,
    ) -> Vec<u64> {
        let Some(slot) = self.actors.get(&actor_id) else {
            return Vec::new();
        };
        let targets: Vec<Target> = judged
            .iter()
            .filter_map(|(conn, j)| match j {
                Judged::From(seen) => Some(Target {
                    conn: *conn,
                    seen: *seen,
                    spans: slot.members.spans_of(*conn),
                }),
                _ => None,
            })
            .collect();
        let resent = kept::resend_to(&slot.kept, &targets, actor_id, out);
        for (conn, attachment) in resent.attachments {
            self.io.attachments.insert(conn, attachment.clone());
            self.resent_attachments.insert(conn, attachment);
        }
        if let Some(upto) = resent.upto {
            let mark = self.resent_marks.entry(actor_id).or_default();
            *mark = upto.max(*mark);
        }
        resent.closed
    }

    /// How a restored connection's lost output goes again: by its
    /// gateway's mark, else by the start's, else by its indices.
    fn judge(&self, actor_id: u64, s: &Seen) -> Judged {
        let Some(slot) = self.actors.get(&actor_id) else {
            return Judged::Nothing;
        };
        let seen = match s.output_seen {
            o if o > 0 && self.marks => o,
            _ => slot.output_seen,
        };
        // A record without a number (written by an older library, with no
        // marks) is judged by its indices too.
        if seen > 0 && slot.saved_seq > 0 {
            return Judged::From(seen);
        }
        let saved = slot.saved_handled.get(&s.conn).copied().unwrap_or(0);
        let start_kept = slot.kept.iter().any(|(q, _)| *q == slot.loaded_seq);
        match (
            saved > s.last_index && start_kept,
            slot.saved_seq == slot.loaded_seq,
        ) {
            (false, _) => Judged::Nothing,
            (true, true) => Judged::Whole,
            // Restored after the actor saved again: its share of the
            // start's batch alone (the others had theirs long ago).
            (true, false) => Judged::From(slot.loaded_seq),
        }
    }

    /// The start's batch output, whole, once, but for `except`: on a
    /// gateway that knows no marks, a batch that never arrived never
    /// arrived for anyone. Returns the connections it closes again.
    fn resend_whole(&mut self, actor_id: u64, except: &[u64], out: &mut BytesMut) -> Vec<u64> {
        let slot = self.actors.get_mut(&actor_id);
        let Some((_, sent)) = slot.and_then(|s| s.kept.pop_back()) else {
            return Vec::new();
        };
        // Saved again, with what is sent again as its output, so that
        // its mark tells the gateway it arrived (or the next runner
        // that it did not): otherwise every later start would resend it.
        self.dirty.insert(actor_id);
        let resent = outbox::resend(sent, actor_id, except, out);
        for (conn, attachment) in resent.attachments {
            // Connections restored before this one, and those restored
            // after it (whose restores carry the gateway's older copy).
            self.io.attachments.insert(conn, attachment.clone());
            self.resent_attachments.insert(conn, attachment);
        }
        resent.closed
    }
}

/// What a queued restore of `actor_id` says about its connection.
fn seen_of(frame: &Frame, actor_id: u64) -> Option<Seen> {
    match frame {
        Frame::RestoreConn {
            conn_id,
            actor_id: a,
            last_index,
            output_seen,
            ..
        } if *a == actor_id => Some(Seen {
            conn: *conn_id,
            last_index: *last_index,
            output_seen: *output_seen,
        }),
        _ => None,
    }
}
