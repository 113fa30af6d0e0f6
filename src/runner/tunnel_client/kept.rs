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
//! something, at most [`KEEP_OUTPUT_BYTES`] (the newest always).

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::runner::actor::ConnId;
use crate::tunnel::{decode_frames, encode_frame, Frame, Recipients};

/// Saved batches whose output is kept, at most.
pub(super) const KEEP_OUTPUTS: usize = 64;
/// Bytes of kept output, at most (past the newest batch's own).
pub(super) const KEEP_OUTPUT_BYTES: usize = 64 * 1024;

/// An actor's kept outputs, oldest first, each with its record's number.
pub(super) type Kept = VecDeque<(u64, Bytes)>;

/// `kept` with the output of record `seq` added, and the oldest dropped
/// past the bounds. A batch that sent nothing adds nothing.
pub(super) fn keep(mut kept: Kept, seq: u64, output: Bytes) -> Kept {
    if !output.is_empty() {
        kept.push_back((seq, output));
    }
    let mut bytes: usize = kept.iter().map(|(_, o)| o.len()).sum();
    while kept.len() > KEEP_OUTPUTS || (kept.len() > 1 && bytes > KEEP_OUTPUT_BYTES) {
        if let Some((_, dropped)) = kept.pop_front() {
            bytes -= dropped.len();
        }
    }
    kept
}

/// A batch's output with every broadcast naming its recipients: the
/// connections the actor had when it was saved. Sent again later, it must
/// reach those, not connections that joined since.
pub(super) fn pin_recipients(output: Bytes, conns: impl Fn() -> Vec<ConnId>) -> Bytes {
    let frames: Vec<Frame> = decode_frames(output.clone())
        .map_while(Result::ok)
        .collect();
    if !frames.iter().any(is_open_broadcast) {
        return output;
    }
    let members = conns();
    let mut pinned = BytesMut::with_capacity(output.len() + 8 * members.len());
    for frame in frames {
        let frame = match frame {
            Frame::Broadcast {
                actor_id,
                kind,
                to: Recipients::All,
                payload,
            } => Frame::Broadcast {
                actor_id,
                kind,
                to: Recipients::Only(members.clone()),
                payload,
            },
            Frame::Broadcast {
                actor_id,
                kind,
                to: Recipients::AllBut(but),
                payload,
            } => Frame::Broadcast {
                actor_id,
                kind,
                to: Recipients::Only(
                    members
                        .iter()
                        .filter(|c| !but.contains(c))
                        .copied()
                        .collect(),
                ),
                payload,
            },
            other => other,
        };
        encode_frame(&mut pinned, &frame);
    }
    pinned.freeze()
}

fn is_open_broadcast(frame: &Frame) -> bool {
    matches!(
        frame,
        Frame::Broadcast {
            to: Recipients::All | Recipients::AllBut(_),
            ..
        }
    )
}

/// What was sent again to one connection.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Resent {
    /// The highest record number whose output went again, if any did.
    pub upto: Option<u64>,
    /// Attachments it set again.
    pub attachments: Vec<Bytes>,
}

/// Appends to `out` what the kept outputs numbered `seen` and above sent
/// to `conn`, as the actor's new instance `actor_id` says it: its messages,
/// its attachments, its close, and the broadcasts it was among (to it
/// alone). Acknowledgements and answers to requests are not sent again.
pub(super) fn resend_to(
    kept: &Kept,
    seen: u64,
    conn: ConnId,
    actor_id: u64,
    out: &mut BytesMut,
) -> Resent {
    let mut resent = Resent::default();
    for (seq, output) in kept.iter().filter(|(seq, _)| *seq >= seen) {
        for frame in decode_frames(output.clone()).map_while(Result::ok) {
            let Some(frame) = to_conn(frame, conn, actor_id) else {
                continue;
            };
            if let Frame::SetAttachment { attachment, .. } = &frame {
                resent.attachments.push(attachment.clone());
            }
            encode_frame(out, &frame);
            resent.upto = Some(*seq);
        }
    }
    resent
}

/// `frame` as sent again to `conn` alone, if it was for `conn`.
fn to_conn(frame: Frame, conn: ConnId, actor_id: u64) -> Option<Frame> {
    match frame {
        Frame::Message { conn_id, .. }
        | Frame::Close { conn_id, .. }
        | Frame::SetAttachment { conn_id, .. }
            if conn_id == conn =>
        {
            Some(frame)
        }
        Frame::Broadcast {
            kind, to, payload, ..
        } if names(&to, conn) => Some(Frame::Broadcast {
            actor_id,
            kind,
            to: Recipients::Only(vec![conn]),
            payload,
        }),
        _ => None,
    }
}

fn names(to: &Recipients, conn: ConnId) -> bool {
    match to {
        Recipients::All => true,
        Recipients::AllBut(but) => !but.contains(&conn),
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
    fn broadcasts_are_pinned_to_the_members_of_their_batch() {
        let output = encoded(&[
            broadcast(1, Recipients::All, "all"),
            broadcast(1, Recipients::AllBut(vec![2]), "not 2"),
            broadcast(1, Recipients::Only(vec![9]), "to 9"),
        ]);
        let pinned = pin_recipients(output, || vec![1, 2, 3]);
        let frames: Vec<Frame> = decode_frames(pinned).map(Result::unwrap).collect();
        assert_eq!(
            frames,
            [
                broadcast(1, Recipients::Only(vec![1, 2, 3]), "all"),
                broadcast(1, Recipients::Only(vec![1, 3]), "not 2"),
                broadcast(1, Recipients::Only(vec![9]), "to 9"),
            ]
        );
        let plain = encoded(&[broadcast(1, Recipients::Only(vec![9]), "to 9")]);
        let asked = std::cell::Cell::new(false);
        let same = pin_recipients(plain.clone(), || {
            asked.set(true);
            vec![]
        });
        assert_eq!((same, asked.get()), (plain, false), "nothing to pin");
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
        let mut out = BytesMut::new();
        let resent = resend_to(&kept, 5, 7, 2, &mut out);
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
        assert_eq!(resend_to(&kept, 7, 8, 2, &mut out), Resent::default());
        assert!(out.is_empty(), "its gateway saw everything");
    }
}
