//! The outputs of an actor's last saved batches, kept in its record until
//! they are surely delivered (PROTOCOL §5a).
//!
//! A record is saved before its batch's output leaves. Several batches can
//! be on their way when something dies: the runner (its socket buffers), or
//! in a cluster the node that owns the actor (what it had not yet relayed
//! to the nodes holding the clients). Each gateway that holds clients knows
//! the last `OutputMark` it received; a restore says it per connection
//! (`RestoreConn.output_seen`), and the restored actor resends to that
//! connection what it was sent in the kept outputs numbered from there on.
//! Nothing tells the runner while it runs what arrived, so the outputs are
//! kept by count and size: the last [`KEEP_OUTPUTS`] batches that sent
//! something, at most [`KEEP_OUTPUT_BYTES`] (the newest batch's own
//! always). A broadcast to all reaches again only connections that were
//! members when it was made (`members.rs`).

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::runner::actor::ConnId;
use crate::tunnel::{decode_frames, encode_frame, Frame, Recipients};

/// Saved batches whose output is kept, at most: each save writes them
/// all again, so this is also what an actor's saves cost.
pub(super) const KEEP_OUTPUTS: usize = 32;
/// Bytes of kept output, at most (past the newest batch's own).
pub(super) const KEEP_OUTPUT_BYTES: usize = 32 * 1024;

/// An actor's kept outputs, oldest first, each with its record's number.
pub(super) type Kept = VecDeque<(u64, Bytes)>;

/// `kept` with the output of record `seq` added, and the oldest dropped
/// past the bounds: a batch's own output stays whatever its size, but not
/// past the next save. A batch that sent nothing adds nothing.
pub(super) fn keep(mut kept: Kept, seq: u64, output: Bytes) -> Kept {
    let added = !output.is_empty();
    if added {
        kept.push_back((seq, output));
    }
    let own = usize::from(added);
    let mut bytes: usize = kept.iter().map(|(_, o)| o.len()).sum();
    while kept.len() > KEEP_OUTPUTS || (kept.len() > own && bytes > KEEP_OUTPUT_BYTES) {
        if let Some((_, dropped)) = kept.pop_front() {
            bytes -= dropped.len();
        }
    }
    kept
}

/// The frames of a batch's output that could ever go again (messages,
/// attachments, closes, broadcasts): acknowledgements, accepts and
/// answers to requests take no room among the kept outputs.
pub(super) fn resendable(output: Bytes) -> Bytes {
    let frames: Vec<Frame> = decode_frames(output.clone())
        .map_while(Result::ok)
        .collect();
    if frames.iter().all(is_resendable) {
        return output;
    }
    let mut kept = BytesMut::new();
    for frame in frames.iter().filter(|f| is_resendable(f)) {
        encode_frame(&mut kept, frame);
    }
    kept.freeze()
}

fn is_resendable(frame: &Frame) -> bool {
    matches!(
        frame,
        Frame::Message { .. }
            | Frame::Close { .. }
            | Frame::SetAttachment { .. }
            | Frame::Broadcast { .. }
    )
}

/// What was sent again.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Resent {
    /// The highest record number whose output went again, if any did.
    pub upto: Option<u64>,
    /// Attachments set again, in order, per connection.
    pub attachments: Vec<(ConnId, Bytes)>,
    /// Connections the actor had closed (the close went again).
    pub closed: Vec<ConnId>,
}

/// A connection kept output is sent again to: what the records numbered
/// `seen` and above sent it, among those it was a member of (`spans`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Target<'a> {
    pub conn: ConnId,
    pub seen: u64,
    pub spans: &'a [(u64, u64)],
}

/// Appends to `out` what the kept outputs sent the targets and they never
/// received, as the actor's new instance `actor_id` says it: messages,
/// attachments and closes for each, and each broadcast once, to those of
/// them it was for. Acknowledgements and answers to requests are not
/// sent again.
pub(super) fn resend_to(
    kept: &Kept,
    targets: &[Target],
    actor_id: u64,
    out: &mut BytesMut,
) -> Resent {
    let mut resent = Resent::default();
    let Some(from) = targets.iter().map(|t| t.seen).min() else {
        return resent;
    };
    for (seq, output) in kept.iter().filter(|(seq, _)| *seq >= from) {
        let due: Vec<&Target> = targets.iter().filter(|t| t.seen <= *seq).collect();
        for frame in decode_frames(output.clone()).map_while(Result::ok) {
            let Some(frame) = for_due(frame, &due, *seq, actor_id) else {
                continue;
            };
            match &frame {
                Frame::SetAttachment {
                    conn_id,
                    attachment,
                } => resent.attachments.push((*conn_id, attachment.clone())),
                Frame::Close { conn_id, .. } => resent.closed.push(*conn_id),
                _ => {}
            }
            encode_frame(out, &frame);
            resent.upto = Some(*seq);
        }
    }
    resent
}

/// `frame` of record `seq`, as sent again to those of `due` it was for.
fn for_due(frame: Frame, due: &[&Target], seq: u64, actor_id: u64) -> Option<Frame> {
    match frame {
        Frame::Message { conn_id, .. }
        | Frame::Close { conn_id, .. }
        | Frame::SetAttachment { conn_id, .. } => {
            due.iter().any(|t| t.conn == conn_id).then_some(frame)
        }
        Frame::Broadcast {
            kind, to, payload, ..
        } => {
            let reached: Vec<ConnId> = due
                .iter()
                .filter(|t| names(&to, t.conn, super::members::covers(t.spans, seq)))
                .map(|t| t.conn)
                .collect();
            (!reached.is_empty()).then_some(Frame::Broadcast {
                actor_id,
                kind,
                to: Recipients::Only(reached),
                payload,
            })
        }
        _ => None,
    }
}

