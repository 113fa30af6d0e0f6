//! What a restore shows never arrived is sent again (PROTOCOL §5a): the
//! kept outputs of saved batches (`kept.rs`) that the connection's gateway
//! has no mark for, or, where no gateway knows marks, the output of the
//! batch the actor started from when the connection's indices show it was
//! lost.

use bytes::BytesMut;

use super::{kept, outbox, TunnelState};

/// How a restore's lost output went.
pub(super) enum Resend {
    /// Only what was the connection's own (or nothing): not the batch's
    /// output (it is kept under its own number).
    Own {
        /// The actor had closed the connection: it is not restored.
        closed: bool,
    },
    /// The start's batch output went again, whole: it counts as this
    /// batch's output (saved again, so that its mark says it arrived).
    Whole,
}

impl TunnelState {
    /// Sends again, ahead of anything the restored actor sends, what the
    /// restored connection `conn_id` was sent and never received.
    /// `conn_seen` is `RestoreConn.output_seen`: its gateway's last mark
    /// plus one (0: not known, then `StartActor.output_seen` says it for
    /// the restores of the start, and without that the indices do).
    pub(super) fn resend_lost_output(
        &mut self,
        conn_id: u64,
        actor_id: u64,
        (last_index, conn_seen): (u64, u64),
        out: &mut BytesMut,
    ) -> Resend {
        let marks = self.marks;
        let Some(slot) = self.actors.get(&actor_id) else {
            return Resend::Own { closed: false };
        };
        let seen = match conn_seen {
            s if s > 0 && marks => s,
            _ => slot.output_seen,
        };
        // A record without a number (written by an older library, with no
        // marks) is judged by its indices too.
        if seen > 0 && slot.saved_seq > 0 {
            if conn_seen > 0 {
                // Its gateway knows what it got: a whole resend for the
                // others later in this batch leaves it out.
                self.own_resent.entry(actor_id).or_default().push(conn_id);
            }
            return self.resend_own(conn_id, actor_id, seen, out);
        }
        let saved = slot.saved_handled.get(&conn_id).copied().unwrap_or(0);
        let start_kept = slot.kept.iter().any(|(s, _)| *s == slot.loaded_seq);
        if saved <= last_index || !start_kept {
            return Resend::Own { closed: false };
        }
        if slot.saved_seq != slot.loaded_seq {
            // Restored after the actor saved again: its share of the
            // start's batch alone (the others had theirs long ago).
            let loaded = slot.loaded_seq;
            return self.resend_own(conn_id, actor_id, loaded, out);
        }
        self.resend_whole(actor_id, out)
    }

    /// The connection's own share of the kept outputs from record `seen`
    /// on, ended (with the batch) by the mark of the newest it holds.
    fn resend_own(&mut self, conn_id: u64, actor_id: u64, seen: u64, out: &mut BytesMut) -> Resend {
        let Some(slot) = self.actors.get(&actor_id) else {
            return Resend::Own { closed: false };
        };
        let to = kept::Target {
            conn: conn_id,
            spans: slot.members.spans_of(conn_id),
            actor_id,
        };
        let resent = kept::resend_to(&slot.kept, seen, &to, out);
        if let Some(last) = resent.attachments.last() {
            self.io.attachments.insert(conn_id, last.clone());
            self.resent_attachments.insert(conn_id, last.clone());
        }
        if let Some(upto) = resent.upto {
            let mark = self.resent_marks.entry(actor_id).or_default();
            *mark = upto.max(*mark);
        }
        Resend::Own {
            closed: resent.closed,
        }
    }

    /// The start's batch output, whole, once: on a gateway that knows no
    /// marks, a batch that never arrived never arrived for anyone.
    fn resend_whole(&mut self, actor_id: u64, out: &mut BytesMut) -> Resend {
        let slot = self.actors.get_mut(&actor_id);
        let Some((_, sent)) = slot.and_then(|s| s.kept.pop_back()) else {
            return Resend::Own { closed: false };
        };
        // Saved again, with what is sent again as its output, so that
        // its mark tells the gateway it arrived (or the next runner
        // that it did not): otherwise every later start would resend it.
        self.dirty.insert(actor_id);
        let except = self
            .own_resent
            .get(&actor_id)
            .map_or(&[][..], Vec::as_slice);
        for (conn, attachment) in outbox::resend(sent, actor_id, except, out) {
            // Connections restored before this one, and those restored
            // after it (whose restores carry the gateway's older copy).
            self.io.attachments.insert(conn, attachment.clone());
            self.resent_attachments.insert(conn, attachment);
        }
        Resend::Whole
    }
}
