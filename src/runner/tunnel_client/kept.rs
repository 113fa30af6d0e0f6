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

/// What was sent again to one connection.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Resent {
    /// The highest record number whose output went again, if any did.
    pub upto: Option<u64>,
    /// Attachments it set again.
    pub attachments: Vec<Bytes>,
    /// The actor had closed it: it is not restored.
    pub closed: bool,
}

/// One connection, as kept output is sent again to it.
pub(super) struct Target<'a> {
    pub conn: ConnId,
    /// The records whose broadcasts to all were for it (`members.rs`).
    pub spans: &'a [(u64, u64)],
    /// The actor's new instance, which says it again.
    pub actor_id: u64,
}

/// Appends to `out` what the kept outputs numbered `seen` and above sent
/// to the target connection, as the actor's new instance says it: its
/// messages, attachments, close, and the broadcasts it was among (to it
/// alone). Acknowledgements and answers to requests are not sent again.
pub(super) fn resend_to(kept: &Kept, seen: u64, to: &Target, out: &mut BytesMut) -> Resent {
    let mut resent = Resent::default();
    for (seq, output) in kept.iter().filter(|(seq, _)| *seq >= seen) {
        let member = super::members::covers(to.spans, *seq);
        for frame in decode_frames(output.clone()).map_while(Result::ok) {
            let Some(frame) = to_conn(frame, to, member) else {
                continue;
            };
            match &frame {
                Frame::SetAttachment { attachment, .. } => {
                    resent.attachments.push(attachment.clone())
                }
                Frame::Close { .. } => resent.closed = true,
                _ => {}
            }
            encode_frame(out, &frame);
            resent.upto = Some(*seq);
        }
    }
    resent
}

/// `frame` as sent again to the target alone, if it was for it (`member`:
/// it was among the actor's connections when the frame was made).
fn to_conn(frame: Frame, target: &Target, member: bool) -> Option<Frame> {
    match frame {
        Frame::Message { conn_id, .. }
        | Frame::Close { conn_id, .. }
        | Frame::SetAttachment { conn_id, .. }
            if conn_id == target.conn =>
        {
            Some(frame)
        }
        Frame::Broadcast {
            kind, to, payload, ..
        } if names(&to, target.conn, member) => Some(Frame::Broadcast {
            actor_id: target.actor_id,
            kind,
            to: Recipients::Only(vec![target.conn]),
            payload,
        }),
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
                spans,
                actor_id: 2,
            };
            resend_to(&kept, 1, &to, &mut out);
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
        let target = |conn| Target {
            conn,
            spans: &[(0, u64::MAX)],
            actor_id: 2,
        };
        let mut out = BytesMut::new();
        let resent = resend_to(&kept, 5, &target(7), &mut out);
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
        assert_eq!(resent.attachments, [Bytes::from_static(b"a7")]);
        let mut out = BytesMut::new();
        assert_eq!(resend_to(&kept, 7, &target(8), &mut out), Resent::default());
        assert!(out.is_empty(), "its gateway saw everything");
    }
}