fn names(to: &Recipients, conn: ConnId, member: bool) -> bool {
    match to {
        Recipients::All => member,
        Recipients::AllBut(but) => member && !but.contains(&conn),
        Recipients::Only(only) => only.contains(&conn),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::MessageKind;

    fn broadcast(actor_id: u64, to: Recipients, text: &'static str) -> Frame {
        Frame::Broadcast {
            actor_id,
            kind: MessageKind::Text,
            to,
            payload: Bytes::from_static(text.as_bytes()),
        }
    }

    fn encoded(frames: &[Frame]) -> Bytes {
        let mut out = BytesMut::new();
        frames.iter().for_each(|f| encode_frame(&mut out, f));
        out.freeze()
    }

    fn decoded(out: BytesMut) -> Vec<Frame> {
        decode_frames(out.freeze()).map(Result::unwrap).collect()
    }

    #[test]
    fn the_oldest_outputs_go_past_the_bounds_but_never_the_newest() {
        let mut kept = Kept::new();
        for seq in 1..=(KEEP_OUTPUTS as u64 + 5) {
            kept = keep(kept, seq, Bytes::from_static(b"x"));
        }
        assert_eq!(kept.len(), KEEP_OUTPUTS);
        assert_eq!(kept.front().map(|k| k.0), Some(6));
        let kept = keep(kept, 100, Bytes::new());
        assert_eq!(
            kept.back().map(|k| k.0),
            Some(KEEP_OUTPUTS as u64 + 5),
            "nothing sent, nothing kept"
        );
        let big = Bytes::from(vec![0; KEEP_OUTPUT_BYTES + 1]);
        let kept = keep(kept, 101, big);
        assert_eq!(kept.iter().map(|k| k.0).collect::<Vec<_>>(), [101]);
    }

    #[test]
    fn a_broadcast_to_all_reaches_again_only_those_who_were_members() {
        let mut kept = Kept::new();
        kept = keep(kept, 3, encoded(&[broadcast(1, Recipients::All, "three")]));
        kept = keep(
            kept,
            4,
            encoded(&[
                broadcast(1, Recipients::All, "four"),
                broadcast(1, Recipients::AllBut(vec![7]), "not to 7"),
            ]),
        );
        let texts = |conn, spans: &[(u64, u64)]| {
            let mut out = BytesMut::new();
            let to = Target {
                conn,
                seen: 1,
                spans,
            };
            resend_to(&kept, &[to], 2, &mut out);
            decoded(out)
                .into_iter()
                .filter_map(|f| match f {
                    Frame::Broadcast { payload, .. } => Some(payload),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(texts(7, &[(0, u64::MAX)]), ["three", "four"]);
        assert_eq!(
            texts(8, &[(4, u64::MAX)]),
            ["four", "not to 7"],
            "joined before record 4"
        );
        assert!(
            texts(9, &[(5, u64::MAX)]).is_empty(),
            "joined after every kept record"
        );
        assert_eq!(texts(8, &[(1, 4)]), ["three"], "left before record 4");
    }

    #[test]
    fn a_connection_gets_again_only_what_was_its_own_from_where_its_gateway_stopped() {
        let msg = |conn_id, text: &'static str| Frame::Message {
            conn_id,
            index: 0,
            kind: MessageKind::Text,
            payload: Bytes::from_static(text.as_bytes()),
        };
        let mut kept = Kept::new();
        kept = keep(
            kept,
            4,
            encoded(&[broadcast(1, Recipients::Only(vec![7, 8]), "four")]),
        );
        kept = keep(
            kept,
            5,
            encoded(&[
                Frame::Ack {
                    conn_id: 7,
                    index: 3,
                },
                broadcast(1, Recipients::Only(vec![7, 8]), "five"),
                msg(8, "to 8"),
                Frame::SetAttachment {
                    conn_id: 7,
                    attachment: Bytes::from_static(b"a7"),
                },
            ]),
        );
        kept = keep(
            kept,
            6,
            encoded(&[broadcast(1, Recipients::Only(vec![8]), "six")]),
        );
        let target = |conn, seen| Target {
            conn,
            seen,
            spans: &[(0, u64::MAX)],
        };
        let mut out = BytesMut::new();
        let resent = resend_to(&kept, &[target(7, 5)], 2, &mut out);
        assert_eq!(
            decoded(out),
            [
                broadcast(2, Recipients::Only(vec![7]), "five"),
                Frame::SetAttachment {
                    conn_id: 7,
                    attachment: Bytes::from_static(b"a7"),
                },
            ]
        );
        assert_eq!(resent.upto, Some(5));
        assert_eq!(resent.attachments, [(7, Bytes::from_static(b"a7"))]);
        let mut out = BytesMut::new();
        let none = resend_to(&kept, &[target(8, 7)], 2, &mut out);
        assert_eq!(none, Resent::default());
        assert!(out.is_empty(), "its gateway saw everything");
        // Two connections whose gateways stopped at different records: a
        // broadcast goes once, to those it was for and who missed it.
        let mut out = BytesMut::new();
        resend_to(&kept, &[target(7, 5), target(8, 4)], 2, &mut out);
        let broadcasts: Vec<Frame> = decoded(out)
            .into_iter()
            .filter(|f| matches!(f, Frame::Broadcast { .. }))
            .collect();
        assert_eq!(
            broadcasts,
            [
                broadcast(2, Recipients::Only(vec![8]), "four"),
                broadcast(2, Recipients::Only(vec![7, 8]), "five"),
                broadcast(2, Recipients::Only(vec![8]), "six"),
            ]
        );
    }
}
