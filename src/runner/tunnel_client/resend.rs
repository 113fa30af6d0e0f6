//! What a restore shows never arrived is sent again (PROTOCOL §5a): the
//! kept outputs of saved batches (`kept.rs`) that the connection's gateway
//! has no mark for, or, where no gateway knows marks, the last saved
//! batch's output when the connection's indices show it was lost.

use bytes::BytesMut;

use super::{kept, outbox, TunnelState};

/// How a restore's lost output is told: by marks, or by indices.
pub(super) enum Resend {
    /// Nothing was sent again, or only what its gateway's mark says never
    /// arrived: not the batch's own output (it is kept under its number).
    ByMark,
    /// The last saved batch's output went again, whole: it counts as this
    /// batch's output (saved again, so that its mark says it arrived).
    ByIndex,
}

impl TunnelState {
    /// Sends again, ahead of anything the restored actor sends, what the
    /// restored connection `conn_id` was sent and never received.
    /// `conn_seen` is `RestoreConn.output_seen`: its gateway's last mark
    /// plus one (0: not known, then `StartActor.output_seen` says it for
    /// every connection, and without that either, the indices do).
    pub(super) fn resend_lost_output(
        &mut self,
        conn_id: u64,
        actor_id: u64,
        (last_index, conn_seen): (u64, u64),
        out: &mut BytesMut,
    ) -> Resend {
        let marks = self.marks;
        let Some(slot) = self.actors.get_mut(&actor_id) else {
            return Resend::ByMark;
        };
        let seen = match conn_seen {
            s if s > 0 && marks => s,
            _ => slot.output_seen,
        };
        // A record without a number (written by an older library, with no
        // marks) is judged by its indices too.
        if seen > 0 && slot.saved_seq > 0 {
            let to = kept::Target {
                conn: conn_id,
                joined: slot.joined.get(&conn_id).copied().unwrap_or(0),
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
            return Resend::ByMark;
        }
        // The indices judge the batch the actor started from, only until
        // it saved another (its kept output is then a later batch's).
        let saved = slot.saved_handled.get(&conn_id).copied().unwrap_or(0);
        let last_kept = slot.kept.back().filter(|(seq, _)| *seq == slot.saved_seq);
        let moved_on = slot.saved_seq != slot.loaded_seq;
        if saved <= last_index || last_kept.is_none() || moved_on {
            return Resend::ByMark;
        }
        let Some((_, sent)) = slot.kept.pop_back() else {
            return Resend::ByMark;
        };
        // Saved again, with what is sent again as its output, so that
        // its mark tells the gateway it arrived (or the next runner
        // that it did not): otherwise every later start would resend it.
        self.dirty.insert(actor_id);
        for (conn, attachment) in outbox::resend(sent, actor_id, out) {
            // Connections restored before this one, and those restored
            // after it (whose restores carry the gateway's older copy).
            self.io.attachments.insert(conn, attachment.clone());
            self.resent_attachments.insert(conn, attachment);
        }
        Resend::ByIndex
    }
}
