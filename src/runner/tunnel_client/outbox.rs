//! What an actor sent in the batch its saved record reflects.
//!
//! A batch's records are saved before its output and acknowledgements
//! leave, together, in one tunnel message. A runner killed between the two
//! leaves a record that says those messages were handled: the gateway
//! replays them, the restored actor drops them as handled, and what they
//! made the actor send (a chat room's broadcast, say) would be lost. So the
//! record keeps that output, and a restore that shows the batch never
//! arrived (the gateway's last acknowledged index below the saved one)
//! sends it again, once, before anything the restored actor sends.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::kept::Resent;
use crate::tunnel::{decode_frames, encode_frame, Frame, Recipients};

/// The bytes of `out` that `actor_id` produced (`touched`: who produced
/// which range of the batch's output).
pub(super) fn of_actor(out: &[u8], touched: &[(u64, Range<usize>)], actor_id: u64) -> Bytes {
    let mut kept = BytesMut::new();
    for (_, range) in touched.iter().filter(|(id, _)| *id == actor_id) {
        kept.extend_from_slice(&out[range.clone()]);
    }
    kept.freeze()
}

/// Appends `outbox` to `out` as sent by the actor's new instance
/// `actor_id`: frames naming the actor are renamed, and acknowledgements
/// are left out (the replays they answered are acknowledged again), and so
/// is what was for the connections `except` (sent their own share by
/// their gateways' marks). Returns the attachments it sets again (which
/// the gateway will hold instead of those its restores carry) and the
/// connections it closes.
pub(super) fn resend(outbox: Bytes, actor_id: u64, except: &[u64], out: &mut BytesMut) -> Resent {
    let mut resent = Resent::default();
    for frame in decode_frames(outbox).map_while(Result::ok) {
        let frame = match frame {
            // Answers belong to requests, which a new instance gets anew.
            Frame::Ack { .. }
            | Frame::HttpResponse(_)
            | Frame::HttpBody { .. }
            | Frame::HttpEnd { .. }
            | Frame::HttpCancel { .. }
            | Frame::HttpCredit { .. } => continue,
            Frame::Message { conn_id, .. } | Frame::Close { conn_id, .. }
                if except.contains(&conn_id) =>
            {
                continue
            }
            Frame::Close {
                conn_id,
                code,
                reason,
            } => {
                resent.closed.push(conn_id);
                Frame::Close {
                    conn_id,
                    code,
                    reason,
                }
            }
            Frame::SetAttachment {
                conn_id,
                attachment,
            } => {
                if except.contains(&conn_id) {
                    continue;
                }
                resent.attachments.push((conn_id, attachment.clone()));
                Frame::SetAttachment {
                    conn_id,
                    attachment,
                }
            }
            Frame::Broadcast {
                kind, to, payload, ..
            } => match except_from(to, except) {
                Some(to) => Frame::Broadcast {
                    actor_id,
                    kind,
                    to,
                    payload,
                },
                None => continue,
            },
            Frame::SleepRequest { .. } => Frame::SleepRequest { actor_id },
            other => other,
        };
        encode_frame(out, &frame);
    }
    resent
}

/// `to` without the connections `except`; None if no one is left.
fn except_from(to: Recipients, except: &[u64]) -> Option<Recipients> {
    if except.is_empty() {
        return Some(to);
    }
    Some(match to {
        Recipients::All => Recipients::AllBut(except.to_vec()),
        Recipients::AllBut(mut but) => {
            but.extend_from_slice(except);
            Recipients::AllBut(but)
        }
        Recipients::Only(only) => {
            let only: Vec<u64> = only.into_iter().filter(|c| !except.contains(c)).collect();
            if only.is_empty() {
                return None;
            }
            Recipients::Only(only)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::MessageKind;

    #[test]
    fn a_resent_outbox_names_the_new_instance_and_drops_acknowledgements() {
        let mut out = BytesMut::new();
        let broadcast = |actor_id| Frame::Broadcast {
            actor_id,
            kind: MessageKind::Text,
            to: Recipients::AllBut(vec![7]),
            payload: Bytes::from_static(b"hi"),
        };
        encode_frame(
            &mut out,
            &Frame::Ack {
                conn_id: 1,
                index: 1,
            },
        );
        let mine = out.len();
        encode_frame(&mut out, &broadcast(5));
        encode_frame(
            &mut out,
            &Frame::Ack {
                conn_id: 2,
                index: 9,
            },
        );
        let touched = [(4, 0..mine), (5, mine..out.len())];
        let outbox = of_actor(&out, &touched, 5);
        let mut resent = BytesMut::new();
        resend(outbox, 6, &[], &mut resent);
        let frames: Vec<Frame> = decode_frames(resent.freeze()).map(Result::unwrap).collect();
        assert_eq!(frames, vec![broadcast(6)]);
    }
}
